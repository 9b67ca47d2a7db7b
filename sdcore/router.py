"""The learned cascade router, applied alike by the offline evaluation (training) and the service.

The grid rule of ``sdcore.cascade`` defers on two thresholds picked on dev. The router instead predicts,
from what the student knows about a text, the probability that the student's label differs from the
teacher's, and defers the texts where that probability is at least its threshold. It is a logistic
regression fitted by scikit-learn in training (``training.stages.router``) on a slice of the transfer corpus
the student never saw in distillation (``training.stages.holdout``); here it is only its coefficients, applied
with numpy, so serving needs no scikit-learn.

Features (``FEATURES``), from the student's answer alone:

- ``max_prob``: the calibrated max probability (student probabilities at the router's temperature,
  fitted on the slice against the teacher's labels);
- ``margin``: the calibrated top-1 minus top-2 probability;
- ``entropy``: of the calibrated distribution, over log(labels) so it is in [0, 1] for any label count;
- ``coverage``: the share of the text's n-grams in the vocabulary;
- ``log_found``: log(1 + n-grams found in the vocabulary);
- ``log_length``: log(1 + n-grams of the text), the text's length.

The router lives in ``router.json`` next to the manifest, which lists it with its size and sha256
(``StudentManifest.router``); ``load_router`` verifies both and names the file when it is damaged.
numpy and pydantic only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sdcore.cascade import CascadePolicy, calibrated, defer_mask
from sdcore.model_format import ModelFormatError, StudentManifest, verify_file

ROUTER_FILE = "router.json"
ROUTER_FORMAT: Literal["sd-cascade-router/1"] = "sd-cascade-router/1"
FEATURES = ("max_prob", "margin", "entropy", "coverage", "log_found", "log_length")
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class StudentSignals:
    """What the student's answer on a batch says about each text: the router's inputs."""

    probabilities: np.ndarray  # [n, labels], the student's softmax
    coverage: np.ndarray  # [n] share of n-grams in the vocabulary
    ngrams_found: np.ndarray  # [n]
    ngrams_total: np.ndarray  # [n] all n-grams of the text, in the vocabulary or not

    def __post_init__(self) -> None:
        n = self.probabilities.shape[0]
        if not (self.coverage.shape[0] == self.ngrams_found.shape[0] == self.ngrams_total.shape[0] == n):
            raise ValueError("student signals of different lengths")


def router_features(signals: StudentSignals, temperature: float) -> FloatArray:
    """[n, len(FEATURES)] float64, in ``FEATURES`` order."""
    probs = calibrated(signals.probabilities, temperature)
    top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=1) / np.log(probs.shape[1])
    return np.column_stack([
        top2[:, 0],
        top2[:, 0] - top2[:, 1],
        entropy,
        np.asarray(signals.coverage, dtype=np.float64),
        np.log1p(np.asarray(signals.ngrams_found, dtype=np.float64)),
        np.log1p(np.asarray(signals.ngrams_total, dtype=np.float64)),
    ])


class CascadeRouter(BaseModel):
    """``router.json``: a standardised logistic regression over ``FEATURES`` and its deferral threshold."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["sd-cascade-router/1"] = ROUTER_FORMAT
    model: Literal["logistic_regression"] = "logistic_regression"
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    temperature: float = Field(gt=0.0)
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    threshold: float = Field(ge=0.0, le=1.0)  # defer when P(student != teacher) >= this
    fit: dict[str, Any] = Field(default_factory=dict)  # how it was fitted, for the report and /v1/models

    @model_validator(mode="after")
    def _shapes(self) -> CascadeRouter:
        if self.features != list(FEATURES):
            raise ValueError(f"features are {self.features}; this code computes {list(FEATURES)}")
        width = len(FEATURES)
        if not (len(self.mean) == len(self.scale) == len(self.coef) == width):
            raise ValueError(f"mean, scale and coef need {width} values each")
        if not all(s > 0 for s in self.scale) or not np.all(np.isfinite([*self.mean, *self.coef, self.intercept])):
            raise ValueError("scales must be > 0 and every coefficient finite")
        return self

    def disagreement(self, signals: StudentSignals) -> FloatArray:
        """The predicted probability that the student's label differs from the teacher's."""
        z = (router_features(signals, self.temperature) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = z @ np.asarray(self.coef) + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0)))


@dataclass(frozen=True)
class RouterPolicy:
    """Defer where the router's disagreement score is at least ``threshold`` (its own, unless overridden)."""

    router: CascadeRouter
    threshold: float

    @classmethod
    def of(cls, router: CascadeRouter) -> RouterPolicy:
        return cls(router, router.threshold)

    def to_dict(self) -> dict[str, float]:
        return {"router_threshold": self.threshold, "temperature": self.router.temperature}


DeferralRule = CascadePolicy | RouterPolicy


def defer_texts(rule: DeferralRule, signals: StudentSignals) -> BoolArray:
    """The one decision of the cascade: True where the text goes on to the teacher."""
    if isinstance(rule, RouterPolicy):
        return np.asarray(rule.router.disagreement(signals) >= rule.threshold, dtype=bool)
    return defer_mask(signals.probabilities, signals.coverage, rule)


def load_router(root: Path, manifest: StudentManifest) -> CascadeRouter | None:
    """The router a student's manifest lists (None when it lists none); size and sha256 are checked."""
    if manifest.router is None:
        return None
    path = verify_file(root, manifest.router, checksum=True)
    try:
        return CascadeRouter.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        raise ModelFormatError(path, f"the cascade router is invalid ({exc})",
                               hint="rerun the cascade step (`sd run --step cascade -c CONFIG`)") from exc
