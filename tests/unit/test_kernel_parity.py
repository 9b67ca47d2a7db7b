"""The compiled kernel (sdcore.kernel) against the numpy reference (sdcore.featurizer + mean_pool).

Identical rows, found, total and subword counts for the same texts, for spec v1 and v2 (subwords);
pooled vectors within float32 rounding; over the whole MR corpus (sentences and review lines) and over
inputs chosen to break a tokenizer: emoji, CJK, right-to-left scripts, combining marks, NUL, lone
surrogates, case mappings that change length, a 20,000-character text and empty texts. The
word-character test covers every Unicode code point.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from sdcore import kernel as sk
from sdcore.featurizer import (
    FeaturizerSettings,
    NgramFeaturizer,
    Tokenizer,
    keys_of_ngram_strings,
    mix_keys,
    reference_ngrams,
)
from sdcore.spec import FEATURIZER_SPEC
from service.runtimes.student import EmbeddingTable, mean_pool
from training.data.task_data import TaskData, mr_review_lines

ODD_TEXTS = [
    "",
    " ",
    "a",
    "!!!",
    "I loved it 😀😀 so much 👍🏽 really—really 🎬movie🎬",
    "東京 大阪 東京で映画を見た 한국어 영화 좋아요 中文电影很好",
    "שלום עולם סרט טוב مرحبا بالعالم فيلم جيد",  # Hebrew, Arabic (right to left)
    "\u202eevil\u202c text with bidi \u200fmarks\u200e and zero\u200bwidth\u200djoiner",
    "nul\x00inside\x00the text\x00\x00 ab\x00cd",
    "ΟΔΟΣ ΟΔΟΣ. Σίσυφος ΣΊΣΥΦΟΣ ΣΑΣ",  # final sigma: str.lower maps the last Σ of a word to ς
    "İstanbul İİ ǅemal ẞtraße ﬁne ﬃ",  # lower() changes the length (İ -> i + U+0307) or maps ligatures
    "हिन्दी फ़िल्म अच्छी है तमिழ் திரைப்படம்",  # combining vowel signs and viramas split \w runs
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ ²³ ½ ⅷ ٣٤ ߁߂ 𝟘𝟙 x²y",  # numerics and digits that \w accepts
    "snake_case __dunder__ _a a_ _ __",
    "lone \ud800 surrogate \udfff here ab\ud83dcd",
    "tab\tnew\nline\rcarriage\x0bvertical\x0cfeed\x1cfs\x85nel\u2028ls",
    "café CAFÉ cafe\u0301 e\u0301cole",  # precomposed vs combining acute (U+0301 is not \w)
    "𐍈𐌰𐌹 gothic 𝔣𝔯𝔞𝔨𝔱𝔲𝔯 math",  # astral plane letters
    "the movie was good the movie was good the movie was good",
]


def long_text(seed: int = 5, chars: int = 20_000) -> str:
    """A 20,000-character text mixing ASCII words, accents, CJK and emoji."""
    rng = np.random.default_rng(seed)
    words = ["movie", "good", "bad", "the", "plot", "très", "东京", "😀", "was", "not", "ΟΔΟΣ", "a"]
    out: list[str] = []
    size = 0
    while size <= chars:
        w = words[int(rng.integers(len(words)))]
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:chars]


def build(settings: FeaturizerSettings, vocab_texts: Sequence[str], every: int = 1,
          seed: int = 0) -> tuple[NgramFeaturizer, list[str]]:
    """A featurizer whose vocabulary is every ``every``-th distinct n-gram of ``vocab_texts`` (so some
    n-grams of known words are left out), rows in a shuffled order."""
    tokenize = Tokenizer(settings)
    seen: dict[str, None] = {}
    for text in vocab_texts:
        for gram in reference_ngrams(tokenize(text), settings.ngram_min, settings.ngram_max):
            seen.setdefault(gram)
    ngrams = list(seen)[::every]
    words = sorted({w for g in ngrams for w in g.split(" ")})
    keys = keys_of_ngram_strings(ngrams, {w: i for i, w in enumerate(words)})
    rows = np.random.default_rng(seed).permutation(len(ngrams)).astype(np.int64)
    order = np.argsort(keys)
    return NgramFeaturizer(settings, words, keys[order], rows[order]), ngrams


def assert_same_rows(featurizer: NgramFeaturizer, texts: Sequence[str]) -> None:
    occ = featurizer.occurrences(texts)
    rows, found, total, subwords = featurizer.kernel().featurize(texts)
    np.testing.assert_array_equal(found, occ.found)
    np.testing.assert_array_equal(total, occ.total)
    np.testing.assert_array_equal(subwords, np.zeros(len(texts)) if occ.subwords is None else occ.subwords)
    np.testing.assert_array_equal(rows, occ.rows)  # same order too: by text, then n, then position


def random_table(rows: int, dim: int, dtype: str, shard_rows: int, seed: int = 1) -> EmbeddingTable:
    rng = np.random.default_rng(seed)
    full = rng.normal(0.0, 0.5, size=(rows, dim)).astype(np.float32)
    shards, scales, starts = [], [], []
    for start in range(0, rows, shard_rows):
        block = full[start : start + shard_rows]
        if dtype == "int8":
            from sdcore.quantize import quantize_rows

            codes, scale = quantize_rows(block)
            shards.append(codes)
            scales.append(scale)
        else:
            shards.append(block.astype(dtype))
        starts.append(start)
    return EmbeddingTable(shards, starts, threads=1, scales=scales or None)


def kernel_table(table: EmbeddingTable) -> sk.KernelTable:
    return sk.KernelTable(table.shards, [int(s) for s in table.starts], table.scales)


@pytest.fixture(scope="module")
def mr_texts(mr_task: TaskData, mr_cache: Path) -> list[str]:
    """Every MR sentence and every line of the 1,500 full reviews (about 53,000 texts)."""
    return [*mr_task.train.texts, *mr_task.dev.texts, *mr_task.test.texts, *mr_review_lines(mr_cache)]


@pytest.fixture(scope="module")
def mr_featurizer(mr_task: TaskData) -> NgramFeaturizer:
    featurizer, _ = build(FeaturizerSettings(), [*mr_task.train.texts, *ODD_TEXTS, long_text()], every=2)
    return featurizer


@pytest.fixture
def portable_simd() -> Iterator[None]:
    sk.select_simd(True)
    yield
    sk.select_simd(False)


# --- the spec ---------------------------------------------------------------------------------------


def test_known_keys_of_the_spec() -> None:
    """The key values written in sdcore/spec.py, from the reference mix."""
    def key(ids: list[int]) -> int:
        return int(mix_keys([np.array([i], dtype=np.uint64) for i in ids])[0])

    assert FEATURIZER_SPEC == "sd-ngram-v1"
    assert key([0]) == 0x171BCA5761961ADA
    assert key([1]) == 0x5524A09E0C197EA2
    assert key([0, 1]) == 0xC96AB413D5BEB18E
    assert key([0, 1, 2, 3]) == 0x1BE51FD2847E1937


def test_the_kernel_makes_the_spec_keys() -> None:
    """Words a b c d with ids 0..3 and the n-grams [0], [1], [0 1], [0 1 2 3] as the vocabulary."""
    words = ["aa", "bb", "cc", "dd"]
    keys = np.array([0x171BCA5761961ADA, 0x5524A09E0C197EA2, 0xC96AB413D5BEB18E, 0x1BE51FD2847E1937],
                    dtype=np.uint64)
    order = np.argsort(keys)
    kernel = sk.NgramKernel(words, keys[order], np.arange(4, dtype=np.int64)[order], lowercase=True,
                            token_pattern=r"(?u)\b\w\w+\b", ngram_min=1, ngram_max=4)
    rows, found, total, _ = kernel.featurize(["AA bb cc dd"])
    assert sorted(rows.tolist()) == [0, 1, 2, 3]
    assert found.tolist() == [4] and total.tolist() == [4 + 3 + 2 + 1]


# --- tokens -------------------------------------------------------------------------------------------


def test_word_characters_are_re_word_characters_for_every_code_point() -> None:
    """Each code point doubled then a NUL: the kernel's tokens must be the spans ``re`` finds, for all
    1,114,112 code points (surrogates included), with and without lowercasing."""
    text = "".join(chr(c) * 2 + "\x00" for c in range(0x110000))
    expected = np.array([m.span() for m in re.finditer(r"\w\w+", text)], dtype=np.int64)
    index = sk._k.NgramIndex([], np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64), 1, 1)
    bounds, ids = index.tokens(text)
    np.testing.assert_array_equal(bounds, expected)
    assert (ids == -1).all()
    assert 100_000 < len(expected) < 0x110000  # a real mix of word and non-word code points


@pytest.mark.parametrize("lowercase", [True, False])
def test_tokens_equal_the_reference_tokenizer(lowercase: bool) -> None:
    settings = FeaturizerSettings(lowercase=lowercase)
    featurizer, _ = build(settings, ODD_TEXTS)
    tokenize = Tokenizer(settings)
    for text in [*ODD_TEXTS, long_text()]:
        assert featurizer.kernel().tokens(text) == tokenize(text), repr(text[:80])


# --- rows ---------------------------------------------------------------------------------------------


def test_rows_equal_the_reference_over_the_mr_corpus(mr_featurizer: NgramFeaturizer, mr_texts: list[str]) -> None:
    assert len(mr_texts) > 50_000
    for start in range(0, len(mr_texts), 5000):
        assert_same_rows(mr_featurizer, mr_texts[start : start + 5000])


def test_rows_equal_the_reference_on_odd_inputs(mr_featurizer: NgramFeaturizer) -> None:
    texts = [*ODD_TEXTS, long_text(), "", long_text(seed=9)[:777]]
    assert len(texts[-3]) == 20_000
    assert_same_rows(mr_featurizer, texts)
    for text in texts:  # one at a time as well as in one batch
        assert_same_rows(mr_featurizer, [text])
    assert_same_rows(mr_featurizer, [])


@pytest.mark.parametrize("settings", [
    FeaturizerSettings(ngram_min=1, ngram_max=2),
    FeaturizerSettings(ngram_min=2, ngram_max=3),
    FeaturizerSettings(ngram_min=3, ngram_max=3),
    FeaturizerSettings(lowercase=False),
    FeaturizerSettings(ngram_min=1, ngram_max=6),
    FeaturizerSettings(token_pattern=r"\w\w+"),  # the equivalent forms the kernel also tokenizes itself
    FeaturizerSettings(token_pattern=r"\b\w\w+\b", ngram_max=2),
    # A non-default pattern: tokenized with re in Python, the rest compiled.
    FeaturizerSettings(token_pattern=r"(?u)\b\w+\b", ngram_max=3),
    FeaturizerSettings(token_pattern=r"[^\s]+", ngram_max=2),
], ids=lambda s: f"{s.token_pattern}-{s.ngram_min}-{s.ngram_max}-lc{s.lowercase}")
def test_rows_equal_the_reference_for_other_settings(settings: FeaturizerSettings, mr_task: TaskData) -> None:
    featurizer, _ = build(settings, [*mr_task.train.texts[:800], *ODD_TEXTS], every=3, seed=4)
    compiled = settings.token_pattern in sk.COMPILED_PATTERNS
    assert featurizer.kernel().compiled_tokenizer == compiled
    assert_same_rows(featurizer, [*mr_task.dev.texts, *ODD_TEXTS, long_text()])


def test_empty_vocabulary_and_texts_without_tokens() -> None:
    featurizer = NgramFeaturizer(FeaturizerSettings(), [], np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))
    assert_same_rows(featurizer, ["some words here", "", "a b c", "😀"])


def test_repeated_words_keep_their_last_id_as_a_dict_does() -> None:
    words = ["good", "movie", "good"]
    featurizer = NgramFeaturizer(FeaturizerSettings(ngram_max=1), words,
                                 *sorted_vocab(["good", "movie"], {"good": 2, "movie": 1}))
    assert_same_rows(featurizer, ["good movie good"])


def sorted_vocab(ngrams: list[str], word_ids: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = keys_of_ngram_strings(ngrams, word_ids)
    order = np.argsort(keys)
    return keys[order], np.arange(len(ngrams), dtype=np.int64)[order]


# --- pooled vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32", "int8"])
@pytest.mark.parametrize("shard_rows", [1 << 30, 1000])
def test_pooled_vectors_equal_mean_pool(dtype: str, shard_rows: int, mr_featurizer: NgramFeaturizer,
                                        mr_texts: list[str]) -> None:
    table = random_table(mr_featurizer.vocab_size, 24, dtype, shard_rows)
    ktable = kernel_table(table)
    texts = [*mr_texts[:3000], *mr_texts[-2000:], *ODD_TEXTS, long_text()]
    for start in range(0, len(texts), 1000):
        batch = texts[start : start + 1000]
        occ = mr_featurizer.occurrences(batch)
        expected = mean_pool(occ, table)
        got = mr_featurizer.kernel().pool(batch, ktable, threads=1)
        assert got.vectors.dtype == np.float32 and got.vectors.shape == (len(batch), 24)
        np.testing.assert_array_equal(got.found, occ.found)
        np.testing.assert_array_equal(got.coverage, occ.coverage)
        np.testing.assert_allclose(got.vectors, expected, rtol=1e-5, atol=2e-6)
        empty = occ.found == 0
        assert not got.vectors[empty].any()  # no n-gram found: the zero vector


def test_threads_and_portable_conversion_give_the_same_bits(mr_featurizer: NgramFeaturizer, mr_texts: list[str],
                                                             portable_simd: None) -> None:
    table = kernel_table(random_table(mr_featurizer.vocab_size, 40, "float16", 5000))
    texts = [*mr_texts[:500], long_text(), *ODD_TEXTS, *mr_texts[-500:]]
    kernel = mr_featurizer.kernel()
    portable = kernel.pool(texts, table, threads=1).vectors
    assert sk.simd() == "portable"
    sk.select_simd(False)
    fast = kernel.pool(texts, table, threads=1)
    threaded = kernel.pool(texts, table, threads=3)
    np.testing.assert_array_equal(fast.vectors, portable)  # float16 -> float32 is exact either way
    np.testing.assert_array_equal(threaded.vectors, fast.vectors)
    np.testing.assert_array_equal(threaded.found, fast.found)
    np.testing.assert_array_equal(threaded.total, fast.total)


def test_pool_rows_is_the_pooling_step_alone(mr_featurizer: NgramFeaturizer, mr_texts: list[str]) -> None:
    table = kernel_table(random_table(mr_featurizer.vocab_size, 16, "float16", 7000))
    texts = mr_texts[:300]
    kernel = mr_featurizer.kernel()
    rows, found, _, _ = kernel.featurize(texts)
    np.testing.assert_array_equal(kernel.pool_rows(rows, found, table, threads=2), kernel.pool(texts, table).vectors)
    with pytest.raises(ValueError, match="rows must lie"):
        kernel.pool_rows(np.array([table.rows]), np.array([1]), table)


def test_portable_float16_conversion_equals_numpy_for_every_bit_pattern() -> None:
    bits = np.arange(1 << 16, dtype=np.uint16)
    got = sk._k.half_to_float_portable(bits)
    expected = bits.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))  # NaN payloads too


def test_bad_inputs_are_refused(mr_featurizer: NgramFeaturizer) -> None:
    kernel = mr_featurizer.kernel()
    table = kernel_table(random_table(mr_featurizer.vocab_size, 8, "float32", 10_000))
    with pytest.raises(TypeError, match="not str"):
        kernel.pool(["fine", b"bytes"], table)  # type: ignore[list-item]
    small = kernel_table(random_table(10, 8, "float32", 10))
    with pytest.raises(ValueError, match="the table has 10"):
        kernel.pool(["good"], small)
    with pytest.raises(ValueError, match="C-contiguous"):
        sk.KernelTable([np.zeros((4, 8), dtype=np.float32)[:, ::2]], [0])
    with pytest.raises(ValueError, match="scale"):
        sk.KernelTable([np.zeros((4, 8), dtype=np.int8)], [0])
    with pytest.raises(ValueError, match="contiguous row ranges"):
        sk.KernelTable([np.zeros((4, 8), dtype=np.float32)] * 2, [0, 5])
    assert kernel.pool([], table).vectors.shape == (0, 8)


def test_the_gil_is_released_for_the_whole_batch(mr_featurizer: NgramFeaturizer) -> None:
    """While one thread pools a long batch, another thread runs Python code. A call that held the GIL
    would let no other bytecode run between its start and its end (a C call is never preempted)."""
    import threading
    import time

    kernel = mr_featurizer.kernel()
    table = kernel_table(random_table(mr_featurizer.vocab_size, 256, "float16", 1 << 30))
    texts = [long_text(seed=s) for s in range(40)]
    started = time.perf_counter()
    kernel.pool(texts, table)
    once = time.perf_counter() - started
    texts = texts * max(1, int(0.4 / once) + 1)  # a call of about half a second or more
    window: list[float] = []
    ticks: list[float] = []

    def work() -> None:
        window.append(time.perf_counter())
        kernel.pool(texts, table)
        window.append(time.perf_counter())

    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    inside = [t for t in ticks if window[0] < t < window[1]]
    assert len(inside) > 10, f"{len(inside)} of {len(ticks)} main-thread steps ran during the kernel call"
    # No long stretch without a main-thread step: the GIL was not held for the compiled part (almost all of
    # the call), only for the short conversions before and after it.
    gaps = np.diff([window[0], *inside, window[1]])
    assert gaps.max() < 0.5 * (window[1] - window[0]), f"longest main-thread pause {gaps.max():.3f} s"


# --- spec v2: subwords ----------------------------------------------------------------------------------

SUBWORDS = FeaturizerSettings(subword_buckets=20_011, subword_min=2, subword_max=6)


@pytest.fixture(scope="module")
def mr_subword_featurizer(mr_task: TaskData) -> NgramFeaturizer:
    """MR's vocabulary (every other n-gram, so plenty of unknown words) with 20,011 subword buckets."""
    featurizer, _ = build(SUBWORDS, [*mr_task.train.texts, *ODD_TEXTS, long_text()], every=2)
    return featurizer


