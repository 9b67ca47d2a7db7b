"""The n-gram vocabulary: exact top-K against a Counter, invariance to chunking, bounded memory."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sdcore.featurizer import FeaturizerSettings, Tokenizer, mix_keys, reference_ngrams
from training.stages import vocab as vocab_module
from training.stages.vocab import (
    Vocabulary,
    build_vocab_from_chunks,
    count_top_ngrams,
    load_vocab_featurizer,
    recover_strings,
    word_hash,
)

WORDS = [
    "the", "a", "movie", "film", "plot", "actor", "story", "good", "bad", "great", "awful", "boring",
    "funny", "long", "short", "scene", "music", "director", "script", "ending", "twist", "character",
    "dialogue", "slow", "fast", "love", "hate", "best", "worst", "never", "always", "really", "quite",
    "very", "not", "too", "much", "little", "Café", "Naïve", "ÉCOLE", "東京", "it's", "don't", "two-hour",
    "2022", "x", "y",
]


def make_corpus(texts: int = 400, seed: int = 7) -> list[str]:
    """Deterministic texts with Zipf-like word frequencies: many tied counts, punctuation, case, unicode."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1) ** 1.1
    weights /= weights.sum()
    punctuation = ["", "", "", ",", ".", "!", " -", "?"]
    out = []
    for _ in range(texts):
        length = int(rng.integers(0, 16))
        picks = rng.choice(len(WORDS), size=length, p=weights)
        out.append(" ".join(WORDS[i] + punctuation[int(rng.integers(len(punctuation)))] for i in picks))
    return out


CORPUS = make_corpus()


def chunked(texts: list[str], size: int) -> Iterator[list[str]]:
    for lo in range(0, len(texts), size):
        yield texts[lo : lo + size]


def reference_counts(texts: list[str], settings: FeaturizerSettings) -> Counter[str]:
    tokenize = Tokenizer(settings)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(reference_ngrams(tokenize(text), settings.ngram_min, settings.ngram_max))
    return counts


def hash_key(gram: str) -> int:
    """The counting key of an n-gram: its words' 64-bit hashes mixed, as the counter computes it."""
    columns = [np.array([word_hash(w)], dtype=np.uint64) for w in gram.split(" ")]
    return int(mix_keys(columns)[0])


def build(
    tmp_path: Path,
    settings: FeaturizerSettings,
    size: int,
    chunk: int = 64,
    partitions: int = 4,
    memory_mb: float = 16.0,
    corpus: list[str] = CORPUS,
    name: str = "v",
) -> Vocabulary:
    return build_vocab_from_chunks(
        lambda: chunked(corpus, chunk), settings, size, tmp_path / name, partitions, memory_mb, len(corpus)
    )


SETTINGS = [FeaturizerSettings(), FeaturizerSettings(ngram_min=1, ngram_max=2, lowercase=False)]


@pytest.mark.parametrize("settings", SETTINGS, ids=["1-4-lower", "1-2-cased"])
@pytest.mark.parametrize("size", [1, 57, 250])
def test_top_k_equals_a_counter_reference(tmp_path: Path, settings: FeaturizerSettings, size: int) -> None:
    reference = reference_counts(CORPUS, settings)
    vocab = build(tmp_path, settings, size)

    assert len(vocab.ngrams) == size == len(set(vocab.ngrams)) == vocab.counts.size == vocab.keys.size
    assert [reference[g] for g in vocab.ngrams] == vocab.counts.tolist()
    assert sorted(reference.values(), reverse=True)[:size] == vocab.counts.tolist()
    kth = int(vocab.counts[-1])
    assert {g for g, c in reference.items() if c > kth} <= set(vocab.ngrams)
    # Ties at the K-th count are broken by the smaller counting key: the exact expected set.
    expected = sorted(reference, key=lambda g: (-reference[g], hash_key(g)))[:size]
    assert set(vocab.ngrams) == set(expected)
    # Rows are numbered by count (descending), ties by string.
    assert vocab.ngrams == sorted(vocab.ngrams, key=lambda g: (-reference[g], g))
    assert vocab.words == sorted({w for g in vocab.ngrams for w in g.split(" ")})


def test_the_corpus_has_ties_at_the_cut() -> None:
    """The premise of the tie checks above: several n-grams share the K-th count, on both sides of it."""
    for settings in SETTINGS:
        counts = sorted(reference_counts(CORPUS, settings).values(), reverse=True)
        for size in (57, 250):
            kth = counts[size - 1]
            assert counts[size] == kth and counts[size - 2] == kth


def test_a_vocabulary_larger_than_the_corpus_takes_every_ngram(tmp_path: Path) -> None:
    settings = FeaturizerSettings()
    reference = reference_counts(CORPUS, settings)
    vocab = build(tmp_path, settings, len(reference) + 1000)
    assert dict(zip(vocab.ngrams, vocab.counts.tolist(), strict=True)) == dict(reference)


@pytest.mark.parametrize(("chunk", "partitions"), [(1, 1), (7, 3), (400, 16), (1000, 2)])
def test_chunk_size_and_partitions_do_not_change_the_result(tmp_path: Path, chunk: int, partitions: int) -> None:
    settings = FeaturizerSettings()
    base = build(tmp_path, settings, 120, chunk=50, partitions=4, name="base")
    other = build(tmp_path, settings, 120, chunk=chunk, partitions=partitions, name="other")
    assert other.ngrams == base.ngrams
    assert np.array_equal(other.counts, base.counts)
    assert np.array_equal(other.keys, base.keys)
    assert other.words == base.words


