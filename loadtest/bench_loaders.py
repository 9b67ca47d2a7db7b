"""The systems ``make bench`` times, each loaded into one batch-predict function (text in ->
probabilities out); the timing loop that runs them is ``loadtest/bench_systems.py``.

Kinds of system:
- ``student`` with ``backend = "kernel"`` (what the service runs): ``StudentRuntime`` with the compiled
  kernel (sdcore.kernel: featurize + pool in one loop, GIL released) and the ONNX head. After each cell the
  same texts' rows are found first and their pooling alone is timed (``kernel.pool_rows``): the
  pooling-only rate, against which the whole text -> probabilities time is judged;
- ``student`` with ``backend = "numpy"`` (the reference path: shared featurizer in numpy, memory-mapped
  float16 shards gathered by onnxruntime, ONNX head), instrumented to time its featurizer and its gather
  and to record which rows it gathered (``StudentProbe``);
- ``teacher-onnx``: ``TeacherRuntime`` (``tokenizers`` + onnxruntime), batches sorted by length;
- ``hf-pytorch``: a Hugging Face checkpoint in PyTorch eager mode (``training.stages.teacher.predict_logits``:
  the fast tokenizer, length-sorted batches padded to their longest text), then a softmax;
- ``fasttext``: a fastText supervised model; texts are lowercased and split with the student's token
  pattern first (included in the timing). fastText 0.9.3's list ``predict`` (C++ ``multilinePredict``)
  is used for every batch size, since its single-text form breaks under numpy 2 (DESIGN.md section 5).
  ``fasttext-kd`` is the same kind: the peers study's fastText trained on the teacher's labels;
- ``model2vec``: the peers study's Model2Vec classifier as model2vec's own numpy pipeline
  (``StaticModelPipeline``: its tokenizer, static embeddings, numpy MLP head), text in, probabilities
  out; BLAS threads capped with threadpoolctl.

Heavy libraries (torch, transformers, fasttext) are imported inside the loaders that need them: the
student and ONNX children never load torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Kind = Literal["student", "teacher-onnx", "hf-pytorch", "fasttext", "model2vec"]


@dataclass(frozen=True)
class SystemSpec:
    key: str  # the name in the report, e.g. "student-demo"
    kind: Kind
    path: str  # model folder, checkpoint folder, or fastText .bin
    description: str
    max_length: int = 512  # transformers: truncation in tokens (special tokens included)
    backend: str = "kernel"  # students: "kernel" (compiled, what the service runs) or "numpy" (reference)


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
    from service.runtimes.contract import RuntimeOptions
    from service.runtimes.student import StudentRuntime

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
    from service.runtimes.contract import RuntimeOptions
    from service.runtimes.student import StudentRuntime

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
    if probe.gathered.size != runtime.manifest.table_rows:
        probe.gathered = np.zeros(runtime.manifest.table_rows, dtype=bool)
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
    from service.runtimes.contract import RuntimeOptions
    from service.runtimes.teacher import TeacherRuntime

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


def _model2vec(spec: SystemSpec, threads: int) -> Loaded:
    from model2vec.inference import StaticModelPipeline
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)  # its head is numpy matrix products: BLAS's threads, set once for this process
    pipeline = StaticModelPipeline.from_pretrained(Path(spec.path))

    def predict(texts: Sequence[str], _batch_size: int) -> npt.NDArray[np.float32]:
        return np.asarray(pipeline.predict_proba(list(texts)), dtype=np.float32)

    return Loaded(predict)


def _hf_pytorch(spec: SystemSpec, threads: int) -> Loaded:
    import torch

    from service.runtimes.onnx_session import softmax
    from training.stages.teacher_model import load_classifier, max_input_tokens, predict_logits

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
    if spec.kind == "model2vec":
        return _model2vec(spec, threads)
    return _fasttext(spec)
