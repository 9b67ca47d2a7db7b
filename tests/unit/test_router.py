"""The learned cascade router: its features and numpy scoring (sdcore.router), its fit and threshold
(training.stages.router), and the one deferral function both cascade rules go through."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from sdcore.cascade import CascadePolicy, defer_mask
from sdcore.router import FEATURES, CascadeRouter, RouterPolicy, StudentSignals, defer_texts, router_features
from training.stages.router import SliceAnswers, cap_on_traffic, fit_router, pick_threshold, share_threshold


def synthetic_slice(n: int = 3000, seed: int = 0) -> SliceAnswers:
    """A student that disagrees with the teacher more when it is unsure and when coverage is low."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.5, 1.0, n)
    probs = np.column_stack([p, 1 - p])
    coverage = rng.uniform(0.0, 1.0, n)
    total = rng.integers(4, 80, n)
    found = np.round(coverage * total).astype(np.int64)
    chance = 1 / (1 + np.exp(-(-1.0 - 8 * (p - 0.75) - 2 * (coverage - 0.5))))
    teacher = np.where(rng.random(n) < chance, 1, 0)  # the student's label is 0 everywhere
    return SliceAnswers(StudentSignals(probs, coverage, found, total), teacher)


def test_features_follow_their_definitions() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    signals = StudentSignals(probs, np.array([0.5, 0.0]), np.array([3, 0]), np.array([6, 9]))
    x = router_features(signals, temperature=1.0)
    assert x.shape == (2, len(FEATURES))
    assert x[0, :2] == pytest.approx([0.7, 0.5])
    assert x[1, 2] == pytest.approx(1.0)  # a uniform answer has entropy log(K), scaled to 1
    assert np.allclose(x[:, 3:], [[0.5, np.log(4), np.log(7)], [0.0, 0.0, np.log(10)]])


def test_the_router_learns_where_the_student_disagrees_and_meets_its_gap_on_the_slice() -> None:
    answers = synthetic_slice()
    router = fit_router(answers, gap=0.1, max_share=0.6)
    fit = router.fit
    scores = router.disagreement(answers.signals)
    deferred = defer_texts(RouterPolicy.of(router), answers.signals)
    assert deferred.mean() == pytest.approx(fit["slice_teacher_share"])
    left = (answers.disagrees & ~deferred).mean()
    assert left == pytest.approx(fit["slice_disagreement_left"]) and left <= 0.1
    assert fit["slice_teacher_share"] < 0.6  # the gap, not the cap, set it
    assert fit["lr_auc"] > 0.7 and fit["hgb_auc"] > 0.6
    # more confident -> less disagreement, as the data were made
    assert router.fit["coefficients"]["max_prob"] < 0
    assert scores[deferred].min() >= router.threshold > scores[~deferred].max()


def test_the_share_cap_wins_over_an_unreachable_gap() -> None:
    answers = synthetic_slice()
    router = fit_router(answers, gap=0.0, max_share=0.2)
    assert router.fit["slice_teacher_share"] == pytest.approx(0.2, abs=0.01)


def test_pick_threshold_takes_the_smallest_share_within_the_gap() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.05])
    disagrees = np.array([True, True, False, True, False])
    assert pick_threshold(scores, disagrees, gap=0.2, max_share=1.0) == (0.8, 0.4)  # 1 of 5 left
    assert pick_threshold(scores, disagrees, gap=0.0, max_share=1.0) == (0.1, 0.8)
    assert pick_threshold(scores, disagrees, gap=0.6, max_share=1.0) == (1.0, 0.0)  # nothing to defer
    assert pick_threshold(scores, disagrees, gap=0.0, max_share=0.2) == (0.9, 0.2)


def test_the_grid_rule_goes_through_the_same_function() -> None:
    answers = synthetic_slice(200)
    policy = CascadePolicy(1.3, 0.8, 0.2)
    s = answers.signals
    assert np.array_equal(defer_texts(policy, s), defer_mask(s.probabilities, s.coverage, policy))


def test_a_router_file_with_the_wrong_shape_is_refused() -> None:
    good = fit_router(synthetic_slice(500), gap=0.05, max_share=0.3).model_dump()
    assert CascadeRouter.model_validate(good) == CascadeRouter.model_validate(good)
    for bad, fragment in (({"coef": good["coef"][:-1]}, "6 values"), ({"scale": [0.0] * 6}, "scales"),
                          ({"features": ["max_prob"]}, "features are"), ({"threshold": 1.5}, "less than")):
        with pytest.raises(ValidationError, match=fragment):
            CascadeRouter.model_validate({**good, **bad})


def test_share_threshold_defers_at_most_the_share_ties_included() -> None:
    scores = np.array([0.9, 0.8, 0.8, 0.4, 0.1])
    assert share_threshold(scores, 0.2) == 0.9  # 1 of 5
    over = share_threshold(scores, 0.4)  # the 2nd is tied with the 3rd: only the 1st can go
    assert (scores >= over).sum() == 1
    assert share_threshold(scores, 0.6) == 0.8
    assert share_threshold(scores, 0.0) == 1.0 and share_threshold(np.array([]), 0.3) == 1.0


def test_the_cap_is_paid_on_the_traffic_not_on_the_slice() -> None:
    answers = synthetic_slice()
    # The gap is out of reach: the slice's cap set its threshold; dev (texts of another kind: here
    # far more confident ones) gets the cap's share itself.
    router = fit_router(answers, gap=0.0, max_share=0.3)
    rng = np.random.default_rng(1)
    p = rng.uniform(0.85, 1.0, 1000)
    n = p.size
    dev = StudentSignals(np.column_stack([p, 1 - p]), rng.uniform(0.5, 1.0, n), np.full(n, 20), np.full(n, 25))
    assert defer_texts(RouterPolicy.of(router), dev).mean() < 0.2  # the slice's threshold defers too few here
    capped = cap_on_traffic(router, dev, 0.3)
    assert defer_texts(RouterPolicy.of(capped), dev).mean() == pytest.approx(0.3, abs=0.002)
    assert capped.fit["threshold_from"] == "share cap on dev" and capped.fit["slice_threshold"] == router.threshold
    # The gap met on the slice within the cap: its threshold stays unless dev would defer over the cap.
    met = fit_router(answers, gap=0.1, max_share=0.6)
    assert cap_on_traffic(met, dev, 0.6).threshold == met.threshold
    unsure = StudentSignals(np.full((n, 2), 0.5), dev.coverage, dev.ngrams_found, dev.ngrams_total)
    tight = cap_on_traffic(met, unsure, 0.1)
    assert defer_texts(RouterPolicy.of(tight), unsure).mean() <= 0.1
