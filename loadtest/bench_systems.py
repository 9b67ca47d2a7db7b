"""The systems ``make bench`` times, each text in -> probabilities out, and the timing loop.

Each system runs in its own fresh process (``sd bench`` spawns one per system), so its RSS is
its own, its thread pools meet no other library's, and a crash loses one system's rows only. Heavy
libraries (torch, transformers, fasttext) are imported inside the functions that need them: the
student and ONNX children never load torch.

Kinds of system:
- ``student`` with ``backend = "kernel"`` (what the service runs): ``StudentRuntime`` with the compiled
  kernel (sdcore.kernel: featurize + pool in one loop, GIL released) and the ONNX head. After each cell the
  same texts' rows are found first and their pooling alone is timed (``kernel.pool_rows``): the
  pooling-only rate, against which the whole text -> probabilities time is judged;
- ``student`` with ``backend = "numpy"`` (the reference path: shared featurizer in numpy, memory-mapped
  float16 shards gathered by onnxruntime, ONNX head), instrumented to time its featurizer and its gather
  and to record which rows it gathered;
- ``teacher-onnx``: ``TeacherRuntime`` (``tokenizers`` + onnxruntime), batches sorted by length;
- ``hf-pytorch``: a Hugging Face checkpoint in PyTorch eager mode (``training.teacher.predict_logits``:
  the fast tokenizer, length-sorted batches padded to their longest text), then a softmax;
- ``fasttext``: a fastText supervised model; texts are lowercased and split with the student's token
  pattern first (included in the timing). fastText 0.9.3's list ``predict`` (C++ ``multilinePredict``)
  is used for every batch size, since its single-text form breaks under numpy 2 (DESIGN.md section 5).

At batch 1 every call is timed on its own as well: the in-process latency per call, p50 and p99.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from loadtest.bench_core import percentile, plan_cell, samples_per_second, spread
from loadtest.bench_memory import (
    copy_bandwidth,
    mapped_rss,
    page_cache_resident,
    peak_rss_bytes,
    rss_bytes,
    touched_pages,
)
from loadtest.machine import loadavg

Kind = Literal["student", "teacher-onnx", "hf-pytorch", "fasttext"]
Predict = Callable[[Sequence[str]], npt.NDArray[np.float32]]


@dataclass(frozen=True)
class SystemSpec:
    key: str  # the name in the report, e.g. "student-demo"
    kind: Kind
    path: str  # model folder, checkpoint folder, or fastText .bin
    description: str
    max_length: int = 512  # transformers: truncation in tokens (special tokens included)
    backend: str = "kernel"  # students: "kernel" (compiled, what the service runs) or "numpy" (reference)


@dataclass(frozen=True)
class TimingSettings:
    batch_sizes: tuple[int, ...] = (1, 32)
    threads: tuple[int, ...] = (1, 2)
    # Teachers are also timed at these batch sizes, so each is judged at its best (issue 11).
    teacher_batch_sizes: tuple[int, ...] = (1, 8, 32)
    repeat_s: float = 2.0  # aim of one timed pass
    cell_s: float = 6.0  # aim of all passes of a cell
    max_repeats: int = 5
    warmup_s: float = 0.5  # warm-up with full batches for about this long (at least one batch) ...
    max_warmup_batch_s: float = 20.0  # ... unless one batch would take longer than this


@dataclass
class StudentProbe:
    """Counters the instrumented student fills while it runs."""

    featurize_s: float = 0.0
    gather_s: float = 0.0
    gather_bytes: int = 0
    gathered: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # The row chunks of the timed passes (up to MAX_RECORDED_ROWS), and a function that reads the same
    # chunks again with numpy's take on one thread and returns its bytes/s: the same scattered rows in
    # the same order, read alone (float16 out, no conversion), the machine's rate for those reads.
    recorded: list[npt.NDArray[np.int64]] = field(default_factory=list)
    recorded_rows: int = 0
    replay: Callable[[list[npt.NDArray[np.int64]]], float] | None = None

    def reset(self) -> None:
        self.featurize_s = self.gather_s = 0.0
        self.gather_bytes = 0
        self.recorded = []
        self.recorded_rows = 0

    def record(self, rows: npt.NDArray[np.int64]) -> None:
        if self.recorded_rows < MAX_RECORDED_ROWS:
            self.recorded.append(rows.copy())
            self.recorded_rows += int(rows.size)


MAX_RECORDED_ROWS = 2_000_000  # 16 MB of row ids: several passes of 32 reviews at paper scale


# --- the timing loop ----------------------------------------------------------------------------


def run_batches(predict: Predict, texts: Sequence[str], batch_size: int,
                latencies: list[float] | None = None) -> float:
    """Seconds for all batches; with ``latencies``, each call's own seconds are appended to it too."""
    started = time.perf_counter()
    if latencies is None:
        for start in range(0, len(texts), batch_size):
            predict(texts[start : start + batch_size])
        return time.perf_counter() - started
    for start in range(0, len(texts), batch_size):
        t0 = time.perf_counter()
        predict(texts[start : start + batch_size])
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - started


