"""The shared featurizer against a slow, obviously-correct reference (reference_ngrams + a dict)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from sdcore.featurizer import (
    DEFAULT_TOKEN_PATTERN,
    FeaturizerError,
    FeaturizerSettings,
    NgramFeaturizer,
    Tokenizer,
    keys_of_ngram_strings,
    reference_ngrams,
)
from sdcore.model_format import load_featurizer
from sdcore.model_writer import write_vocabulary

# Texts chosen to hit the awkward cases: punctuation, unicode (accents, CJK, case folding), an empty
# text, a text with no token (one-letter words only), one-word texts, repeats, and unknown words.
TEXTS = [
    "The movie was very, very good!",
    "",
    "a b c",  # one-letter words are no tokens under the default pattern
    "movie",
    "Good movie; bad movie. Good MOVIE?",
    "very very very very good",
    "Café déjà vu — naïve FAÇADE, ÉCOLE école",
    "東京 大阪 東京 大阪 東京",
    "zzz unknownword qqq xyzzy",  # every word out of vocabulary
    "the plot the plot the plot",
    "was it good? it was... it was not bad (but not good)",
    "good  bad\tgood\nbad",
    "snake_case words_with_underscores and digits 2022 42",
    "movie was",
    "the",
    "the movie was very good and the plot was very bad",
]

# Vocabulary source: every n-gram of these texts, plus words alone (so some n-grams of known words
# are themselves out of vocabulary: "plot good" below is made of known words but never listed).
VOCAB_TEXTS = [
    "the movie was very very good",
    "good movie bad movie good movie",
    "very very very good",
    "café déjà vu naïve façade école",
    "東京 大阪 東京",
    "the plot the plot",
    "it was not bad but not good",
    "snake_case words_with_underscores 2022",
]


def make_featurizer(settings: FeaturizerSettings, ngrams: Sequence[str], seed: int = 0) -> NgramFeaturizer:
    """A featurizer for ``ngrams``, with rows in a shuffled order (rows need not follow key order)."""
    words = sorted({w for g in ngrams for w in g.split(" ")})
    word_ids = {w: i for i, w in enumerate(words)}
    keys = keys_of_ngram_strings(list(ngrams), word_ids)
    rows = np.random.default_rng(seed).permutation(len(ngrams)).astype(np.int64)
    order = np.argsort(keys)
    return NgramFeaturizer(settings, words, keys[order], rows[order])


def vocab_ngrams(settings: FeaturizerSettings, texts: Sequence[str] = VOCAB_TEXTS) -> list[str]:
    tokenize = Tokenizer(settings)
    seen: dict[str, None] = {}
    for text in texts:
        for gram in reference_ngrams(tokenize(text), settings.ngram_min, settings.ngram_max):
            seen.setdefault(gram)
    return list(seen)


def reference_rows(
    settings: FeaturizerSettings, row_of: dict[str, int], text: str
) -> tuple[list[int], int]:
    """(sorted rows of the text's in-vocabulary n-grams with multiplicity, number of all its n-grams)."""
    raw = text.lower() if settings.lowercase else text
    tokens = re.findall(settings.token_pattern, raw)
    grams = reference_ngrams(tokens, settings.ngram_min, settings.ngram_max)
    return sorted(row_of[g] for g in grams if g in row_of), len(grams)


def row_dict(featurizer: NgramFeaturizer, ngrams: Sequence[str]) -> dict[str, int]:
    """n-gram string -> row, through the featurizer's own key table (the row each key maps to)."""
    keys = keys_of_ngram_strings(list(ngrams), featurizer.word_ids)
    pos = np.searchsorted(featurizer.sorted_keys, keys)
    assert np.array_equal(featurizer.sorted_keys[pos], keys)
    return {g: int(featurizer.key_rows[p]) for g, p in zip(ngrams, pos, strict=True)}


def assert_matches_reference(featurizer: NgramFeaturizer, ngrams: Sequence[str], texts: Sequence[str]) -> None:
    row_of = row_dict(featurizer, ngrams)
    occ = featurizer.occurrences(texts)
    per_text = featurizer.rows_per_text(texts)
    assert len(per_text) == len(texts) == occ.num_texts
    for i, text in enumerate(texts):
        expected, total = reference_rows(featurizer.settings, row_of, text)
        assert sorted(per_text[i].tolist()) == expected, text
        assert occ.total[i] == total, text
        assert occ.found[i] == len(expected), text
        assert occ.coverage[i] == pytest.approx(len(expected) / total if total else 0.0), text


SETTINGS_CASES = [
    FeaturizerSettings(),
    FeaturizerSettings(ngram_min=1, ngram_max=2),
    FeaturizerSettings(ngram_min=2, ngram_max=3),
    FeaturizerSettings(ngram_min=3, ngram_max=3),
    FeaturizerSettings(lowercase=False),
    FeaturizerSettings(token_pattern=r"(?u)\b\w+\b", ngram_max=3),  # one-letter words count too
]


@pytest.mark.parametrize("settings", SETTINGS_CASES, ids=lambda s: f"{s.ngram_min}-{s.ngram_max}-lc{s.lowercase}")
def test_rows_equal_the_reference(settings: FeaturizerSettings) -> None:
    ngrams = vocab_ngrams(settings)
    featurizer = make_featurizer(settings, ngrams)
    assert featurizer.vocab_size == len(ngrams)
    assert_matches_reference(featurizer, ngrams, TEXTS)


def test_reference_itself_on_a_known_text() -> None:
    # Anchors the reference: a wrong reference would make the comparisons above meaningless.
    assert reference_ngrams(["a", "b", "c"], 1, 2) == ["a", "b", "c", "a b", "b c"]
    assert reference_ngrams(["a", "b"], 3, 4) == []
    assert Tokenizer(FeaturizerSettings())("It's a Good-Movie, É!") == ["it", "good", "movie"]


def test_a_vocabulary_with_held_out_ngrams() -> None:
    """Dropping every other n-gram leaves n-grams whose words are all known but that are not listed."""
    settings = FeaturizerSettings()
    ngrams = vocab_ngrams(settings)[::2]
    assert_matches_reference(make_featurizer(settings, ngrams, seed=3), ngrams, TEXTS)


def test_multiplicity_and_coverage_by_hand() -> None:
    settings = FeaturizerSettings(ngram_max=2)
    ngrams = ["very", "good", "very very", "very good"]
    featurizer = make_featurizer(settings, ngrams)
    row_of = row_dict(featurizer, ngrams)
    occ = featurizer.occurrences(["Very very very GOOD", "bad", ""])
    rows = featurizer.rows_per_text(["Very very very GOOD", "bad", ""])
    expected = sorted([row_of["very"]] * 3 + [row_of["good"], row_of["very good"]] + [row_of["very very"]] * 2)
    assert sorted(rows[0].tolist()) == expected
    assert rows[1].size == 0 and rows[2].size == 0
    # 4 unigrams + 3 bigrams = 7 n-grams in text 0, 7 of them found; "bad": 1 n-gram, 0 found.
    assert occ.total.tolist() == [7, 1, 0]
    assert occ.found.tolist() == [7, 0, 0]
    assert occ.coverage.tolist() == [1.0, 0.0, 0.0]
    assert occ.offsets().tolist() == [0, 7, 7]


def test_windows_never_cross_text_boundaries() -> None:
    settings = FeaturizerSettings()
    ngrams = ["alpha", "beta", "gamma", "beta gamma", "alpha beta gamma", "beta gamma delta"]
    featurizer = make_featurizer(settings, ngrams)
    row_of = row_dict(featurizer, ngrams)
    rows = featurizer.rows_per_text(["alpha beta", "gamma delta", "", "gamma"])
    assert sorted(rows[0].tolist()) == sorted([row_of["alpha"], row_of["beta"]])
    assert rows[1].tolist() == [row_of["gamma"]]
    assert rows[2].size == 0
    assert rows[3].tolist() == [row_of["gamma"]]
    # The same words in one text do form the cross n-grams.
    joined = featurizer.rows_per_text(["alpha beta gamma delta"])[0].tolist()
    assert {row_of["beta gamma"], row_of["alpha beta gamma"], row_of["beta gamma delta"]} <= set(joined)


def test_batched_equals_one_text_at_a_time() -> None:
    settings = FeaturizerSettings()
    ngrams = vocab_ngrams(settings)
    featurizer = make_featurizer(settings, ngrams)
    batch = featurizer.occurrences(TEXTS)
    batch_rows = featurizer.rows_per_text(TEXTS)
    for i, text in enumerate(TEXTS):
        single = featurizer.occurrences([text])
        assert np.array_equal(batch_rows[i], single.rows), text
        assert batch.total[i] == single.total[0]
        assert batch.coverage[i] == single.coverage[0]
    # Occurrences are grouped by text, so offsets delimit each text's rows.
    assert np.all(np.diff(batch.text_index) >= 0)
    bounds = np.append(batch.offsets(), batch.rows.size)
    for i in range(len(TEXTS)):
        assert np.array_equal(batch.rows[bounds[i] : bounds[i + 1]], batch_rows[i])


def test_empty_batch_and_empty_vocabulary() -> None:
    settings = FeaturizerSettings()
    featurizer = make_featurizer(settings, vocab_ngrams(settings))
    occ = featurizer.occurrences([])
    assert occ.num_texts == 0 and occ.rows.size == 0 and occ.coverage.size == 0
    assert featurizer.rows_per_text([]) == []

    empty = NgramFeaturizer(settings, [], np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))
    occ = empty.occurrences(["some words here", ""])
    assert occ.rows.size == 0
    assert occ.total.tolist() == [6, 0]
    assert occ.coverage.tolist() == [0.0, 0.0]