def test_the_recursive_split_path_gives_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shifts: list[int] = []
    real = vocab_module.reduce_spill

    def recording(
        path: Path, budget_bytes: int, k: int, shift: int, partitions: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        shifts.append(shift)
        return real(path, budget_bytes, k, shift, partitions)

    settings = FeaturizerSettings()
    base = build(tmp_path, settings, 150, name="base")
    assert max(shifts, default=0) == 0  # the generous budget never splits
    monkeypatch.setattr(vocab_module, "reduce_spill", recording)
    # 2 KB: spill files of this corpus are tens of KB, so they are split (more than once).
    split = build(tmp_path, settings, 150, memory_mb=2 / 1024, name="split")
    assert max(shifts) >= 16
    assert split.ngrams == base.ngrams and np.array_equal(split.counts, base.counts)
    assert not (tmp_path / ".split.tmp").exists()


def test_vocabulary_folder_featurizes_as_the_reference(tmp_path: Path) -> None:
    """The written folder loads into the shared featurizer; row i is the i-th most frequent n-gram."""
    settings = FeaturizerSettings()
    vocab = build(tmp_path, settings, 300)
    folder = tmp_path / "v"
    assert np.array_equal(np.load(folder / "vocab" / "counts.npy"), vocab.counts)
    featurizer = load_vocab_featurizer(folder, settings)
    row_of = {g: i for i, g in enumerate(vocab.ngrams)}
    tokenize = Tokenizer(settings)
    texts = [*CORPUS[:50], "The movie, the plot: a GREAT film!", "unknown words only", ""]
    for text, rows in zip(texts, featurizer.rows_per_text(texts), strict=True):
        grams = reference_ngrams(tokenize(text), 1, 4)
        assert sorted(rows.tolist()) == sorted(row_of[g] for g in grams if g in row_of), text


def test_rebuilding_replaces_the_folder(tmp_path: Path) -> None:
    settings = FeaturizerSettings()
    build(tmp_path, settings, 300)
    second = build(tmp_path, settings, 20)
    ngrams = (tmp_path / "v" / "vocab" / "ngrams.txt").read_text(encoding="utf-8").splitlines()
    assert ngrams == second.ngrams
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v"]


def test_recover_strings_refuses_a_changed_corpus(tmp_path: Path) -> None:
    settings = FeaturizerSettings()
    keys, _ = count_top_ngrams(chunked(CORPUS, 64), settings, 50, tmp_path / "spill")
    assert len(recover_strings(chunked(CORPUS, 64), settings, keys)) == 50
    changed = [t.replace("movie", "picture") for t in CORPUS]
    with pytest.raises(RuntimeError, match="not found again in the corpus"):
        recover_strings(chunked(changed, 64), settings, keys)


# --- Bounded memory -------------------------------------------------------------------------------

CHUNK_TEXTS = 250
BASE_CHUNKS = 10


def growing_corpus(chunks: int) -> Iterator[list[str]]:
    """Chunks of 250 texts x 8 words drawn from a million distinct words, generated on the fly.

    Nearly every 2-, 3- and 4-gram is new, so the number of distinct n-grams grows with the corpus
    (about 6,500 per chunk), while each chunk alone is the same size.
    """
    for c in range(chunks):
        ids = np.random.default_rng([11, c]).integers(0, 1_000_000, size=(CHUNK_TEXTS, 8))
        yield [" ".join(f"w{i}" for i in row) for row in ids]


def peak_traced_bytes(chunks: int, spill: Path) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        count_top_ngrams(growing_corpus(chunks), FeaturizerSettings(), 20, spill, partitions=4, memory_mb=0.15)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_counting_memory_stays_bounded_as_the_corpus_grows(tmp_path: Path) -> None:
    """Peak traced memory (numpy buffers included) of a 4x corpus stays close to that of the 1x corpus.

    Sizes: the 1x corpus spills about 70,000 (key, count) pairs (1.1 MB) into 4 files of about 280 KB,
    the 4x corpus about 1.1 MB per file. With a 150 KB budget both are split before reduction, so every
    reduction holds a similar amount; a counter that kept all distinct n-grams, or reduced a spill file
    whole, would need several times more at 4x.
    """
    distinct = {}
    for chunks in (BASE_CHUNKS, 4 * BASE_CHUNKS):
        keys, _ = count_top_ngrams(
            growing_corpus(chunks), FeaturizerSettings(), 10**9, tmp_path / "all", partitions=4, memory_mb=64
        )
        distinct[chunks] = keys.size
    assert distinct[4 * BASE_CHUNKS] > 3.5 * distinct[BASE_CHUNKS]

    peak_traced_bytes(BASE_CHUNKS, tmp_path / "warm")  # first-call allocations (caches) out of the way
    peak_1x = peak_traced_bytes(BASE_CHUNKS, tmp_path / "s1")
    peak_4x = peak_traced_bytes(4 * BASE_CHUNKS, tmp_path / "s4")

    assert peak_4x < 1.5 * peak_1x, (peak_1x, peak_4x)
    # Holding the 4x corpus's distinct (key, count) pairs alone would take more than twice the peak.
    assert distinct[4 * BASE_CHUNKS] * 16 > 2 * peak_4x, (distinct, peak_4x)
