"""The compiled hot path: texts -> mean-pooled n-gram embeddings in one pass (Cython, ``_ngram_kernel``).

``sdcore.featurizer`` (numpy) is the reference implementation of the featurizer; this kernel gives the
same rows for the same texts (tests/unit/test_kernel_parity.py checks it over the MR corpus and odd
inputs) and pools them as ``service.runtimes.student.mean_pool`` does, in one compiled loop with the GIL
released for the whole batch.

It implements the featurizer spec written in ``sdcore/spec.py`` (``FEATURIZER_SPEC``).

How the kernel differs from the numpy path, and why it is exact: lowercasing stays in Python
(``str.lower`` is one C call per text and its special cases, like the final sigma, are its own), and
the kernel then reads each str's code points directly (CPython's 1, 2 or 4 byte storage) with the same
``Py_UNICODE_ISALNUM`` table ``re`` uses. A non-default token pattern is tokenized with ``re`` in Python
and only the rest (keys, lookup, pooling) runs compiled. Spec v2's subwords are hashed in the kernel from
the same code points (so v2 takes the kernel's own token patterns only, sdcore/spec.py step 14).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from sdcore.coverage import coverage_of
from sdcore.spec import COMPILED_PATTERNS, FEATURIZER_SPEC, SUBWORD_SPEC

try:
    from sdcore import _ngram_kernel as _k
except ImportError as exc:  # pragma: no cover - a checkout whose extension was never built
    raise ImportError(
        "the compiled n-gram kernel (sdcore._ngram_kernel) is not built: run `pip install -e .` or "
        "`python setup.py build_ext --inplace` in the repository"
    ) from exc

# COMPILED_PATTERNS (sdcore/spec.py): the token patterns the kernel tokenizes itself.
__all__ = ["COMPILED_PATTERNS", "FEATURIZER_SPEC", "SUBWORD_SPEC", "Featurized", "KernelTable", "NgramKernel",
           "Pooled", "select_simd", "simd"]
# Below this many code points per extra thread, one thread is faster (starting a thread costs about as
# much as featurizing and pooling a few thousand characters).
MIN_CHARS_PER_THREAD = 4096

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
_DTYPES = {np.dtype(np.float32): _k.DTYPE_FLOAT32, np.dtype(np.float16): _k.DTYPE_FLOAT16,
           np.dtype(np.int8): _k.DTYPE_INT8}


def simd() -> str:
    """The row accumulation in use: "f16c" (x86 F16C/AVX forms, chosen at run time) or "portable"."""
    return str(_k.simd())


def select_simd(portable: bool) -> None:
    """Force the portable (software float16) forms, or go back to the best the CPU has."""
    _k.select_simd(portable)


class KernelTable:
    """Row-range shards of an embedding table (float32, float16, or int8 with one scale per row)."""

    def __init__(self, shards: Sequence[np.ndarray], starts: Sequence[int],
                 scales: Sequence[np.ndarray] | None = None) -> None:
        if not shards:
            raise ValueError("an embedding table needs at least one shard")
        dtype = shards[0].dtype
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported table dtype {dtype} (float32, float16 or int8)")
        dim = int(shards[0].shape[1])
        views = []
        for i, shard in enumerate(shards):
            if shard.ndim != 2 or shard.dtype != dtype or shard.shape[1] != dim or not shard.flags.c_contiguous:
                raise ValueError(f"shard {i} must be C-contiguous {dtype} [rows, {dim}], got {shard.dtype} "
                                 f"{shard.shape}")
            views.append(shard.view(np.uint8).reshape(shard.shape[0], dim * dtype.itemsize))
        scale_views: list[np.ndarray] = []
        if dtype == np.int8:
            if scales is None or len(scales) != len(shards):
                raise ValueError("an int8 table needs one float32 scale array per shard")
            for i, (scale, shard) in enumerate(zip(scales, shards, strict=True)):
                if scale.dtype != np.float32 or scale.shape != (shard.shape[0],) or not scale.flags.c_contiguous:
                    raise ValueError(f"scales of shard {i} must be float32 [{shard.shape[0]}]")
                scale_views.append(scale)
        self.dtype = dtype
        self.dim = dim
        self._table = _k.RowTable(views, [int(s) for s in starts], _DTYPES[dtype], dim, scale_views)
        self.rows = int(self._table.rows)


class Featurized(NamedTuple):
    rows: IntArray  # every text's rows, concatenated in text order
    found: IntArray  # [texts] rows of each text (repeats counted; subword rows included)
    total: IntArray  # [texts] all word n-grams of the text
    subwords: IntArray  # [texts] how many of ``found`` are subword rows (spec v2; zeros for v1)


@dataclass(frozen=True)
class Pooled:
    vectors: FloatArray  # [texts, dim]
    found: IntArray  # [texts] rows pooled (repeats counted; subword rows included)
    total: IntArray  # [texts] all word n-grams of the text
    subwords: IntArray  # [texts] how many of ``found`` are subword rows (spec v2; zeros for v1)

    @property
    def words_found(self) -> IntArray:
        return self.found - self.subwords

    @property
    def coverage(self) -> npt.NDArray[np.float64]:
        """Word n-grams found over all word n-grams (subword rows are not n-grams of the text)."""
        return coverage_of(self.found, self.total, self.subwords)


class NgramKernel:
    """A vocabulary in the kernel's hash tables; ``pool`` turns texts into pooled vectors."""

    def __init__(self, words: Sequence[str], sorted_keys: npt.NDArray[np.uint64], key_rows: IntArray, *,
                 lowercase: bool, token_pattern: str, ngram_min: int, ngram_max: int, subword_min: int = 0,
                 subword_max: int = 0, subword_buckets: int = 0, subword_all: bool = False) -> None:
        """``subword_buckets`` > 0: spec v2 (``subword_all``: every token in scope, not only unknown ones)."""
        self.lowercase = lowercase
        self.token_pattern = token_pattern
        self.compiled_tokenizer = token_pattern in COMPILED_PATTERNS
        if subword_buckets and not self.compiled_tokenizer:
            raise ValueError(f"subwords need one of the kernel's token patterns, got {token_pattern!r}")
        self._index = _k.NgramIndex(list(words), np.ascontiguousarray(sorted_keys, dtype=np.uint64),
                                    np.ascontiguousarray(key_rows, dtype=np.int64), ngram_min, ngram_max,
                                    subword_min, subword_max, subword_buckets, subword_all)
        self._findall = None if self.compiled_tokenizer else re.compile(token_pattern).findall
        self._word_ids = None if self.compiled_tokenizer else {w: i for i, w in enumerate(words)}
        self.vocab_size = int(self._index.vocab_size)
        self.table_rows = self.vocab_size + subword_buckets

    def _lowered(self, texts: Sequence[str]) -> list[str]:
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
        return [t.lower() for t in texts] if self.lowercase else list(texts)

    def _ids(self, texts: list[str]) -> tuple[IntArray, IntArray]:
        """Word ids per text for a non-default token pattern: ``re`` tokens, dict lookups (the reference)."""
        assert self._findall is not None and self._word_ids is not None
        token_lists = [self._findall(t) for t in texts]
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        ids = np.fromiter(map(self._word_ids.get, itertools.chain.from_iterable(token_lists), itertools.repeat(-1)),
                          dtype=np.int64, count=int(offsets[-1]))
        return ids, offsets

    def _parts(self, texts: Sequence[str], threads: int) -> int:
        if threads <= 1 or len(texts) < 2:
            return 1
        return max(1, min(threads, sum(map(len, texts)) // MIN_CHARS_PER_THREAD))

    def featurize(self, texts: Sequence[str]) -> Featurized:
        """The rows of every text's in-vocabulary n-grams (then its subword rows, spec v2), concatenated in
        text order (within a text: by n, then by position, as ``NgramFeaturizer.occurrences`` orders them)."""
        lowered = self._lowered(texts)
        if self.compiled_tokenizer:
            return Featurized(*self._index.featurize(lowered))
        ids, offsets = self._ids(lowered)
        return Featurized(*self._index.featurize(None, ids, offsets))


    def tokens(self, text: str) -> list[str]:
        """The kernel's own tokens of one text (lowercased first when the settings say so), for tests."""
        lowered = self._lowered([text])[0]
        if not self.compiled_tokenizer:
            assert self._findall is not None
            return list(self._findall(lowered))
        bounds, _ids = self._index.tokens(lowered)
        return [lowered[a:b] for a, b in bounds]

    def pool(self, texts: Sequence[str], table: KernelTable, threads: int = 1) -> Pooled:
        """Mean-pooled float32 vectors of ``texts`` (GIL released; up to ``threads`` threads over texts)."""
        self._check_table(table)
        lowered = self._lowered(texts)
        parts = self._parts(lowered, threads)
        if self.compiled_tokenizer:
            out = self._index.pool(table._table, parts, lowered)
        else:
            ids, offsets = self._ids(lowered)
            out = self._index.pool(table._table, parts, None, ids, offsets)
        return Pooled(*out)

    def pool_rows(self, rows: IntArray, found: IntArray, table: KernelTable, threads: int = 1) -> FloatArray:
        """The pooling step alone, on rows already found (``featurize``'s output): what the gather and the
        mean cost without tokenizing or looking anything up. A plain mean: spec v2's weights of subword
        rows are not in ``featurize``'s output, so for v2 it times the gather, not the model's vectors."""
        offsets = np.concatenate(([0], np.cumsum(found))).astype(np.int64)
        parts = 1 if threads <= 1 else max(1, min(threads, int(rows.size) // 1024))
        vectors, _, _, _ = self._index.pool(table._table, parts, None, np.ascontiguousarray(rows, dtype=np.int64),
                                         offsets, True)
        return vectors

    def _check_table(self, table: KernelTable) -> None:
        if self._index.max_row >= table.rows:
            raise ValueError(f"the vocabulary's rows reach {self._index.max_row}, the table has {table.rows}")