def test_empty_batch_offsets_have_one_entry_per_text() -> None:
    """EmbeddingBag offsets: one per text. For zero texts that is zero offsets, not [0]."""
    settings = FeaturizerSettings()
    featurizer = make_featurizer(settings, vocab_ngrams(settings))
    assert featurizer.occurrences([]).offsets().size == 0


def test_lowercase_false_keeps_case_apart() -> None:
    settings = FeaturizerSettings(lowercase=False, ngram_max=2)
    ngrams = ["Good", "good", "Good movie"]
    featurizer = make_featurizer(settings, ngrams)
    row_of = row_dict(featurizer, ngrams)
    rows = featurizer.rows_per_text(["Good movie good GOOD"])[0]
    assert sorted(rows.tolist()) == sorted([row_of["Good"], row_of["good"], row_of["Good movie"]])
    lower = make_featurizer(FeaturizerSettings(ngram_max=2), ["good", "good movie"])
    assert lower.rows_per_text(["Good movie good GOOD"])[0].size == 4  # 3 x "good" + "good movie"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ngram_min": 0}, "n-gram range"),
        ({"ngram_min": 3, "ngram_max": 2}, "n-gram range"),
        ({"ngram_min": -1, "ngram_max": -1}, "n-gram range"),
        ({"token_pattern": "(unclosed"}, "invalid token pattern"),
        ({"token_pattern": "[z-a]"}, "invalid token pattern"),
        ({"token_pattern": r"(\w)(\w+)"}, "more than 1 capturing group"),
    ],
)
def test_settings_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FeaturizerError, match=message):
        FeaturizerSettings(**kwargs)  # type: ignore[arg-type]
    assert issubclass(FeaturizerError, ValueError)