def test_subword_rows_equal_the_reference_over_the_mr_corpus(mr_subword_featurizer: NgramFeaturizer,
                                                             mr_texts: list[str]) -> None:
    subwords = 0
    for start in range(0, len(mr_texts), 5000):
        batch = mr_texts[start : start + 5000]
        assert_same_rows(mr_subword_featurizer, batch)
        subwords += int(mr_subword_featurizer.kernel().featurize(batch).subwords.sum())
    assert subwords > 100_000  # the dev, test and review lines' unknown words gave subwords


def test_subword_rows_equal_the_reference_on_odd_inputs(mr_subword_featurizer: NgramFeaturizer) -> None:
    texts = [*ODD_TEXTS, long_text(), "", long_text(seed=9)[:777], "zzzzqqqq " * 50, "x" * 5000]
    assert_same_rows(mr_subword_featurizer, texts)
    for text in texts:
        assert_same_rows(mr_subword_featurizer, [text])
    assert_same_rows(mr_subword_featurizer, [])


@pytest.mark.parametrize("settings", [
    FeaturizerSettings(subword_buckets=997, subword_scope="all"),
    FeaturizerSettings(subword_buckets=1, subword_min=2, subword_max=2),  # every subword in one row
    FeaturizerSettings(subword_buckets=5000, subword_min=4, subword_max=16, lowercase=False, ngram_max=2),
    FeaturizerSettings(subword_buckets=5000, token_pattern=r"\w\w+", subword_scope="all"),
    FeaturizerSettings(subword_buckets=5000, token_pattern=r"\b\w\w+\b", subword_min=16, subword_max=16),
], ids=lambda s: f"{s.token_pattern}-{s.subword_min}-{s.subword_max}-{s.subword_buckets}-{s.subword_scope}")
def test_subword_rows_equal_the_reference_for_other_settings(settings: FeaturizerSettings, mr_task: TaskData) -> None:
    featurizer, _ = build(settings, [*mr_task.train.texts[:800], *ODD_TEXTS], every=3, seed=4)
    texts = [*mr_task.dev.texts, *ODD_TEXTS, long_text()]
    assert_same_rows(featurizer, texts)
    occ = featurizer.occurrences(texts)
    assert occ.subwords is not None and occ.subwords.sum() > 0 and occ.weights is not None
    assert occ.rows.max() < featurizer.table_rows and (occ.rows[occ.rows >= featurizer.vocab_size].size
                                                        == occ.subwords.sum())


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_subword_pooled_vectors_equal_mean_pool(dtype: str, mr_subword_featurizer: NgramFeaturizer,
                                                mr_texts: list[str]) -> None:
    featurizer = mr_subword_featurizer
    table = random_table(featurizer.table_rows, 24, dtype, 7000)
    ktable = kernel_table(table)
    texts = [*mr_texts[-3000:], *ODD_TEXTS, long_text()]
    for start in range(0, len(texts), 1000):
        batch = texts[start : start + 1000]
        occ = featurizer.occurrences(batch)
        got = featurizer.kernel().pool(batch, ktable, threads=2)
        np.testing.assert_array_equal(got.found, occ.found)
        np.testing.assert_array_equal(got.subwords, occ.subwords)
        np.testing.assert_array_equal(got.coverage, occ.coverage)
        np.testing.assert_allclose(got.vectors, mean_pool(occ, table), rtol=1e-5, atol=2e-6)