def time_cell(predict: Predict, texts: Sequence[str], batch_size: int, settings: TimingSettings,
              probe: StudentProbe | None = None) -> dict[str, Any]:
    """Warm up, plan, then time ``repeats`` passes over the same prefix of ``texts``."""
    small = list(texts[: min(batch_size, 2)])
    started = time.perf_counter()
    predict(small)  # first call: lazy initialisation, allocations
    per_sample = (time.perf_counter() - started) / len(small)
    if per_sample * batch_size <= settings.max_warmup_batch_s:
        # Full batches, so the timed passes meet no first-time cost of this batch shape (onnxruntime
        # grows its arena, torch its caches); a batch too slow for that (RoBERTa-Large, 32 reviews)
        # is timed once after the small call, where such costs are a small part of a long pass.
        warm_until = time.perf_counter() + settings.warmup_s
        calls = 0
        while calls < 1 or (calls < 20 and time.perf_counter() < warm_until):
            batch = list(texts[calls * batch_size % len(texts) :][:batch_size]) or small
            t0 = time.perf_counter()
            predict(batch)
            per_sample = (time.perf_counter() - t0) / len(batch)
            calls += 1
    plan = plan_cell(per_sample, batch_size, len(texts), settings.repeat_s, settings.cell_s, settings.max_repeats)
    chosen = list(texts[: plan.samples])
    if probe is not None:
        probe.reset()
    latencies: list[float] | None = [] if batch_size == 1 else None
    passes = [run_batches(predict, chosen, batch_size, latencies) for _ in range(plan.repeats)]
    row: dict[str, Any] = {
        "batch_size": batch_size,
        "samples_per_s": samples_per_second(plan.samples, passes),
        "samples": plan.samples,
        "repeats": plan.repeats,
        "pass_s": [round(p, 4) for p in passes],
        "spread": round(spread(passes), 3),
        "mean_words": round(float(np.mean([len(t.split()) for t in chosen])), 1),
        "loadavg_1m": loadavg()[0],
    }
    if latencies:
        row["latency_p50_us"] = round(percentile(latencies, 50) * 1e6, 2)
        row["latency_p99_us"] = round(percentile(latencies, 99) * 1e6, 2)
        row["latency_calls"] = len(latencies)
    if probe is not None:
        total = sum(passes)
        row["featurize_share"] = round(probe.featurize_s / total, 3)
        row["gather_share"] = round(probe.gather_s / total, 3)
        row["gather_bytes_per_sample"] = round(probe.gather_bytes / (plan.samples * plan.repeats))
        row["gather_gb_per_s"] = round(probe.gather_bytes / probe.gather_s / 1e9, 3) if probe.gather_s else None
        if probe.replay is not None and probe.recorded:
            row["take_gb_per_s"] = round(probe.replay(probe.recorded) / 1e9, 3)
    return row


