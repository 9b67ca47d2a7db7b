"""Explanations (service/runtimes/explain.py) are exact: each n-gram's reported effect is the probability change
of re-running the model on the text's n-gram rows with that n-gram's occurrences removed, computed here
independently (the numpy reference featurizer, the shards read with numpy, a fresh ONNX session)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sdcore.featurizer import keys_of_ngram_strings
from sdcore.model_format import HEAD_FILE
from service.runtimes.explain import MAX_TOP_N, explain, token_spans
from service.runtimes.student import StudentRuntime
from training.data.task_data import TaskData


class Reference:
    """The student recomputed from its files: rows -> mean of float32 rows -> head -> softmax."""

    def __init__(self, root: Path, runtime: StudentRuntime) -> None:
        self.featurizer = runtime.featurizer
        self.table = np.concatenate([np.asarray(s, dtype=np.float32) for s in runtime.table.shards])
        self.head = ort.InferenceSession(str(root / HEAD_FILE), providers=["CPUExecutionProvider"])

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        pooled = self.table[rows].mean(axis=0) if rows.size else np.zeros(self.table.shape[1], np.float32)
        (logits,) = self.head.run(None, {self.head.get_inputs()[0].name: pooled[None, :].astype(np.float32)})
        z = np.exp(logits[0] - logits[0].max())
        return np.asarray(z / z.sum())

    def row_of(self, ngram: str) -> int:
        key = keys_of_ngram_strings([ngram], self.featurizer.word_ids)
        pos = int(np.searchsorted(self.featurizer.sorted_keys, key)[0])
        assert self.featurizer.sorted_keys[pos] == key[0], f"{ngram!r} is not in the vocabulary"
        return int(self.featurizer.key_rows[pos])


@pytest.fixture(scope="module")
def runtime(tiny_student: Path) -> StudentRuntime:
    return StudentRuntime.load(tiny_student)


def texts_to_check(mr_small: TaskData) -> list[str]:
    return [
        *mr_small.test.texts[:10],
        "a good film , a good cast , and a good time : good good good",  # repeats, counted and removed together
        "zzqx qqvvk",  # no n-gram in the vocabulary
        "film",  # one n-gram: leaving it out pools to zeros
        "İ film İs GOOD",  # lowercasing lengthens the text: spans must map back
    ]


def test_each_delta_is_the_change_from_rerunning_without_that_ngram(
    runtime: StudentRuntime, tiny_student: Path, mr_small: TaskData
) -> None:
    ref = Reference(tiny_student, runtime)
    texts = texts_to_check(mr_small)
    explained = explain(runtime, texts, top_n=MAX_TOP_N)
    checked = 0
    for text, e, rows in zip(texts, explained, runtime.featurizer.rows_per_text(texts), strict=True):
        full = ref.probabilities(rows)
        np.testing.assert_allclose(e.probabilities, full, atol=1e-5)
        np.testing.assert_allclose(e.probabilities, runtime.predict([text]).probabilities[0], atol=1e-5)
        assert e.ngrams_found == rows.size and e.distinct_ngrams == np.unique(rows).size
        assert len(e.effects) == min(MAX_TOP_N, e.distinct_ngrams)
        for g in e.effects:
            row = ref.row_of(g.ngram)
            assert g.count == int((rows == row).sum())
            np.testing.assert_allclose(g.deltas, full - ref.probabilities(rows[rows != row]), atol=1e-5)
            checked += 1
        sizes = [abs(float(g.deltas[e.predicted])) for g in e.effects]
        assert sizes == sorted(sizes, reverse=True)
    assert checked > 100
    assert {g.ngram: g.count for g in explained[-4].effects}["good"] == 6
    assert explained[-3].effects == [] and explained[-3].coverage == 0.0
    assert [g.ngram for g in explained[-2].effects] == ["film"]


def test_spans_point_at_each_occurrence_in_the_original_text(runtime: StudentRuntime, mr_small: TaskData) -> None:
    pattern = runtime.featurizer.settings.token_pattern
    for text, e in zip(texts_to_check(mr_small), explain(runtime, texts_to_check(mr_small), top_n=MAX_TOP_N),
                       strict=True):
        for g in e.effects:
            assert len(g.spans) == g.count
            for start, end in g.spans:
                assert " ".join(re.findall(pattern, text[start:end].lower())) == g.ngram, (text, g.ngram)
    unicode_case = explain(runtime, ["İ film İs GOOD"], top_n=MAX_TOP_N)[0]
    spans = {g.ngram: g.spans for g in unicode_case.effects}
    assert spans.get("good") == [(10, 14)] and spans.get("film") == [(2, 6)]


def test_token_spans_are_the_featurizers_tokens(runtime: StudentRuntime, mr_small: TaskData) -> None:
    for text in [*mr_small.train.texts[:200], "Ünïcode ΣΑΣ İİ x_y 12 a"]:
        assert token_spans(text, runtime.featurizer.settings).tokens == runtime.featurizer.tokenize(text)


def test_top_n_is_bounded(runtime: StudentRuntime) -> None:
    assert len(explain(runtime, ["a good film with a good cast"], top_n=2)[0].effects) == 2
    for bad in (0, MAX_TOP_N + 1):
        with pytest.raises(ValueError, match="top_n"):
            explain(runtime, ["a film"], top_n=bad)


def test_a_request_cut_into_several_head_calls_answers_the_same(
    runtime: StudentRuntime, mr_small: TaskData, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = texts_to_check(mr_small)
    whole = explain(runtime, texts, top_n=MAX_TOP_N)
    monkeypatch.setattr("service.runtimes.explain.HEAD_ROWS", 7)
    for one, cut in zip(whole, explain(runtime, texts, top_n=MAX_TOP_N), strict=True):
        np.testing.assert_allclose(cut.probabilities, one.probabilities, atol=1e-6)
        assert [g.ngram for g in cut.effects] == [g.ngram for g in one.effects]
        for a, b in zip(cut.effects, one.effects, strict=True):
            np.testing.assert_allclose(a.deltas, b.deltas, atol=1e-6)
