"""service/answers.py: how top_k, threshold and raw shape one answer (the HTTP routes and sd predict)."""

from __future__ import annotations

import numpy as np
import pytest

from service.answers import AnswerOptions, answer_rows, kept_scores
from service.runtimes.contract import Predictions
from service.runtimes.onnx_session import softmax

LABELS = ["a", "b", "c"]
ROW = np.array([0.25, 0.5, 0.25], dtype=np.float32)


def test_no_option_keeps_every_label_in_the_models_order() -> None:
    assert list(kept_scores(ROW, LABELS, AnswerOptions())) == LABELS


def test_top_k_and_threshold_keep_the_best_first_with_ties_in_the_models_order() -> None:
    assert list(kept_scores(ROW, LABELS, AnswerOptions(top_k=3))) == ["b", "a", "c"]
    assert list(kept_scores(ROW, LABELS, AnswerOptions(top_k=2))) == ["b", "a"]
    assert kept_scores(ROW, LABELS, AnswerOptions(threshold=0.25)) == {"b": 0.5, "a": 0.25, "c": 0.25}
    assert kept_scores(ROW, LABELS, AnswerOptions(threshold=0.3)) == {"b": 0.5}
    assert kept_scores(ROW, LABELS, AnswerOptions(threshold=0.9)) == {}
    assert kept_scores(ROW, LABELS, AnswerOptions(top_k=1, threshold=0.9)) == {}


@pytest.mark.parametrize("kwargs", [{"top_k": 0}, {"top_k": True}, {"threshold": -0.01}, {"threshold": 1.01},
                                    {"threshold": float("nan")}])
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AnswerOptions(**kwargs)  # type: ignore[arg-type]


def test_rows_carry_the_best_label_logits_and_the_students_coverage() -> None:
    logits = np.array([[0.0, 2.0, -1.0], [3.0, 0.0, 0.0]], dtype=np.float32)
    out = Predictions(softmax(logits), np.array([0.5, 1.0]), np.array([3, 4]), logits)
    rows = answer_rows(out, LABELS, AnswerOptions(top_k=1, raw=True))
    assert [r["label"] for r in rows] == ["b", "a"] and [list(r["scores"]) for r in rows] == [["b"], ["a"]]
    assert rows[0]["logits"] == {"a": 0.0, "b": 2.0, "c": -1.0}
    assert [(r["coverage"], r["ngrams_found"]) for r in rows] == [(0.5, 3), (1.0, 4)]
    teacher = answer_rows(Predictions(softmax(logits)), LABELS, AnswerOptions())
    assert "coverage" not in teacher[0] and "logits" not in teacher[0]
    with pytest.raises(ValueError, match="logits"):
        answer_rows(Predictions(softmax(logits)), LABELS, AnswerOptions(raw=True))