# --- the systems ------------------------------------------------------------------------------------

BatchPredict = Callable[[Sequence[str], int], npt.NDArray[np.float32]]  # (texts, batch size) -> probs
TokenCount = Callable[[list[str]], list[int]]  # tokens per text, for the report (transformers only)


PoolOnly = Callable[[Sequence[str], int], dict[str, Any]]  # (texts, batch size) -> facts of pooling alone


@dataclass
class Loaded:
    predict: BatchPredict
    tokens: TokenCount | None = None
    runtime: Any = None  # the student runtime, for its memory facts
    pool_only: PoolOnly | None = None  # compiled students: time the pooling step alone on these texts


def _compiled_student(spec: SystemSpec, threads: int) -> Loaded:
    """The student as the service runs it: the compiled kernel, then the ONNX head."""
    from service.runtime import RuntimeOptions
    from service.student_runtime import StudentRuntime

    runtime = StudentRuntime.load(spec.path, RuntimeOptions(threads=threads, verify_checksums=False, backend="kernel"))
    kernel, table = runtime.kernel, runtime.kernel_table
    row_bytes = table.dim * table.dtype.itemsize

    def pool_only(texts: Sequence[str], batch_size: int, passes: int = 3) -> dict[str, Any]:
        """Rows found first (untimed), then ``kernel.pool_rows`` over the same batches, best of ``passes``."""
        batches = [kernel.featurize(texts[i : i + batch_size])[:2] for i in range(0, len(texts), batch_size)]
        best = float("inf")
        for _ in range(passes):
            started = time.perf_counter()
            for rows, found in batches:
                kernel.pool_rows(rows, found, table, runtime.kernel_threads)
            best = min(best, time.perf_counter() - started)
        rows_read = sum(int(rows.size) for rows, _ in batches)
        return {"pool_only_samples_per_s": len(texts) / best if best > 0 else None,
                "rows_per_sample": round(rows_read / max(len(texts), 1), 1),
                "pool_only_gb_per_s": round(rows_read * row_bytes / best / 1e9, 3) if best > 0 else None}

    return Loaded(lambda texts, _b: runtime.predict(texts).probabilities, runtime=runtime, pool_only=pool_only)


def _student(spec: SystemSpec, threads: int, probe: StudentProbe) -> Loaded:
    from service.runtime import RuntimeOptions
    from service.student_runtime import StudentRuntime

    row_bytes = 0  # set once the manifest is read; the hook runs only during predictions

    def observe(stage: str, seconds: float, rows: npt.NDArray[np.int64] | None) -> None:
        """The runtime's stage hook: featurize time, and each gathered chunk's rows and time."""
        if stage == "featurize":
            probe.featurize_s += seconds
        elif stage == "gather" and rows is not None:
            probe.gather_s += seconds
            probe.gather_bytes += int(rows.size) * row_bytes
            probe.gathered[rows] = True
            probe.record(rows)

    options = RuntimeOptions(threads=threads, verify_checksums=False, backend="numpy", observer=observe)
    runtime = StudentRuntime.load(spec.path, options)
    if probe.gathered.size != runtime.manifest.vocab_size:
        probe.gathered = np.zeros(runtime.manifest.vocab_size, dtype=bool)
    table = runtime.table
    row_bytes = table.dim * np.dtype(runtime.manifest.shard_dtype).itemsize

    def replay(chunks: list[npt.NDArray[np.int64]], passes: int = 3) -> float:
        """numpy's take of the recorded chunks, split by shard as ``gather_into`` splits them; bytes/s, best of
        ``passes``. ``mode="clip"``: with the default "raise", numpy writes through a temporary buffer
        and copies it into ``out`` (25-35% slower here); the rows are valid, so clipping changes none."""
        buffer = np.zeros((max(c.size for c in chunks), table.dim), dtype=table.shards[0].dtype)  # pages in
        best = float("inf")
        for _ in range(passes):
            started = time.perf_counter()
            for rows in chunks:
                for shard, local, part in table.shard_slices(rows):
                    np.take(shard, local, axis=0, out=buffer[part], mode="clip")
            best = min(best, time.perf_counter() - started)
        return sum(int(c.size) for c in chunks) * row_bytes / best

    probe.replay = replay
    return Loaded(lambda texts, _b: runtime.predict(texts).probabilities, runtime=runtime)


