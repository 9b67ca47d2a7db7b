"""The systems ``make bench`` times, each text in -> probabilities out, and the timing loop.

Each system runs in its own fresh process (``sd bench`` spawns one per system), so its RSS is
its own, its thread pools meet no other library's, and a crash loses one system's rows only. Heavy
libraries (torch, transformers, fasttext) are imported inside the functions that need them: the
student and ONNX children never load torch.

The systems themselves, and how each is loaded, are in ``loadtest/bench_loaders.py``.

At batch 1 every call is timed on its own as well: the in-process latency per call, p50 and p99.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from loadtest.bench_core import percentile, plan_cell, samples_per_second, spread
from loadtest.bench_loaders import StudentProbe, SystemSpec, load_system
from loadtest.bench_memory import copy_bandwidth, mapped_rss, page_cache_resident, touched_pages
from sdcore.machine import loadavg, shown_path
from sdcore.process_memory import peak_rss_bytes, rss_bytes

Predict = Callable[[Sequence[str]], npt.NDArray[np.float32]]


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
        "table_shape": [runtime.manifest.table_rows, runtime.manifest.embedding_dim],
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
                if probe.gathered.size != loaded.runtime.manifest.table_rows:
                    probe.gathered = np.zeros(loaded.runtime.manifest.table_rows, dtype=bool)
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
    facts: dict[str, Any] = {"spec": asdict(spec) | {"path": shown_path(spec.path)}, "loadavg_start": loadavg()}
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
