"""Fitting the learned cascade router on the corpus slice distillation never saw (``training.stages.holdout``).

On the slice, the exported student (the serving runtime, so the features are the service's) answers
every text, and the teacher's stored logits say what the teacher would answer. Then:

1. the temperature is fitted on the slice, against the teacher's labels (``fit_temperature``);
2. a logistic regression (scikit-learn) learns P(student's label != teacher's) from ``FEATURES``;
   its standardisation and coefficients are what ``router.json`` stores (``sdcore.router``);
3. the threshold: with the slice's texts ordered by that probability, the smallest teacher share whose
   remaining disagreement (texts the student keeps and gets "wrong" against the teacher, over all
   texts) is at most ``router_gap``, capped at ``router_max_share``; then (``cap_on_traffic``) the cap
   is applied on dev, texts like the traffic, where the teacher's share is paid. The disagreement left on kept
   texts bounds the cascade's loss against the teacher from above (a kept text the student and the
   teacher disagree on costs at most one teacher-correct answer), so the gap is a conservative target.

As a check, a small gradient-boosted tree (HistGradientBoosting) is fitted on half the slice beside a
logistic regression, both scored on the other half (ROC AUC); the report gives both. Only the logistic
regression is stored: it is a few numbers, applied with numpy in the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sdcore.cascade import calibrated
from sdcore.router import FEATURES, CascadeRouter, StudentSignals, router_features

MIN_SLICE_TEXTS = 20  # fewer texts than this teach no router


class RouterFitError(ValueError):
    """The slice cannot teach a router (too few texts, or no disagreement to learn)."""


@dataclass(frozen=True)
class SliceAnswers:
    """The student's signals on the slice, and the teacher's labels there."""

    signals: StudentSignals
    teacher_pred: np.ndarray

    @property
    def disagrees(self) -> np.ndarray:
        return np.asarray(self.signals.probabilities.argmax(axis=1) != self.teacher_pred, dtype=bool)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` (a 1-D grid search: robust,
    no solver). The grid cascade fits it on dev against the gold labels, the router on its slice
    against the teacher's."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    rows = np.arange(labels.size)
    nll = [-np.log(np.clip(calibrated(probabilities, t)[rows, labels], 1e-12, None)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def pick_threshold(scores: np.ndarray, disagrees: np.ndarray, gap: float, max_share: float) -> tuple[float, float]:
    """(threshold, teacher share): defer ``scores >= threshold``; see the module docstring, step 3."""
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    # left[k]: disagreements among the texts kept when the k highest scores are deferred, over n.
    left = (disagrees.sum() - np.concatenate(([0], np.cumsum(disagrees[order])))) / n
    limit = int(np.floor(max_share * n + 1e-9))
    within = np.flatnonzero(left[: limit + 1] <= gap)
    k = int(within[0]) if within.size else limit
    if k == 0:
        return 1.0, 0.0  # nothing deferred
    threshold = float(scores[order[k - 1]])
    share = float((scores >= threshold).mean())  # ties at the threshold go to the teacher too
    return threshold, share


def share_threshold(scores: np.ndarray, share: float) -> float:
    """The lowest threshold that defers at most ``share`` of these texts (``scores >= threshold``, ties
    included); 1.0 defers none."""
    limit = int(np.floor(share * scores.size + 1e-9))
    if limit == 0 or scores.size == 0:
        return 1.0
    ordered = np.sort(scores)[::-1]
    threshold = float(ordered[limit - 1])
    if (scores >= threshold).sum() > limit:  # ties at the cut: step just above them
        threshold = float(np.nextafter(threshold, 2.0))
    return min(threshold, 1.0)


def cap_on_traffic(router: CascadeRouter, signals: StudentSignals, max_share: float) -> CascadeRouter:
    """The share cap applied where the share is paid: on texts like the traffic (the labeled dev split),
    not on the corpus slice, whose texts can be unlike it (IMDB questions for TREC). The slice's gap
    target still decides when it is met within the cap there; the threshold is then raised if it would
    defer more than ``max_share`` of dev. When the cap set the slice's threshold (the gap target out of
    reach), dev's cap alone sets it: the slice's share says nothing about the traffic's."""
    fit = dict(router.fit)
    capped = share_threshold(router.disagreement(signals), max_share)
    gap_met = fit["slice_disagreement_left"] <= fit["target_gap"] + 1e-12
    threshold = max(router.threshold, capped) if gap_met else capped
    fit.update({"slice_threshold": router.threshold, "traffic_cap_threshold": capped,
                "threshold_from": ("slice gap" if threshold == router.threshold else "share cap on dev"),
                "cap_texts": int(signals.probabilities.shape[0])})
    return router.model_copy(update={"threshold": threshold, "fit": fit})


def _auc_check(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float | None]:
    """ROC AUC of a logistic regression and of a HistGradientBoosting model, fitted on one half."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    half = np.random.default_rng(seed).random(y.size) < 0.5
    if len(set(y[half])) < 2 or len(set(y[~half])) < 2:
        return {"lr_auc": None, "hgb_auc": None}
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[half], y[half])
    hgb = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, random_state=seed).fit(x[half], y[half])
    return {"lr_auc": float(roc_auc_score(y[~half], lr.predict_proba(x[~half])[:, 1])),
            "hgb_auc": float(roc_auc_score(y[~half], hgb.predict_proba(x[~half])[:, 1]))}


def fit_router(answers: SliceAnswers, gap: float, max_share: float, seed: int = 13) -> CascadeRouter:
    """The router for one student, fitted on its slice."""
    from sklearn.linear_model import LogisticRegression

    y = answers.disagrees
    n = int(y.size)
    if n < MIN_SLICE_TEXTS or y.all() or not y.any():
        raise RouterFitError(f"the router slice has {n} texts, {int(y.sum())} of them disagreements: "
                         "too few to fit a router (raise distill.router_holdout)")
    temperature = fit_temperature(answers.signals.probabilities, answers.teacher_pred)
    x = router_features(answers.signals, temperature)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-12] = 1.0  # a constant feature (e.g. coverage 1 everywhere) gets weight 0 anyway
    model = LogisticRegression(max_iter=1000).fit((x - mean) / scale, y)
    router = CascadeRouter(temperature=temperature, mean=mean.tolist(), scale=scale.tolist(),
                           coef=model.coef_[0].tolist(), intercept=float(model.intercept_[0]), threshold=1.0)
    scores = router.disagreement(answers.signals)
    threshold, share = pick_threshold(scores, y, gap, max_share)
    deferred = scores >= threshold
    fit: dict[str, Any] = {
        "slice_texts": n,
        "slice_disagreement": float(y.mean()),
        "slice_teacher_share": share,
        "slice_disagreement_left": float((y & ~deferred).sum() / n),
        "target_gap": gap,
        "max_share": max_share,
        **_auc_check(x, y, seed),
        "coefficients": dict(zip(FEATURES, (float(c) for c in model.coef_[0]), strict=True)),
    }
    return router.model_copy(update={"threshold": threshold, "fit": fit})
