"""The exported student with no torch: shared featurizer + memory-mapped shards + ONNX head.

Mean pooling with multiplicity (DESIGN.md section 2) is an embedding bag: each text's vector is the
sum of its in-vocabulary n-gram rows, repeats counted, over the number of n-grams found. Here:

1. The batch's occurrences are sorted by table row, so each distinct row is read once and the weights
   form a sparse [texts x distinct rows] matrix in CSC layout (one column per distinct row, in order).
2. Distinct rows are gathered in chunks of ``POOL_CHUNK_ROWS`` into a small float32 block (converted
   from float16 on the way), and each chunk's columns multiply that block into the output. The block
   stays in the CPU cache, so the table's rows cross the memory bus once, as float16; gathering the
   whole batch first (36k rows, 144 MB of float32 for 32 reviews at paper scale) and then multiplying
   was 1.8x slower (``sd bench-pool``; reports/bench-notes.md).

A text with no n-gram in the vocabulary pools to the zero vector, as torch's EmbeddingBag does.

The service runs the compiled kernel (``backend="kernel"``, the default): sdcore/kernel.py featurizes and
pools a whole batch in one loop with the GIL released, and only the head runs here. The numpy path
below (``backend="numpy"``: the shared featurizer, then ``mean_pool``) is the reference it is tested
against (tests/unit/test_kernel_parity.py).

On the numpy path, a float16 table is gathered by onnxruntime (a two-node Gather + Cast graph fed the
memory-mapped shard, which it reads in place, on the runtime's threads): numpy converts float16 to float32 at about
1.2 GB/s here, where onnxruntime's gather with its vectorised cast reads 4.3 GB/s of scattered
1,000-d rows on 1 thread and 5.3 on 2 (reports/bench-notes.md). The graph is ``service.runtimes.gather_graph``.

Either path reports its stages to ``RuntimeOptions.observer`` when one is given: "featurize" and
"gather" (per chunk of rows) on the numpy path, "kernel" (featurize and pool together) on the kernel's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from sdcore.featurizer import NgramFeaturizer, NgramOccurrences
from sdcore.model_format import (
    HEAD_FILE,
    StudentManifest,
    load_featurizer,
    load_student_manifest,
    open_scales,
    open_shards,
    verify_student,
)
from sdcore.router import load_router
from service.runtimes.contract import Kind, ModelFacts, Predictions, RuntimeOptions, StageObserver, as_texts
from service.runtimes.gather_graph import gather_cast_model
from service.runtimes.onnx_session import onnx_session, softmax

FloatArray = npt.NDArray[np.float32]
Backend = Literal["kernel", "numpy"]


class PoolCounts(Protocol):
    """What pooling reports per text besides the vectors (``NgramOccurrences`` or the kernel's ``Pooled``)."""

    @property
    def found(self) -> npt.NDArray[np.int64]: ...  # rows pooled, subword rows included

    @property
    def words_found(self) -> npt.NDArray[np.int64]: ...  # word n-grams found


    @property
    def total(self) -> npt.NDArray[np.int64]: ...

    @property
    def coverage(self) -> npt.NDArray[np.float64]: ...


class EmbeddingTable:
    """Row-range shards seen as one table; ``gather_into`` reads rows as float32 (an int8 table's rows
    times their ``scales``)."""

    def __init__(self, shards: list[np.ndarray], starts: list[int], threads: int | None = None,
                 scales: list[np.ndarray] | None = None, observer: StageObserver | None = None) -> None:
        self.shards = shards
        self.observer = observer  # sees each gathered chunk ("gather", seconds, rows)
        self.scales = scales
        if shards and shards[0].dtype == np.int8 and (scales is None or len(scales) != len(shards)):
            raise ValueError("an int8 table needs one scale array per shard")
        self._scale_of = {id(s): sc for s, sc in zip(shards, scales or [], strict=False)}
        self.starts = np.asarray(starts, dtype=np.int64)
        self.dim = int(shards[0].shape[1]) if shards else 0
        self._ort_gather: ort.InferenceSession | None = None
        if shards and all(s.dtype == np.float16 for s in shards):
            self._ort_gather = onnx_session(gather_cast_model(), threads, ["CPUExecutionProvider"],
                                            allow_spinning=False)

    def _read(self, shard: np.ndarray, rows: npt.NDArray[np.int64], out: FloatArray) -> None:
        """``out[:] = shard[rows]`` as float32 (onnxruntime writes straight into ``out`` for float16)."""
        if shard.dtype == np.int8:
            np.multiply(shard[rows], self._scale_of[id(shard)][rows][:, None], out=out)
            return
        if self._ort_gather is None:
            out[...] = shard[rows]
            return
        binding = self._ort_gather.io_binding()
        binding.bind_cpu_input("table", shard)
        binding.bind_cpu_input("rows", np.ascontiguousarray(rows, dtype=np.int64))
        binding.bind_output("out", "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
        self._ort_gather.run_with_iobinding(binding)

    def shard_slices(self, rows: npt.NDArray[np.int64]) -> Iterator[tuple[np.ndarray, npt.NDArray[np.int64], slice]]:
        """For sorted ``rows``: (shard, rows within it, the slice of ``rows`` they are), per shard hit."""
        if len(self.shards) == 1:
            yield self.shards[0], rows, slice(0, rows.size)
            return
        which = np.searchsorted(self.starts, rows, side="right") - 1
        bounds = np.searchsorted(which, np.arange(len(self.shards) + 1))
        for s, shard in enumerate(self.shards):
            lo, hi = int(bounds[s]), int(bounds[s + 1])
            if hi > lo:
                yield shard, rows[lo:hi] - self.starts[s], slice(lo, hi)

    def gather_into(self, rows: npt.NDArray[np.int64], out: FloatArray) -> None:
        """``out[:] = table[rows]`` as float32; ``rows`` sorted ascending, so each shard is read in order.

        ``out`` must be a C-contiguous float32 [rows, dim] array: onnxruntime writes to its address."""
        if out.dtype != np.float32 or out.shape != (rows.size, self.dim) or not out.flags.c_contiguous:
            raise ValueError(f"gather_into needs a C-contiguous float32 {(rows.size, self.dim)} array, "
                             f"got {out.dtype} {out.shape}")
        if rows.size == 0:
            return
        started = time.perf_counter()
        for shard, local, part in self.shard_slices(rows):
            self._read(shard, local, out[part])
        if self.observer is not None:
            self.observer("gather", time.perf_counter() - started, rows)


# The head is one small product per batch ([texts, dim] x [dim, hidden], then the output layer): a second
# intra-op thread halved single-sentence calls of the demo student (37,940 -> 19,045 a second at batch 1)
# and gained nothing at batch 32 on the 1B student's 1000-unit head (0.64 vs 0.69 ms per 32 reviews;
# reports/bench-notes.md). The batch's threads go to the kernel, over its texts.
HEAD_THREADS = 1

POOL_CHUNK_ROWS = 1024  # 4 KB float32 rows at 1,000-d: a 4 MB block, in the L3 cache (see the module docstring)


def mean_pool(occ: NgramOccurrences, table: EmbeddingTable, chunk_rows: int = POOL_CHUNK_ROWS) -> FloatArray:
    """Mean of each text's in-vocabulary n-gram embeddings, counting repeats."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    out = np.zeros((occ.num_texts, table.dim), dtype=np.float32)
    if occ.rows.size == 0:
        return out
    # scipy is not a serving dependency: this numpy reference (tests, benchmarks) needs it, the compiled
    # kernel that serves does not, and the serving image leaves it out (143 MB).
    from scipy import sparse

    # Occurrences sorted by row. The sort need not be stable: entries of one row that share a text add
    # the same value to that text, so their order cannot change a bit of the sums.
    order = np.argsort(occ.rows)
    sorted_rows = occ.rows[order]
    firsts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    distinct = sorted_rows[firsts]
    column_starts = np.append(firsts, sorted_rows.size)  # CSC indptr: column j = distinct row j
    texts = occ.text_index[order].astype(np.int32)
    if occ.weights is None:
        weights = (1.0 / np.maximum(occ.found, 1).astype(np.float32))[texts]
    else:  # spec v2: a subword row weighs 1/m of its token's unit (sdcore/spec.py, step 13)
        units = np.maximum(occ.units, 1e-30).astype(np.float32)
        weights = occ.weights[order] / units[texts]
    # A (text, row) pair that occurs k times is k entries, which the product sums: the count weighting.
    block = np.empty((min(chunk_rows, distinct.size), table.dim), dtype=np.float32)
    for lo in range(0, distinct.size, chunk_rows):
        hi = min(lo + chunk_rows, distinct.size)
        rows = block[: hi - lo]
        table.gather_into(distinct[lo:hi], rows)
        first, last = column_starts[lo], column_starts[hi]
        columns = sparse.csc_matrix(
            (weights[first:last], texts[first:last], column_starts[lo : hi + 1] - first),
            shape=(occ.num_texts, hi - lo),
        )
        out += columns @ rows
    return out


class StudentRuntime:
    """A student folder: texts -> label probabilities and n-gram coverage (the runtime contract)."""

    kind: Kind = "student"

    def __init__(
        self,
        root: Path,
        manifest: StudentManifest,
        featurizer: NgramFeaturizer,
        table: EmbeddingTable,
        head: ort.InferenceSession,
        backend: Backend = "kernel",
        threads: int | None = None,
        observer: StageObserver | None = None,
    ) -> None:
        if backend not in ("kernel", "numpy"):
            raise ValueError(f"backend must be 'kernel' or 'numpy', got {backend!r}")
        self.root = root
        self.manifest = manifest
        self.featurizer = featurizer
        self.table = table
        self.head = head
        self.backend = backend
        self.observer = observer
        self._head_input = head.get_inputs()[0].name
        self.facts = student_facts(root, manifest)
        # Threads over the texts of a batch (the kernel splits only batches long enough to gain from it).
        self.kernel_threads = threads or os.cpu_count() or 1
        if backend == "kernel":
            from sdcore.kernel import KernelTable

            self.kernel = featurizer.kernel()
            self.kernel_table = KernelTable(table.shards, [int(s) for s in table.starts], table.scales)

    @classmethod
    def load(cls, root: Path | str, options: RuntimeOptions = RuntimeOptions()) -> StudentRuntime:
        root = Path(root)
        manifest = load_student_manifest(root)
        verify_student(root, manifest, checksum=options.verify_checksums)
        featurizer = load_featurizer(root, manifest.featurizer.settings())
        shards = open_shards(root, manifest)
        table = EmbeddingTable(shards, [s.row_start for s in manifest.shards], options.threads,
                               scales=open_scales(root, manifest), observer=options.observer)
        head = onnx_session(root / HEAD_FILE, HEAD_THREADS, options.providers, allow_spinning=False)
        return cls(root, manifest, featurizer, table, head, options.backend, options.threads, options.observer)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def providers(self) -> list[str]:
        return list(self.head.get_providers())

    def pool(self, texts: Sequence[str]) -> tuple[FloatArray, PoolCounts]:
        started = time.perf_counter()
        if self.backend == "kernel":
            pooled = self.kernel.pool(texts, self.kernel_table, self.kernel_threads)
            if self.observer is not None:
                self.observer("kernel", time.perf_counter() - started, None)
            return pooled.vectors, pooled
        occ = self.featurizer.occurrences(texts)
        if self.observer is not None:
            self.observer("featurize", time.perf_counter() - started, None)
        return mean_pool(occ, self.table), occ

    def logits(self, pooled: FloatArray) -> FloatArray:
        (out,) = self.head.run(None, {self._head_input: pooled})
        return np.asarray(out, dtype=np.float32)

    def predict(self, texts: Sequence[str] | str) -> Predictions:
        """Probabilities (and logits), coverage and n-grams found of each text; a bare str is one text."""
        texts = as_texts(texts)
        if not texts:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            return Predictions(empty, np.zeros(0), np.zeros(0, dtype=np.int64), empty, np.zeros(0, dtype=np.int64))
        pooled, occ = self.pool(texts)
        logits = self.logits(pooled)
        return Predictions(softmax(logits), occ.coverage, occ.words_found, logits, occ.total)


def student_facts(root: Path, m: StudentManifest) -> ModelFacts:
    details: dict[str, Any] = {
        "vocab_size": m.vocab_size,
        "embedding_dim": m.embedding_dim,
        "hidden_dim": m.hidden_dim,
        "dtype": m.shard_dtype,
        "shards": len(m.shards),
        "featurizer": m.featurizer.model_dump(),
    }
    facts = ModelFacts(m.name, "student", str(root), list(m.labels), dict(m.metrics), m.created_at, details)
    if m.cascade is not None:
        facts.cascade = m.cascade.policy()
        point = m.cascade.operating_point
        # the operating point's facts for /v1/models, without the curve (hundreds of points)
        details["cascade"] = {
            **facts.cascade.to_dict(), "dev_acc": point.dev_acc, "teacher_share": point.teacher_share,
            "teacher_dev_acc": m.cascade.teacher_dev_acc, "tolerance": m.cascade.tolerance,
        }
    facts.router = load_router(root, m)  # checked here: a damaged router.json stops the load, naming it
    if facts.router is not None:
        details["router"] = {"threshold": facts.router.threshold, "temperature": facts.router.temperature,
                             **{k: v for k, v in facts.router.fit.items() if not isinstance(v, dict | list)}}
    return facts
