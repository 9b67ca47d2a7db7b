"""The exported student with no torch: shared featurizer + memory-mapped shards + ONNX head.

Mean pooling with multiplicity (DESIGN.md section 2) is an embedding bag: each text's vector is the
sum of its in-vocabulary n-gram rows, repeats counted, over the number of n-grams found. Here:

1. The batch's occurrences are sorted by table row, so each distinct row is read once and the weights
   form a sparse [texts x distinct rows] matrix in CSC layout (one column per distinct row, in order).
2. Distinct rows are gathered in chunks of ``POOL_CHUNK_ROWS`` into a small float32 block (converted
   from float16 on the way), and each chunk's columns multiply that block into the output. The block
   stays in the CPU cache, so the table's rows cross the memory bus once, as float16; gathering the
   whole batch first (36k rows, 144 MB of float32 for 32 reviews at paper scale) and then multiplying
   was 1.8x slower (``scripts/bench_pool.py``; reports/bench-notes.md).

A text with no n-gram in the vocabulary pools to the zero vector, as torch's EmbeddingBag does.

The service runs the compiled kernel (``backend="kernel"``, the default): sdcore/kernel.py featurizes and
pools a whole batch in one loop with the GIL released, and only the head runs here. The numpy path
below (``backend="numpy"``: the shared featurizer, then ``mean_pool``) is the reference it is tested
against (tests/unit/test_kernel_parity.py).

On the numpy path, a float16 table is gathered by onnxruntime (a two-node Gather + Cast graph fed the
memory-mapped shard, which it reads in place, on the runtime's threads): numpy converts float16 to float32 at about
1.2 GB/s here, where onnxruntime's gather with its vectorised cast reads 4.3 GB/s of scattered
1,000-d rows on 1 thread and 5.3 on 2 (reports/bench-notes.md). The graph is written as protobuf bytes
below, since the serving side has onnxruntime but not the onnx package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from scipy import sparse

from service.featurizer import NgramFeaturizer, NgramOccurrences
from service.model_format import (
    HEAD_FILE,
    StudentManifest,
    load_featurizer,
    load_student_manifest,
    open_scales,
    open_shards,
    verify_student,
)

FloatArray = npt.NDArray[np.float32]
Backend = Literal["kernel", "numpy"]


class PoolCounts(Protocol):
    """What pooling reports per text besides the vectors (``NgramOccurrences`` or the kernel's ``Pooled``)."""

    @property
    def found(self) -> npt.NDArray[np.int64]: ...

    @property
    def coverage(self) -> npt.NDArray[np.float64]: ...


@dataclass
class StudentOutput:
    probabilities: FloatArray  # [texts, labels]
    coverage: npt.NDArray[np.float64]  # [texts]
    ngrams_found: npt.NDArray[np.int64]  # [texts]


def softmax(logits: np.ndarray) -> FloatArray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def session_options(threads: int | None, allow_spinning: bool = True) -> ort.SessionOptions:
    """``threads`` intra-op threads (None: onnxruntime's default, one per core).

    ``allow_spinning=False`` makes idle pool threads sleep instead of busy-waiting after each run. The
    student's ONNX calls (gather, head) are short and separated by numpy work on the calling thread,
    which the spinning threads starve: with 2 threads on 2 busy cores the student ran 3x slower with
    spinning (462 vs 1,325 reviews/s, batch 32; reports/bench.md).
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def onnx_session(
    path: Path, threads: int | None, providers: Sequence[str], allow_spinning: bool = True
) -> ort.InferenceSession:
    options = session_options(threads, allow_spinning)
    return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))


def _pb_field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: a varint for an int, length-delimited bytes for a str or bytes."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def gather_cast_model(elem_type: int = 10) -> bytes:
    """ONNX model bytes: ``out = Cast(Gather(table, rows, axis=0), to=float32)``.

    ``table`` [rows, dim] of ONNX type ``elem_type`` (10 = float16), ``rows`` [n] int64, ``out`` [n, dim]
    float32; opset 18, IR version 8. Field numbers are those of onnx.proto (ModelProto, GraphProto,
    NodeProto, AttributeProto, ValueInfoProto, TypeProto); tests/unit/test_bench_gather.py checks the
    bytes against the onnx package's own serialisation.
    """
    f = _pb_field

    def value_info(name: str, elem: int, dims: list[str]) -> bytes:
        shape = b"".join(f(1, f(2, d)) for d in dims)  # TensorShapeProto.dim[].dim_param
        return f(1, name) + f(2, f(1, f(1, elem) + f(2, shape)))  # name, type.tensor_type{elem_type, shape}

    def node(inputs: list[str], output: str, op: str, attribute: str, value: int) -> bytes:
        attr = f(1, attribute) + f(3, value) + f(20, 2)  # AttributeProto name, i, type = INT
        return b"".join(f(1, i) for i in inputs) + f(2, output) + f(4, op) + f(5, attr)

    graph = (
        f(1, node(["table", "rows"], "gathered", "Gather", "axis", 0))
        + f(1, node(["gathered"], "out", "Cast", "to", 1))
        + f(2, "gather_rows")
        + f(11, value_info("table", elem_type, ["vocab", "dim"]))
        + f(11, value_info("rows", 7, ["n"]))
        + f(12, value_info("out", 1, ["n", "dim"]))
    )
    return f(1, 8) + f(7, graph) + f(8, f(1, "") + f(2, 18))


class EmbeddingTable:
    """Row-range shards seen as one table; ``gather_into`` reads rows as float32 (an int8 table's rows
    times their ``scales``)."""

    def __init__(self, shards: list[np.ndarray], starts: list[int], threads: int | None = None,
                 scales: list[np.ndarray] | None = None) -> None:
        self.shards = shards
        self.scales = scales
        if shards and shards[0].dtype == np.int8 and (scales is None or len(scales) != len(shards)):
            raise ValueError("an int8 table needs one scale array per shard")
        self._scale_of = {id(s): sc for s, sc in zip(shards, scales or [], strict=False)}
        self.starts = np.asarray(starts, dtype=np.int64)
        self.dim = int(shards[0].shape[1]) if shards else 0
        self._ort_gather: ort.InferenceSession | None = None
        if shards and all(s.dtype == np.float16 for s in shards):
            self._ort_gather = ort.InferenceSession(
                gather_cast_model(), sess_options=session_options(threads, allow_spinning=False),
                providers=["CPUExecutionProvider"],
            )

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
        for shard, local, part in self.shard_slices(rows):
            self._read(shard, local, out[part])


POOL_CHUNK_ROWS = 1024  # 4 KB float32 rows at 1,000-d: a 4 MB block, in the L3 cache (see the module docstring)


def mean_pool(occ: NgramOccurrences, table: EmbeddingTable, chunk_rows: int = POOL_CHUNK_ROWS) -> FloatArray:
    """Mean of each text's in-vocabulary n-gram embeddings, counting repeats."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    out = np.zeros((occ.num_texts, table.dim), dtype=np.float32)
    if occ.rows.size == 0:
        return out
    # Occurrences sorted by row. The sort need not be stable: entries of one row that share a text add
    # the same value to that text, so their order cannot change a bit of the sums.
    order = np.argsort(occ.rows)
    sorted_rows = occ.rows[order]
    firsts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    distinct = sorted_rows[firsts]
    column_starts = np.append(firsts, sorted_rows.size)  # CSC indptr: column j = distinct row j
    texts = occ.text_index[order].astype(np.int32)
    weights = (1.0 / np.maximum(occ.found, 1).astype(np.float32))[texts]
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
    """Loads a student folder and turns texts into label probabilities."""

    def __init__(
        self,
        root: Path,
        manifest: StudentManifest,
        featurizer: NgramFeaturizer,
        table: EmbeddingTable,
        head: ort.InferenceSession,
        backend: Backend = "kernel",
        threads: int | None = None,
    ) -> None:
        if backend not in ("kernel", "numpy"):
            raise ValueError(f"backend must be 'kernel' or 'numpy', got {backend!r}")
        self.root = root
        self.manifest = manifest
        self.featurizer = featurizer
        self.table = table
        self.head = head
        self.backend = backend
        self._head_input = head.get_inputs()[0].name
        # Threads over the texts of a batch (the kernel splits only batches long enough to gain from it).
        self.kernel_threads = threads or os.cpu_count() or 1
        if backend == "kernel":
            from sdcore.kernel import KernelTable

            self.kernel = featurizer.kernel()
            self.kernel_table = KernelTable(table.shards, [int(s) for s in table.starts], table.scales)

    @classmethod
    def load(
        cls,
        root: Path | str,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        verify_checksums: bool = True,
        backend: Backend = "kernel",
    ) -> StudentRuntime:
        root = Path(root)
        manifest = load_student_manifest(root)
        verify_student(root, manifest, checksum=verify_checksums)
        featurizer = load_featurizer(root, manifest.featurizer.settings())
        shards = open_shards(root, manifest)
        table = EmbeddingTable(shards, [s.row_start for s in manifest.shards], threads,
                               scales=open_scales(root, manifest))
        head = onnx_session(root / HEAD_FILE, threads, providers, allow_spinning=False)
        return cls(root, manifest, featurizer, table, head, backend, threads)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def pool(self, texts: Sequence[str]) -> tuple[FloatArray, PoolCounts]:
        if self.backend == "kernel":
            pooled = self.kernel.pool(texts, self.kernel_table, self.kernel_threads)
            return pooled.vectors, pooled
        occ = self.featurizer.occurrences(texts)
        return mean_pool(occ, self.table), occ

    def logits(self, pooled: FloatArray) -> FloatArray:
        (out,) = self.head.run(None, {self._head_input: pooled})
        return np.asarray(out, dtype=np.float32)

    def predict(self, texts: Sequence[str]) -> StudentOutput:
        if not texts:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            return StudentOutput(empty, np.zeros(0), np.zeros(0, dtype=np.int64))
        pooled, occ = self.pool(texts)
        return StudentOutput(softmax(self.logits(pooled)), occ.coverage, occ.found)
