"""The writer half of the model format (the reader is ``sdcore.model_format``): vocabulary files,
embedding shards, manifests, and whole student folders written atomically.

No torch here: a caller hands over the embedding table as something sliceable into numpy row ranges
and a function that writes the head's ONNX file, so a 1B-parameter table is written one shard at a
time without a second copy in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from sdcore.atomic import atomic_dir, atomic_write_bytes
from sdcore.cascade import CascadeSection
from sdcore.featurizer import FeaturizerSettings, keys_of_ngram_strings
from sdcore.model_format import (
    HEAD_FILE,
    KEYS_FILE,
    MANIFEST,
    NGRAMS_FILE,
    ROWS_FILE,
    SHARD_DIR,
    SHARD_DTYPES,
    VOCAB_DIR,
    WORDS_FILE,
    FeaturizerSpec,
    FileEntry,
    ModelFormatError,
    ShardEntry,
    StudentManifest,
    load_student_manifest,
    read_ngrams,
    sha256_of,
)
from sdcore.quantize import quantize_rows
from sdcore.router import ROUTER_FILE, CascadeRouter


class RowSource(Protocol):
    """An embedding table [rows, dim] whose row ranges can be read as numpy arrays."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def rows(self, start: int, end: int) -> np.ndarray: ...


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def file_entry(root: Path, relative: str) -> FileEntry:
    path = root / relative
    return FileEntry(path=relative, bytes=path.stat().st_size, sha256=sha256_of(path))


def write_manifest(root: Path, manifest: BaseModel) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=False)
    (root / MANIFEST).write_text(text + "\n", encoding="utf-8")


def write_vocabulary(root: Path, words: list[str], keys: npt.NDArray[np.uint64], rows: npt.NDArray[np.int64],
                     ngrams: list[str]) -> list[str]:
    """Write the four vocabulary files under ``root``; return their relative paths."""
    (root / VOCAB_DIR).mkdir(parents=True, exist_ok=True)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if sorted_keys.size > 1 and not bool(np.all(sorted_keys[1:] > sorted_keys[:-1])):
        raise ModelFormatError(root / KEYS_FILE, "two n-grams share a key (hash collision); cannot export")
    (root / WORDS_FILE).write_text("".join(w + "\n" for w in words), encoding="utf-8")
    np.save(root / KEYS_FILE, sorted_keys)
    np.save(root / ROWS_FILE, rows[order].astype(np.int64))
    (root / NGRAMS_FILE).write_text("".join(g + "\n" for g in ngrams), encoding="utf-8")
    return [WORDS_FILE, KEYS_FILE, ROWS_FILE, NGRAMS_FILE]


def write_pruned_vocabulary(vocab_dir: Path, out: Path, keep: int) -> list[str]:
    """Vocabulary files for the first ``keep`` rows of ``vocab_dir`` (its rows are frequency-ordered)."""
    ngrams = read_ngrams(vocab_dir)[:keep]
    words = sorted({w for g in ngrams for w in g.split(" ")})
    word_ids = {w: i for i, w in enumerate(words)}
    keys = keys_of_ngram_strings(ngrams, word_ids)
    return write_vocabulary(out, words, keys, np.arange(len(ngrams), dtype=np.int64), ngrams)


class KeptRows:
    """The rows an export keeps of a table: the first ``keep`` vocabulary rows, then the ``tail`` rows
    after the vocabulary's ``vocab_size`` (spec v2's subword buckets), as one contiguous RowSource."""

    def __init__(self, table: RowSource, keep: int, vocab_size: int, tail: int) -> None:
        self.table, self.keep, self.vocab_size, self.tail = table, keep, vocab_size, tail

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.keep + self.tail, *self.table.shape[1:])

    def rows(self, start: int, end: int) -> np.ndarray:
        head = self.table.rows(start, min(end, self.keep)) if start < self.keep else None
        lo, hi = max(start, self.keep) - self.keep, max(end, self.keep) - self.keep
        tail = self.table.rows(self.vocab_size + lo, self.vocab_size + hi) if hi > lo else None
        parts = [b for b in (head, tail) if b is not None]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def shard_name(index: int) -> str:
    return f"{SHARD_DIR}/shard-{index:05d}.npy"


