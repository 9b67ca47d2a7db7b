"""The ``vocab`` step's counting on Ray: the same top-K n-grams as ``training.stages.vocab``, exactly.

The local step (training/stages/vocab.py) counts chunk by chunk, spills (key, count) pairs to partition files,
reduces each file in bounded memory and keeps a running top-K. Here the same pieces run spread out:

1. Map tasks, one per corpus chunk of ``vocab.chunk_texts`` texts: ``chunk_ngrams`` + ``reduce_pairs``
   (the local per-chunk count), split by key into one part per reducer.
2. Reducer actors, one per node: each appends its parts to its own ``SpillPartitions`` on its node's
   disk, then reduces them with ``reduce_spill`` (which splits files above ``vocab.memory_mb``) and
   ``top_k``. Every key lands in one reducer only, so its count there is its total count.
3. The driver merges the reducers' candidates with ``top_k``: the K pairs with the highest counts,
   ties broken by the smaller key, as the local step.
4. String recovery, in parallel over the chunks in corpus order: each key gets the string of its first
   occurrence, as ``recover_strings`` gives it; then ``build_vocabulary`` and ``write_vocab_dir``.

Only the chunk's texts travel (driver -> map task) and only pairs travel on (map -> reducer); the
driver holds at most ``IN_FLIGHT_PER_CPU`` chunks per cluster CPU at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdcore.featurizer import FeaturizerSettings, Tokenizer
from training.config import RunConfig
from training.data.task_data import count_corpus, iter_corpus
from training.progress import progress
from training.scale.session import cluster_capacity, ray_session
from training.stages.vocab import (
    PAIR,
    Counts,
    Keys,
    SpillPartitions,
    Vocabulary,
    build_vocabulary,
    chunk_ngrams,
    reduce_pairs,
    reduce_spill,
    top_k,
    write_vocab_dir,
)

IN_FLIGHT_PER_CPU = 2
WAIT_SLICE_S = 1.0
REDUCER_SHIFT = 32  # reducers split keys by these high bits; their spill files by the low bits


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get`` in slices, so that Ctrl-C reaches Python (a wait without timeout blocks in C++)."""
    many = isinstance(refs, list)
    pending = refs if many else [refs]
    while True:
        _, not_ready = ray.wait(pending, num_returns=len(pending), timeout=WAIT_SLICE_S)
        if not not_ready:
            return ray.get(refs)


def _pairs(keys: Keys, counts: Counts) -> np.ndarray:
    pairs = np.empty(keys.size, dtype=PAIR)
    pairs["key"], pairs["count"] = keys, counts
    return pairs


def count_chunk(texts: Sequence[str], settings: FeaturizerSettings, reducers: int) -> Any:
    """The chunk's (key, count) pairs, one PAIR array per reducer (a Ray task with num_returns=reducers)."""
    ng = chunk_ngrams(texts, Tokenizer(settings), settings)
    keys, counts = reduce_pairs(ng.keys, np.ones(ng.keys.size, dtype=np.int64))
    owner = ((keys >> np.uint64(REDUCER_SHIFT)) % np.uint64(reducers)).astype(np.int64)
    parts = tuple(_pairs(keys[owner == r], counts[owner == r]) for r in range(reducers))
    return parts if reducers > 1 else parts[0]


class CountReducer:
    """One reducer's share of the keys, spilled to this node's disk (a Ray actor; a plain class)."""

    def __init__(self, partitions: int, memory_mb: float) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sd-count-"))
        self.spill = SpillPartitions(self.folder / "spill", partitions)
        self.partitions = partitions
        self.budget = int(memory_mb * 2**20)
        self.pairs = 0

    def add(self, pairs: np.ndarray) -> int:
        self.spill.add(pairs["key"].copy(), pairs["count"].copy())
        self.pairs += pairs.size
        return int(pairs.size)

    def top(self, k: int) -> tuple[Keys, Counts]:
        """The top-k (count desc, key asc) of this reducer's keys; as the local step's reduce phase."""
        best_keys, best_counts = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
        for path in self.spill.paths:
            for keys, counts in reduce_spill(path, self.budget, k, shift=0, partitions=self.partitions):
                merged = np.concatenate([best_keys, keys]), np.concatenate([best_counts, counts])
                best_keys, best_counts = top_k(*merged, k)
            path.unlink()
        self.close()
        return best_keys, best_counts

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def find_strings(texts: Sequence[str], settings: FeaturizerSettings, wanted: Keys) -> tuple[Keys, list[str]]:
    """The wanted keys (sorted) found in this chunk, with the string of each one's first occurrence in it
    (the occurrence ``recover_strings`` takes, since it uses ``np.unique``'s first index too)."""
    ng = chunk_ngrams(texts, Tokenizer(settings), settings)
    uniq, first = np.unique(ng.keys, return_index=True)
    if wanted.size == 0 or uniq.size == 0:
        return np.empty(0, dtype=np.uint64), []
    pos = np.minimum(np.searchsorted(wanted, uniq), wanted.size - 1)
    hit = np.flatnonzero(wanted[pos] == uniq)
    strings = []
    for h in hit:  # one Python step per wanted n-gram present in the chunk
        start, n = int(ng.starts[first[h]]), int(ng.lengths[first[h]])
        strings.append(" ".join(ng.tokens[start : start + n]))
    return uniq[hit], strings