def _teacher_onnx(spec: SystemSpec, threads: int) -> Loaded:
    from service.runtime import RuntimeOptions
    from service.teacher_runtime import TeacherRuntime

    runtime = TeacherRuntime.load(spec.path, RuntimeOptions(threads=threads, verify_checksums=False))
    return Loaded(
        lambda texts, b: runtime.predict(texts, batch_size=b).probabilities,
        tokens=lambda texts: [len(e.ids) for e in runtime.encode(texts)],
    )


def _fasttext(spec: SystemSpec) -> Loaded:
    import fasttext

    from sdcore.featurizer import FeaturizerSettings, Tokenizer

    model = fasttext.load_model(spec.path)
    tokenize = Tokenizer(FeaturizerSettings())
    labels = sorted(model.get_labels())
    column = {name: i for i, name in enumerate(labels)}

    def predict(texts: Sequence[str], _batch_size: int) -> npt.NDArray[np.float32]:
        found, probs = model.predict([" ".join(tokenize(t)) for t in texts], k=-1)
        out = np.zeros((len(texts), len(labels)), dtype=np.float32)
        for i, (names, p) in enumerate(zip(found, probs, strict=True)):
            out[i, [column[n] for n in names]] = p
        return out

    return Loaded(predict)


def _hf_pytorch(spec: SystemSpec, threads: int) -> Loaded:
    import torch

    from service.onnx_session import softmax
    from training.teacher import load_classifier, max_input_tokens, predict_logits

    torch.set_num_threads(threads)
    tokenizer, model = load_classifier(Path(spec.path))
    model.eval()
    length = min(spec.max_length, max_input_tokens(model.config))

    def predict(texts: Sequence[str], batch_size: int) -> npt.NDArray[np.float32]:
        return softmax(predict_logits(model, tokenizer, texts, batch_size, length))

    def tokens(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, truncation=True, max_length=length)["input_ids"]]

    return Loaded(predict, tokens)


def load_system(spec: SystemSpec, threads: int, probe: StudentProbe) -> Loaded:
    if spec.kind == "student":
        return _student(spec, threads, probe) if spec.backend == "numpy" else _compiled_student(spec, threads)
    if spec.kind == "teacher-onnx":
        return _teacher_onnx(spec, threads)
    if spec.kind == "hf-pytorch":
        return _hf_pytorch(spec, threads)
    return _fasttext(spec)


def _student_memory(runtime: Any, probe: StudentProbe) -> dict[str, Any]:
    root = Path(runtime.root)
    paths = [root / s.path for s in runtime.manifest.shards]
    row_bytes = runtime.table.dim * np.dtype(runtime.manifest.shard_dtype).itemsize
    pages = 0
    cached: int | None = 0
    for entry, shard in zip(runtime.manifest.shards, runtime.table.shards, strict=True):
        rows = np.flatnonzero(probe.gathered[entry.row_start : entry.row_end])
        pages += touched_pages(rows, row_bytes, int(getattr(shard, "offset", 0)))
        resident = page_cache_resident(shard)
        cached = None if resident is None or cached is None else cached + resident
    return {
        "table_bytes": sum(int(s.bytes) for s in runtime.manifest.shards),
        "table_shape": [runtime.manifest.vocab_size, runtime.manifest.embedding_dim],
        "table_dtype": runtime.manifest.shard_dtype,
        "rows_gathered": int(probe.gathered.sum()),
        "touched_bytes": pages * 4096,
        "mapped_rss_bytes": mapped_rss(paths),
        "page_cache_resident_bytes": cached,
    }