def test_subwords_do_not_change_word_rows_or_coverage(mr_featurizer: NgramFeaturizer,
                                                      mr_subword_featurizer: NgramFeaturizer,
                                                      mr_texts: list[str]) -> None:
    """v2 adds rows after each text's word rows; the word rows and the coverage are v1's."""
    texts = mr_texts[-2000:]
    words = mr_featurizer.kernel().featurize(texts)
    both = mr_subword_featurizer.kernel().featurize(texts)
    np.testing.assert_array_equal(both.total, words.total)
    np.testing.assert_array_equal(both.found - both.subwords, words.found)
    starts = np.concatenate(([0], np.cumsum(both.found)[:-1]))
    first_rows = np.concatenate([both.rows[s : s + w] for s, w in zip(starts, words.found, strict=True)])
    np.testing.assert_array_equal(first_rows, words.rows)  # each text's rows start with v1's, in v1's order
    assert both.rows[both.rows >= mr_subword_featurizer.vocab_size].size == both.subwords.sum() > 0


def test_a_table_without_the_subword_rows_is_refused(mr_subword_featurizer: NgramFeaturizer) -> None:
    table = kernel_table(random_table(mr_subword_featurizer.vocab_size, 8, "float32", 10_000))
    with pytest.raises(ValueError, match="rows reach"):
        mr_subword_featurizer.kernel().pool(["some text"], table)