def test_one_capturing_group_selects_the_token() -> None:
    """As in scikit-learn, a pattern with one group yields that group (e.g. a word before a comma)."""
    settings = FeaturizerSettings(token_pattern=r"(\w+),", ngram_max=2)
    assert Tokenizer(settings)("Good, bad, ugly") == ["good", "bad"]
    featurizer = make_featurizer(settings, ["good", "good bad"])
    assert featurizer.rows_per_text(["Good, bad, ugly"])[0].size == 2


def test_settings_round_trip_through_a_dict() -> None:
    settings = FeaturizerSettings(lowercase=False, token_pattern=r"\S+", ngram_min=2, ngram_max=3)
    assert FeaturizerSettings.from_dict({**settings.to_dict(), "unrelated": 1}) == settings
    assert FeaturizerSettings.from_dict({}) == FeaturizerSettings()
    assert FeaturizerSettings().token_pattern == DEFAULT_TOKEN_PATTERN


def test_featurizer_refuses_bad_key_tables() -> None:
    settings = FeaturizerSettings()
    keys = np.array([3, 1, 2], dtype=np.uint64)
    with pytest.raises(FeaturizerError, match="not strictly increasing"):
        NgramFeaturizer(settings, ["a"], keys, np.arange(3, dtype=np.int64))
    with pytest.raises(FeaturizerError, match="not strictly increasing"):
        NgramFeaturizer(settings, ["a"], np.array([1, 1], dtype=np.uint64), np.arange(2, dtype=np.int64))
    with pytest.raises(FeaturizerError, match="differ in length"):
        NgramFeaturizer(settings, ["a"], np.array([1, 2], dtype=np.uint64), np.arange(3, dtype=np.int64))