def _cells(spec: SystemSpec, threads: int, workloads: dict[str, list[str]], settings: TimingSettings,
           probe: StudentProbe) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load the system with ``threads`` and time every (batch size, workload) cell; the runtime is
    dropped when this returns, so the next thread count's load does not map the table a second time."""
    rows: list[dict[str, Any]] = []
    loaded = load_system(spec, threads, probe)
    memory: dict[str, Any] = {"rss_bytes_loaded": rss_bytes()}
    is_student = spec.kind == "student"
    probed = is_student and spec.backend == "numpy"
    batch_sizes = settings.teacher_batch_sizes if spec.kind in ("teacher-onnx", "hf-pytorch") else settings.batch_sizes
    if is_student:
        # One untimed pass over every text: the table rows these workloads use are then resident and
        # mapped, as in a server that has run a while. Without it, a cell's first pass pays the page
        # faults of the 2 GB paper-scale table (one pass ran 13x slower than the others).
        for texts in workloads.values():
            run_batches(lambda batch: loaded.predict(batch, 32), texts, 32)
    for batch_size in batch_sizes:
        def call(texts: Sequence[str], b: int = batch_size) -> Any:
            return loaded.predict(texts, b)

        for workload, texts in workloads.items():
            row = time_cell(call, texts, batch_size, settings, probe if probed else None)
            row.update(workload=workload, system=spec.key, threads=threads, kind=spec.kind)
            if loaded.pool_only is not None:
                row.update(loaded.pool_only(texts[: row["samples"]], batch_size))
            if loaded.tokens is not None:
                row["mean_tokens"] = round(float(np.mean(loaded.tokens(list(texts[: row["samples"]])))), 1)
            rows.append(row)
            print(f"  {spec.key:24s} {workload:10s} b{batch_size:<3d} t{threads}: "
                  f"{row['samples_per_s']:>12,.2f} samples/s  ({row['repeats']} x {row['samples']}, "
                  f"spread {row['spread']:.2f}, load {row['loadavg_1m']})", flush=True)
    memory["rss_bytes_end"] = rss_bytes()
    if is_student and not probed:  # the rows the compiled student read: those of every workload text
        for texts in workloads.values():
            for i in range(0, len(texts), 256):
                probe_rows = loaded.runtime.kernel.featurize(texts[i : i + 256])[0]
                if probe.gathered.size != loaded.runtime.manifest.vocab_size:
                    probe.gathered = np.zeros(loaded.runtime.manifest.vocab_size, dtype=bool)
                probe.gathered[probe_rows] = True
    if is_student:
        memory.update(_student_memory(loaded.runtime, probe))
        probe.replay = None  # it holds this load's table: the next thread count's load must not see it mapped
    return rows, memory


def run_system(spec: SystemSpec, workloads: dict[str, list[str]], settings: TimingSettings) -> dict[str, Any]:
    """Every cell of one system; meant to run in a fresh process. Returns rows, memory and facts.

    Memory: RSS after loading (the largest over thread counts), and at the end of the last thread
    count's cells, with the student's table facts of that last load (touched pages: all loads).
    """
    rows: list[dict[str, Any]] = []
    facts: dict[str, Any] = {"spec": asdict(spec), "loadavg_start": loadavg()}
    probe = StudentProbe()
    memory: dict[str, Any] = {}
    rss_loaded = 0
    for threads in settings.threads:
        cells, memory = _cells(spec, threads, workloads, settings, probe)
        gc.collect()  # the runtime holds reference cycles (the probe's wrappers); free its mappings now
        rows += cells
        rss_loaded = max(rss_loaded, memory["rss_bytes_loaded"])
    memory.update(rss_bytes_loaded=rss_loaded, peak_rss_bytes=peak_rss_bytes())
    if spec.kind == "student":
        # Measured last: its two 256 MiB arrays would otherwise count in the peak RSS above.
        facts["copy_bytes_per_s_end"] = copy_bandwidth()
    facts["loadavg_end"] = loadavg()
    return {"rows": rows, "memory": memory, "facts": facts}
