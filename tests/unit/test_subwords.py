"""Featurizer spec v2 (hashed subwords, sdcore/spec.py): its known values, its settings, the manifest that
records it, the export that keeps its rows, and the run config keys that turn it on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sdcore.coverage import coverage_of
from sdcore.featurizer import (
    FeaturizerError,
    FeaturizerSettings,
    NgramFeaturizer,
    mix_keys,
    subword_rows,
)
from sdcore.model_format import FeaturizerSpec
from sdcore.model_writer import KeptRows
from sdcore.spec import FEATURIZER_SPEC, SUBWORD_BEGIN, SUBWORD_END, SUBWORD_SEED, SUBWORD_SPEC
from training.config import ConfigError, config_from_dict
from training.pipeline import features_key, vocab_key

BEGIN, END = SUBWORD_BEGIN, SUBWORD_END


def subword_key(values: list[int]) -> int:
    return int(mix_keys([np.array([v], dtype=np.uint64) for v in values], SUBWORD_SEED)[0])


def empty_featurizer(settings: FeaturizerSettings) -> NgramFeaturizer:
    return NgramFeaturizer(settings, [], np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64))


def test_the_known_subword_key_of_the_spec() -> None:
    assert SUBWORD_SPEC == "sd-ngram-v2" and FEATURIZER_SPEC == "sd-ngram-v1"
    assert subword_key([BEGIN, ord("c"), ord("a")]) == 0xB73967F8074FF07C


def test_cat_gives_the_five_subwords_the_spec_lists_in_its_order() -> None:
    settings = FeaturizerSettings(subword_buckets=1 << 30, subword_min=3, subword_max=4)
    c, a, t = map(ord, "cat")
    expected = [subword_key(v) % (1 << 30) + 7 for v in
                ([BEGIN, c, a], [c, a, t], [a, t, END], [BEGIN, c, a, t], [c, a, t, END])]
    owner, rows = subword_rows(["cat"], settings, vocab_size=7)
    assert rows.tolist() == expected and owner.tolist() == [0] * 5
    featurizer = empty_featurizer(settings)  # every word is unknown: "cat" has its five subword rows
    occ = featurizer.occurrences(["Cat"])
    assert occ.rows.tolist() == [r - 7 for r in expected]
    assert featurizer.kernel().featurize(["Cat"]).rows.tolist() == [r - 7 for r in expected]


def test_subwords_of_astral_and_surrogate_code_points_are_their_code_points() -> None:
    settings = FeaturizerSettings(subword_buckets=1 << 30, subword_min=2, subword_max=2)
    _, rows = subword_rows(["𝔣\ud800"], settings, vocab_size=0)
    assert rows.tolist() == [subword_key(v) % (1 << 30) for v in
                             ([BEGIN, 0x1D523], [0x1D523, 0xD800], [0xD800, END])]


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"subword_buckets": -1}, "subword_buckets must be in"),
    ({"subword_buckets": 10, "subword_min": 1}, "subword range"),
    ({"subword_buckets": 10, "subword_min": 5, "subword_max": 4}, "subword range"),
    ({"subword_buckets": 10, "subword_max": 17}, "subword range"),
    ({"subword_buckets": 10, "subword_scope": "rare"}, "subword_scope must be one of"),
])
def test_bad_subword_settings_are_refused(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(FeaturizerError, match=fragment):
        FeaturizerSettings(**changes)


def test_v1_settings_record_what_they_recorded_before_v2() -> None:
    v1 = FeaturizerSettings()
    assert v1.spec == FEATURIZER_SPEC and v1.table_rows(100) == 100
    assert set(v1.to_dict()) == {"lowercase", "token_pattern", "ngram_min", "ngram_max"}
    v2 = FeaturizerSettings(subword_buckets=500, subword_scope="all")
    assert v2.spec == SUBWORD_SPEC and v2.table_rows(100) == 600
    assert FeaturizerSettings.from_dict(v2.to_dict()) == v2
    assert FeaturizerSpec.of(v2).settings() == v2 and FeaturizerSpec.of(v1).settings() == v1


def test_a_manifest_must_name_the_spec_its_settings_follow() -> None:
    old = {"lowercase": True, "token_pattern": r"(?u)\b\w\w+\b", "ngram_min": 1, "ngram_max": 4}
    assert FeaturizerSpec(**old).spec == FEATURIZER_SPEC  # written before the spec was recorded
    with pytest.raises(ValueError, match="this code implements sd-ngram-v1 and sd-ngram-v2"):
        FeaturizerSpec(**old, spec="sd-ngram-v3")
    with pytest.raises(ValueError, match="spec 'sd-ngram-v2' with settings of 'sd-ngram-v1'"):
        FeaturizerSpec(**old, spec=SUBWORD_SPEC)
    with pytest.raises(ValueError, match="spec 'sd-ngram-v1' with settings of 'sd-ngram-v2'"):
        FeaturizerSpec(**old, subword_buckets=10, subword_min=3, subword_max=5, subword_scope="unknown")
    with pytest.raises(ValueError, match="subword range"):
        FeaturizerSpec(**old, spec=SUBWORD_SPEC, subword_buckets=10, subword_min=9, subword_max=5)


def test_a_subword_vocabulary_must_number_its_rows_from_zero() -> None:
    with pytest.raises(FeaturizerError, match=r"rows must be 0\.\.size - 1"):
        NgramFeaturizer(FeaturizerSettings(subword_buckets=5), ["aa"], np.array([3], dtype=np.uint64),
                        np.array([4], dtype=np.int64))


def test_coverage_leaves_the_subword_rows_out() -> None:
    found, total, subwords = np.array([5, 3, 2]), np.array([4, 0, 8]), np.array([1, 3, 0])
    assert coverage_of(found, total, subwords).tolist() == [1.0, 0.0, 0.25]
    occ = empty_featurizer(FeaturizerSettings(subword_buckets=97)).occurrences(["unknown words only", ""])
    assert occ.subwords is not None and occ.found.tolist() == [occ.subwords[0], 0] and occ.subwords[0] > 0
    assert occ.coverage.tolist() == [0.0, 0.0]
    assert occ.words_found.tolist() == [0, 0]


class ArrayRows:
    def __init__(self, table: np.ndarray) -> None:
        self.table = table

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.table.shape)

    def rows(self, start: int, end: int) -> np.ndarray:
        return self.table[start:end]


def test_a_pruned_export_keeps_every_subword_row() -> None:
    table = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)  # 5 vocab rows, 3 buckets
    kept = KeptRows(ArrayRows(table), keep=3, vocab_size=5, tail=3)
    assert kept.shape == (6, 2)
    for start, end in [(0, 6), (0, 2), (2, 4), (3, 6), (4, 5)]:
        assert kept.rows(start, end)[:, 0].tolist() == [0, 1, 2, 5, 6, 7][start:end]


def _run(vocab: dict[str, Any]) -> Any:
    return config_from_dict({"name": "k", "data": {"source": "mr"}, "vocab": vocab}, "k")


def test_subword_config_keys_change_the_features_but_not_the_vocabulary() -> None:
    plain, subwords = _run({}), _run({"subword_buckets": 1000, "subword_scope": "all"})
    assert subwords.vocab.featurizer_settings() == FeaturizerSettings(subword_buckets=1000, subword_scope="all")
    assert vocab_key(plain) == vocab_key(subwords)
    assert features_key(plain) == vocab_key(plain) != features_key(subwords)
    assert features_key(_run({"subword_buckets": 1000, "subword_max": 6})) != features_key(
        _run({"subword_buckets": 1000}))


def test_bad_subword_config_values_are_refused_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="subword range"):
        _run({"subword_buckets": 10, "subword_min": 1})
    with pytest.raises(ConfigError, match=r"vocab\.subword_scope"):
        _run({"subword_scope": "rare"})