def count_top_ngrams_ray(config: RunConfig, ray: Any, total: int) -> tuple[Keys, Counts, dict[str, Any]]:
    """Steps 1 to 3 of the module docstring: the keys and counts of the top ``vocab.size`` n-grams."""
    settings = config.vocab.featurizer_settings()
    capacity = cluster_capacity(ray)
    reducers = max(1, capacity.nodes)
    window = max(1, int(capacity.cpus) * IN_FLIGHT_PER_CPU)
    # Reducers take no CPU reservation: they mostly append to files while the map tasks run, and the
    # map tasks are done when they reduce. One per node, spread, so each uses its node's disk.
    reducer_class = ray.remote(CountReducer).options(num_cpus=0, scheduling_strategy="SPREAD", max_restarts=0)
    actors = [reducer_class.remote(config.vocab.partitions, config.vocab.memory_mb) for _ in range(reducers)]
    mapper = ray.remote(count_chunk).options(num_cpus=1, num_returns=reducers)
    in_flight: deque[tuple[int, list[Any]]] = deque()  # (texts, the reducers' add() refs) per chunk
    chunks = 0
    try:
        with progress(total=total, desc=f"count n-grams (ray, {reducers} reducers)", unit=" texts") as bar:
            for texts in iter_corpus(config.run_dir, config.vocab.chunk_texts, config.distill.corpus_texts):
                parts = mapper.remote(texts, settings, reducers)
                parts = parts if reducers > 1 else [parts]
                in_flight.append((len(texts), [a.add.remote(p) for a, p in zip(actors, parts, strict=True)]))
                chunks += 1
                while len(in_flight) >= window:
                    size, refs = in_flight.popleft()
                    _get(ray, refs)
                    bar.update(size)
            for size, refs in in_flight:
                _get(ray, refs)
                bar.update(size)
        candidates = _get(ray, [a.top.remote(config.vocab.size) for a in actors])
    finally:  # on failure too: their spill folders go first (a killed actor cannot clean up)
        ray.wait([a.close.remote() for a in actors], num_returns=len(actors), timeout=30)
        for actor in actors:
            ray.kill(actor)
    keys = np.concatenate([c[0] for c in candidates]) if candidates else np.empty(0, dtype=np.uint64)
    counts = np.concatenate([c[1] for c in candidates]) if candidates else np.empty(0, dtype=np.int64)
    best_keys, best_counts = top_k(keys, counts, config.vocab.size)
    return best_keys, best_counts, {"chunks": chunks, "reducers": reducers, "nodes": capacity.nodes,
                                    "cluster_cpus": capacity.cpus}


def recover_strings_ray(config: RunConfig, ray: Any, keys: Keys, total: int) -> list[str]:
    """Step 4: the string of each key (in the order of ``keys``), chunks read in corpus order."""
    settings = config.vocab.featurizer_settings()
    wanted = ray.put(np.sort(keys))
    finder = ray.remote(find_strings).options(num_cpus=1)
    window = max(1, int(cluster_capacity(ray).cpus) * IN_FLIGHT_PER_CPU)
    found: dict[int, str] = {}
    in_flight: deque[tuple[int, Any]] = deque()

    def take_oldest() -> None:
        size, ref = in_flight.popleft()
        chunk_keys, strings = _get(ray, ref)
        for key, string in zip(chunk_keys.tolist(), strings, strict=True):
            found.setdefault(key, string)  # the earliest chunk wins, as in the local pass
        bar.update(size)

    with progress(total=total, desc="n-gram strings (ray)", unit=" texts") as bar:
        for texts in iter_corpus(config.run_dir, config.vocab.chunk_texts, config.distill.corpus_texts):
            if len(found) == keys.size:
                break
            in_flight.append((len(texts), finder.remote(texts, settings, wanted)))
            while len(in_flight) >= window:
                take_oldest()
        while in_flight and len(found) < keys.size:
            take_oldest()
    for _, ref in in_flight:
        ray.cancel(ref)
    missing = keys.size - len(found)
    if missing:
        raise RuntimeError(f"{missing} selected n-grams were not found again in the corpus (was it changed?)")
    return [found[key] for key in keys.tolist()]


def build_vocab_ray(config: RunConfig, out_dir: Path) -> Vocabulary:
    """Count on Ray, select, and write the vocabulary folder atomically, as ``build_vocab_from_chunks``."""
    started = time.perf_counter()
    total = count_corpus(config.run_dir, config.distill.corpus_texts)
    with ray_session(config.ray) as ray:
        keys, counts, facts = count_top_ngrams_ray(config, ray, total)
        strings = recover_strings_ray(config, ray, keys, total)
    vocab = build_vocabulary(strings, counts)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_vocab_dir(tmp, vocab)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    seconds = time.perf_counter() - started
    print(
        f"ray counting: {total} texts in {facts['chunks']} chunks, {facts['reducers']} reducers on "
        f"{facts['nodes']} nodes ({facts['cluster_cpus']:g} CPUs), {len(vocab.ngrams)} n-grams kept, "
        f"{seconds:.1f} s = {total / seconds if seconds > 0 else 0:.0f} texts/s",
        flush=True,
    )
    return vocab