def test_an_unknown_word_weighs_one_row_however_many_subwords_it_has() -> None:
    """Spec v2, step 13: "good zzzzzzzzzzzz" pools to (e_good + mean of the long word's subwords) / 2."""
    settings = FeaturizerSettings(subword_buckets=50, subword_min=3, subword_max=5, ngram_max=1)
    featurizer = NgramFeaturizer(settings, ["good"], *sorted_vocab(["good"], {"good": 0}))
    table = random_table(featurizer.table_rows, 6, "float32", 1000)
    full = np.concatenate([np.asarray(s) for s in table.shards])
    occ = featurizer.occurrences(["good zzzzzzzzzzzz"])
    subword = occ.rows[1:]
    assert occ.rows[0] == 0 and subword.size == 12 + 11 + 10 and occ.units[0] == pytest.approx(2.0)
    expected = (full[0] + full[subword].mean(axis=0)) / 2
    np.testing.assert_allclose(mean_pool(occ, table)[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(featurizer.kernel().pool(["good zzzzzzzzzzzz"], kernel_table(table)).vectors[0],
                               expected, rtol=1e-5, atol=1e-6)


def test_a_pattern_the_kernel_does_not_scan_is_refused_for_subwords() -> None:
    with pytest.raises(ValueError, match="subwords need the default token pattern"):
        FeaturizerSettings(subword_buckets=10, token_pattern=r"[^\s]+")
