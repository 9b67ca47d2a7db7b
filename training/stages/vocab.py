"""The n-gram vocabulary: the top-K 1- to 4-grams of the transfer corpus, counted in bounded memory.

How memory stays bounded on a corpus larger than RAM (an external-memory count):
1. The corpus is read in chunks of ``vocab.chunk_texts`` texts. Each chunk's n-grams become 64-bit keys
   (from 64-bit hashes of their words, so no global word table is needed), are counted within the
   chunk, and the (key, count) pairs are appended to ``vocab.partitions`` spill files on disk, chosen
   by key. Memory: one chunk.
2. Each spill file is then reduced alone (sort, sum counts per key). A file larger than
   ``vocab.memory_mb`` is first split into sub-partitions by other bits of the key, recursively, so
   no reduction ever holds more than about that budget. The running top-K (by count, ties broken by
   key) is merged after each file. Memory: the budget plus K candidates (the output itself).
3. A second streaming pass recovers the n-gram strings of the K selected keys.

Rows are then numbered by count (descending; ties by n-gram string), so pruning to the top K' rows at
export keeps the K' most frequent n-grams. Lookup keys are recomputed from word ids
(sdcore.featurizer), the form the serving featurizer uses.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sdcore.featurizer import (
    FeaturizerSettings,
    NgramFeaturizer,
    Tokenizer,
    batch_ngram_columns,
    keys_of_ngram_strings,
    mix_keys,
)
from sdcore.model_format import load_featurizer
from sdcore.model_writer import write_vocabulary
from training.progress import progress, track

PAIR = np.dtype([("key", "<u8"), ("count", "<i8")])
Keys = npt.NDArray[np.uint64]
Counts = npt.NDArray[np.int64]
ChunkSource = Callable[[], Iterable[Sequence[str]]]  # re-iterable: the corpus is read twice


def word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


@dataclass
class ChunkNgrams:
    """The n-grams of one chunk as hash keys, with where each window starts and its length."""

    keys: Keys
    starts: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    tokens: list[str]


def chunk_ngrams(texts: Sequence[str], tokenize: Tokenizer, settings: FeaturizerSettings) -> ChunkNgrams:
    token_lists = [tokenize(t) for t in texts]
    tokens = [tok for toks in token_lists for tok in toks]
    distinct = {tok: word_hash(tok) for tok in set(tokens)}
    codes = np.fromiter((distinct[t] for t in tokens), dtype=np.uint64, count=len(tokens))
    counts = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    text_index = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    valid = np.ones(len(tokens), dtype=bool)
    all_keys, all_starts, all_lengths = [], [], []
    for n in range(settings.ngram_min, settings.ngram_max + 1):
        count = len(tokens) - n + 1
        if count <= 0:
            continue
        columns, _, _ = batch_ngram_columns(codes, text_index, valid, n)
        same_text = text_index[:count] == text_index[n - 1 : n - 1 + count]
        all_keys.append(mix_keys(columns))
        all_starts.append(np.flatnonzero(same_text))
        all_lengths.append(np.full(int(same_text.sum()), n, dtype=np.int64))
    if not all_keys:
        empty = np.empty(0, dtype=np.int64)
        return ChunkNgrams(np.empty(0, dtype=np.uint64), empty, empty.copy(), tokens)
    return ChunkNgrams(np.concatenate(all_keys), np.concatenate(all_starts), np.concatenate(all_lengths), tokens)


def reduce_pairs(keys: Keys, counts: Counts) -> tuple[Keys, Counts]:
    """Sum counts per distinct key; keys come back sorted."""
    if keys.size == 0:
        return keys, counts
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    starts = np.concatenate(([0], np.flatnonzero(keys[1:] != keys[:-1]) + 1))
    return keys[starts], np.add.reduceat(counts, starts)


def top_k(keys: Keys, counts: Counts, k: int) -> tuple[Keys, Counts]:
    """The k pairs with the highest counts, ties broken by the smaller key (deterministic)."""
    order = np.lexsort((keys, -counts))[:k]
    return keys[order], counts[order]


class SpillPartitions:
    """(key, count) pairs appended to one file per partition, chosen by the key's low bits."""

    def __init__(self, folder: Path, partitions: int, shift: int = 0) -> None:
        self.folder = folder
        self.partitions = partitions
        self.shift = shift
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"part-{i:04d}.bin" for i in range(partitions)]
        for path in self.paths:
            path.write_bytes(b"")

    def add(self, keys: Keys, counts: Counts) -> None:
        part = ((keys >> np.uint64(self.shift)) % np.uint64(self.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
        pairs = np.empty(keys.size, dtype=PAIR)
        pairs["key"], pairs["count"] = keys[order], counts[order]
        for i, path in enumerate(self.paths):
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                with path.open("ab") as fh:
                    pairs[lo:hi].tofile(fh)


def reduce_spill(path: Path, budget_bytes: int, k: int, shift: int, partitions: int) -> Iterator[tuple[Keys, Counts]]:
    """Top-k candidates of one spill file, splitting it first when it exceeds the memory budget."""
    size = path.stat().st_size
    if size <= budget_bytes or shift >= 56:
        pairs = np.fromfile(path, dtype=PAIR)
        keys, counts = reduce_pairs(pairs["key"].copy(), pairs["count"].copy())
        del pairs
        yield top_k(keys, counts, k)
        return
    sub = SpillPartitions(path.parent / f"{path.stem}-split", partitions, shift + 8)
    block = max(budget_bytes // PAIR.itemsize, 1)
    with path.open("rb") as fh:
        while True:
            pairs = np.fromfile(fh, dtype=PAIR, count=block)
            if pairs.size == 0:
                break
            sub.add(pairs["key"].copy(), pairs["count"].copy())
    for sub_path in sub.paths:
        yield from reduce_spill(sub_path, budget_bytes, k, shift + 8, partitions)
    shutil.rmtree(sub.folder, ignore_errors=True)


def count_top_ngrams(
    chunks: Iterable[Sequence[str]],
    settings: FeaturizerSettings,
    k: int,
    spill_dir: Path,
    partitions: int = 16,
    memory_mb: float = 256.0,
    total_texts: int | None = None,
) -> tuple[Keys, Counts]:
    """Hash keys and counts of the k most frequent n-grams over all chunks (see module docstring)."""
    tokenize = Tokenizer(settings)
    spill = SpillPartitions(spill_dir, partitions)
    with progress(total=total_texts, desc="count n-grams", unit="text") as bar:
        for texts in chunks:
            ng = chunk_ngrams(texts, tokenize, settings)
            spill.add(*reduce_pairs(ng.keys, np.ones(ng.keys.size, dtype=np.int64)))
            bar.update(len(texts))
    best_keys, best_counts = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    budget = int(memory_mb * 2**20)
    for path in track(spill.paths, desc="reduce partitions", unit="part"):
        for keys, counts in reduce_spill(path, budget, k, shift=0, partitions=partitions):
            best_keys, best_counts = top_k(
                np.concatenate([best_keys, keys]), np.concatenate([best_counts, counts]), k
            )
        path.unlink()
    shutil.rmtree(spill_dir, ignore_errors=True)
    return best_keys, best_counts


def recover_strings(
    chunks: Iterable[Sequence[str]], settings: FeaturizerSettings, keys: Keys, total_texts: int | None = None
) -> list[str]:
    """The n-gram string of each selected hash key, by a second pass that stops once all are found."""
    tokenize = Tokenizer(settings)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    found: list[str | None] = [None] * keys.size
    resolved = np.zeros(keys.size, dtype=bool)  # by position in sorted_keys
    missing = keys.size
    with progress(total=total_texts, desc="n-gram strings", unit="text") as bar:
        for texts in chunks:
            ng = chunk_ngrams(texts, tokenize, settings)
            uniq, first = np.unique(ng.keys, return_index=True)
            pos = np.minimum(np.searchsorted(sorted_keys, uniq), max(sorted_keys.size - 1, 0))
            hit = np.flatnonzero((sorted_keys[pos] == uniq) & ~resolved[pos])
            resolved[pos[hit]] = True
            for h in hit:  # one Python step per selected n-gram, each resolved once over the whole pass
                start, n = int(ng.starts[first[h]]), int(ng.lengths[first[h]])
                found[int(order[pos[h]])] = " ".join(ng.tokens[start : start + n])
            missing -= hit.size
            bar.update(len(texts))
            if missing == 0:
                break
    if missing:
        raise RuntimeError(f"{missing} selected n-grams were not found again in the corpus (was it changed?)")
    return [s for s in found if s is not None]


@dataclass
class Vocabulary:
    words: list[str]
    ngrams: list[str]  # in row order
    counts: Counts  # in row order
    keys: Keys  # lookup keys (from word ids), in row order


def build_vocabulary(ngrams: list[str], counts: Counts) -> Vocabulary:
    """Number rows by count (desc), ties by string; build the word table and lookup keys."""
    order = sorted(range(len(ngrams)), key=lambda i: (-int(counts[i]), ngrams[i]))
    ngrams = [ngrams[i] for i in order]
    counts = counts[np.asarray(order, dtype=np.int64)] if order else counts
    words = sorted({w for g in ngrams for w in g.split(" ")})
    word_ids = {w: i for i, w in enumerate(words)}
    return Vocabulary(words, ngrams, counts, keys_of_ngram_strings(ngrams, word_ids))


def write_vocab_dir(folder: Path, vocab: Vocabulary) -> None:
    write_vocabulary(folder, vocab.words, vocab.keys, np.arange(len(vocab.ngrams), dtype=np.int64), vocab.ngrams)
    np.save(folder / "vocab" / "counts.npy", vocab.counts)


def load_vocab_featurizer(folder: Path, settings: FeaturizerSettings) -> NgramFeaturizer:
    return load_featurizer(folder, settings)


def build_vocab_from_chunks(
    chunk_factory: ChunkSource,
    settings: FeaturizerSettings,
    size: int,
    out_dir: Path,
    partitions: int,
    memory_mb: float,
    total_texts: int | None = None,
) -> Vocabulary:
    """Count, select and write a vocabulary folder atomically (``out_dir/vocab``)."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    keys, counts = count_top_ngrams(chunk_factory(), settings, size, tmp / "spill", partitions, memory_mb, total_texts)
    strings = recover_strings(chunk_factory(), settings, keys, total_texts)
    vocab = build_vocabulary(strings, counts)
    write_vocab_dir(tmp, vocab)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return vocab