def scale_name(index: int) -> str:
    return f"{SHARD_DIR}/scale-{index:05d}.npy"


def write_shards(root: Path, table: RowSource, keep: int, dtype: str, shard_rows: int) -> list[ShardEntry]:
    """The first ``keep`` rows of ``table`` as row-range shards of ``shard_rows`` rows, in ``dtype``
    (int8: the codes, and each row's float32 scale in ``scale-NNNNN.npy`` beside its shard)."""
    if dtype not in SHARD_DTYPES:
        raise ValueError(f"export dtype must be one of {SHARD_DTYPES}, got {dtype!r}")
    (root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
    shards: list[ShardEntry] = []
    for index, start in enumerate(range(0, keep, shard_rows)):
        end = min(start + shard_rows, keep)
        relative = shard_name(index)
        block = table.rows(start, end)
        scale = None
        if dtype == "int8":
            codes, scales = quantize_rows(block)
            np.save(root / relative, codes)
            np.save(root / scale_name(index), scales)
            scale = file_entry(root, scale_name(index))
        else:
            np.save(root / relative, block.astype(np.dtype(dtype)))
        shards.append(ShardEntry(**file_entry(root, relative).model_dump(), row_start=start, row_end=end,
                                 scale=scale))
    return shards


def write_student(
    out_dir: Path,
    *,
    name: str,
    labels: list[str],
    settings: FeaturizerSettings,
    vocab_dir: Path,
    table: RowSource,
    hidden_dim: int,
    write_head: Callable[[Path], None],
    dtype: Literal["float16", "float32", "int8"] = "float16",
    prune_top_k: int = 0,
    shard_rows: int = 262_144,
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """A whole student folder, assembled in a temporary sibling and renamed into place.

    ``prune_top_k`` > 0 keeps the K most frequent n-grams (rows are numbered by corpus frequency), as
    the paper's pruning ablation does after training; spec v2's subword rows (the table's last
    ``settings.subword_buckets``) are always kept. ``write_head(path)`` writes ``head.onnx``.
    """
    buckets, dim = settings.subword_buckets, int(table.shape[1])
    vocab_size = int(table.shape[0]) - buckets
    if vocab_size < 0:
        raise ValueError(f"a table of {table.shape[0]} rows cannot hold {buckets} subword buckets")
    keep = min(prune_top_k, vocab_size) if prune_top_k > 0 else vocab_size
    with atomic_dir(out_dir) as tmp:
        vocab_files = write_pruned_vocabulary(vocab_dir, tmp, keep)
        shards = write_shards(tmp, KeptRows(table, keep, vocab_size, buckets), keep + buckets, dtype, shard_rows)
        write_head(tmp / HEAD_FILE)
        manifest = StudentManifest(
            name=name,
            labels=labels,
            featurizer=FeaturizerSpec.of(settings),
            vocab_size=keep,
            embedding_dim=dim,
            hidden_dim=hidden_dim,
            shard_dtype=dtype,
            shards=shards,
            vocab_files=[file_entry(tmp, f) for f in vocab_files],
            head=file_entry(tmp, HEAD_FILE),
            metrics=metrics or {},
            config=config or {},
            created_at=now_iso(),
        )
        write_manifest(tmp, manifest)
    return out_dir


def store_cascade_section(student_dir: Path, cascade: CascadeSection | dict[str, Any]) -> None:
    """Write the cascade section into a student's manifest (not checksummed: it describes the other files)."""
    manifest = load_student_manifest(student_dir)
    manifest.cascade = CascadeSection.model_validate(cascade)
    atomic_write_bytes(student_dir / MANIFEST, (manifest.model_dump_json(indent=2) + "\n").encode("utf-8"))


def store_router(student_dir: Path, router: CascadeRouter) -> None:
    """Write ``router.json`` (sdcore.router) into a student folder and list it, with its checksum, in the
    manifest: the file first, so a manifest never lists a router that is not there."""
    manifest = load_student_manifest(student_dir)
    atomic_write_bytes(student_dir / ROUTER_FILE, (router.model_dump_json(indent=2) + "\n").encode("utf-8"))
    manifest.router = file_entry(student_dir, ROUTER_FILE)
    atomic_write_bytes(student_dir / MANIFEST, (manifest.model_dump_json(indent=2) + "\n").encode("utf-8"))
