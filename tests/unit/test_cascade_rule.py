"""The cascade's deferral rule (sdcore.cascade) and its offline calibration helpers (training.stages.cascade)."""

from __future__ import annotations

import numpy as np
import pytest

from sdcore.cascade import CascadePolicy, calibrated, confidence, defer_mask
from training.stages.cascade import Answers, cascade_accuracy, fit_temperature, operating_point

PROBS = np.array([[0.95, 0.05], [0.55, 0.45], [0.2, 0.8], [0.5, 0.5], [0.01, 0.99]])
COVERAGE = np.array([0.9, 0.9, 0.05, 0.6, 0.0])


def test_thresholds_at_zero_never_defer() -> None:
    assert not defer_mask(PROBS, COVERAGE, CascadePolicy()).any()


def test_confidence_threshold_one_defers_everything() -> None:
    assert defer_mask(PROBS, COVERAGE, CascadePolicy(confidence_threshold=1.0)).all()


def test_low_confidence_texts_and_only_they_are_deferred() -> None:
    mask = defer_mask(PROBS, COVERAGE, CascadePolicy(confidence_threshold=0.7))
    assert mask.tolist() == [False, True, False, True, False]


def test_low_coverage_texts_and_only_they_are_deferred() -> None:
    mask = defer_mask(PROBS, COVERAGE, CascadePolicy(coverage_threshold=0.1))
    assert mask.tolist() == [False, False, True, False, True]


def test_either_reason_defers() -> None:
    mask = defer_mask(PROBS, COVERAGE, CascadePolicy(confidence_threshold=0.7, coverage_threshold=0.1))
    assert mask.tolist() == [False, True, True, True, True]


def test_temperature_keeps_the_argmax_and_softens() -> None:
    soft = calibrated(PROBS, 3.0)
    assert (soft.argmax(1) == PROBS.argmax(1)).all()
    assert (confidence(PROBS, 3.0) <= PROBS.max(1) + 1e-12).all()
    np.testing.assert_allclose(calibrated(PROBS, 1.0), PROBS, atol=1e-9)


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"confidence_threshold": 1.5}, {"coverage_threshold": -0.1}])
def test_policy_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CascadePolicy(**bad)


def test_extreme_cascades_are_the_student_and_the_teacher() -> None:
    labels = np.array([0, 0, 1, 1, 0])
    teacher = np.array([0, 0, 1, 1, 0])  # always right here
    answers = Answers(PROBS, COVERAGE, teacher, labels)
    student_acc = float((PROBS.argmax(1) == labels).mean())
    assert cascade_accuracy(answers, CascadePolicy()) == (student_acc, 0.0)
    assert cascade_accuracy(answers, CascadePolicy(confidence_threshold=1.0)) == (1.0, 1.0)


def test_fit_temperature_softens_an_overconfident_student() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    right = rng.random(400) < 0.7  # 70% accurate but always 99% sure
    pred = np.where(right, labels, 1 - labels)
    probs = np.where(pred[:, None] == np.arange(2)[None, :], 0.99, 0.01)
    assert fit_temperature(probs, labels) > 1.5


def test_operating_point_is_the_cheapest_within_tolerance() -> None:
    curve = [
        {"dev_acc": 0.80, "teacher_share": 0.0},
        {"dev_acc": 0.845, "teacher_share": 0.2},
        {"dev_acc": 0.85, "teacher_share": 0.5},
        {"dev_acc": 0.86, "teacher_share": 1.0},
    ]
    assert operating_point(curve, 0.85, 0.005)["teacher_share"] == 0.2
    assert operating_point(curve, 0.95, 0.005)["teacher_share"] == 1.0  # none close: the most accurate