def test_keys_of_ngram_strings_agree_with_the_featurizer() -> None:
    """Each vocabulary n-gram, featurized as a text of its own, finds its own row among its n-grams."""
    settings = FeaturizerSettings()
    ngrams = vocab_ngrams(settings)
    featurizer = make_featurizer(settings, ngrams)
    keys = keys_of_ngram_strings(ngrams, featurizer.word_ids)
    assert np.array_equal(np.sort(keys), featurizer.sorted_keys)
    assert np.unique(keys).size == len(ngrams)
    row_of = row_dict(featurizer, ngrams)
    per_text = featurizer.rows_per_text(ngrams)
    for gram, rows in zip(ngrams, per_text, strict=True):
        assert row_of[gram] in rows.tolist(), gram
    # The n-gram length is part of the key: "the plot the plot" and its parts all differ.
    parts = ["the", "the plot", "the plot the", "the plot the plot", "plot the"]
    assert np.unique(keys_of_ngram_strings(parts, featurizer.word_ids)).size == len(parts)


def test_vocabulary_files_round_trip(tmp_path: Path) -> None:
    """The serving path (files written, then loaded) featurizes like the in-memory featurizer."""
    settings = FeaturizerSettings(ngram_max=3)
    ngrams = vocab_ngrams(settings)
    words = sorted({w for g in ngrams for w in g.split(" ")})
    keys = keys_of_ngram_strings(ngrams, {w: i for i, w in enumerate(words)})
    write_vocabulary(tmp_path, words, keys, np.arange(len(ngrams), dtype=np.int64), ngrams)
    loaded = load_featurizer(tmp_path, settings)
    in_memory = NgramFeaturizer(settings, words, np.sort(keys), np.argsort(keys).astype(np.int64))
    for a, b in zip(loaded.rows_per_text(TEXTS), in_memory.rows_per_text(TEXTS), strict=True):
        assert np.array_equal(a, b)
    assert_matches_reference(loaded, ngrams, TEXTS)
    # Row i is the i-th listed n-gram.
    assert row_dict(loaded, ngrams) == {g: i for i, g in enumerate(ngrams)}


TRICKY_TEXTS = [
    "a b cd e fg, hi-jk l'mn o_p q1 2r 3 45 __ _ x",
    "Ünïcödé wörds, ÉCOLE naïve café 東京タワー a ß ﬁne ١٢٣ x_ _y",
    "", " ", "a", "ab", "a.b.cd", "it's the film's 90-minute run-time...",
    "tab\tnew\nline\r\nend  double  spaces", "émoji 😀😀 word🙂word", "x" * 300,
]


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_fast_default_pattern_finds_the_same_tokens(text: str) -> None:
    tokenize = Tokenizer(FeaturizerSettings())
    assert tokenize(text) == re.findall(DEFAULT_TOKEN_PATTERN, text.lower())


@pytest.mark.parametrize("pattern", [DEFAULT_TOKEN_PATTERN, r"(?u)\b(\w+)\b", r"\S+"])
def test_token_spans_are_the_tokens_and_where_they_lie(pattern: str) -> None:
    tokenizer = Tokenizer(FeaturizerSettings(token_pattern=pattern))
    for text in ["A gripping, beautifully-acted FILM!", "İstanbul ΣΟΦΟΣ naïve 東京 🙂 x", "", "   ", "a\x00b cd"]:
        tokens, starts, ends = tokenizer.spans(text)
        lowered = tokenizer.lowered(text)
        assert tokens == tokenizer(text)
        assert [lowered[a:b] for a, b in zip(starts, ends, strict=True)] == tokens
