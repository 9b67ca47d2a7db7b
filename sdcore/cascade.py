"""The cascade rule, shared by the offline calibration (training) and the cascade route (serving).

The student answers every text; a text goes on to the teacher when the student's calibrated confidence
or its n-gram coverage is below a threshold. These are the student's known weak spots (Ye et al. 2022,
section 6: out-of-vocabulary inputs, context beyond four words). ``CascadeSection`` is the typed
section the calibration stores in a student's manifest; which thresholds a serving request runs under
is ``service.cascade_policy``. numpy and pydantic only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CascadePolicy:
    temperature: float = 1.0  # student logits are divided by it before the softmax (calibration)
    confidence_threshold: float = 0.0  # defer when calibrated max probability < this
    coverage_threshold: float = 0.0  # defer when n-gram coverage < this

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1], got {self.confidence_threshold}")
        if not 0.0 <= self.coverage_threshold <= 1.0:
            raise ValueError(f"coverage_threshold must be in [0, 1], got {self.coverage_threshold}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)



class OperatingPoint(BaseModel):
    """The thresholds chosen on dev, with what the cascade scored there."""

    model_config = ConfigDict(extra="forbid")
    confidence_threshold: float = Field(ge=0.0, le=1.0)
    coverage_threshold: float = Field(ge=0.0, le=1.0)
    dev_acc: float | None = None
    teacher_share: float | None = None


class CascadeSection(BaseModel):
    """The ``cascade`` section of a student manifest (written by ``training.stages.cascade``)."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, gt=0.0)
    tolerance: float | None = None
    teacher_dev_acc: float | None = None
    operating_point: OperatingPoint
    curve: list[dict[str, float]] = Field(default_factory=list)  # every point scored on dev

    def policy(self) -> CascadePolicy:
        point = self.operating_point
        return CascadePolicy(self.temperature, point.confidence_threshold, point.coverage_threshold)


def calibrated(probabilities: np.ndarray, temperature: float) -> FloatArray:
    """softmax(log p / T): the student's probabilities at another temperature."""
    logits = np.log(np.clip(probabilities.astype(np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def confidence(probabilities: np.ndarray, temperature: float) -> FloatArray:
    return calibrated(probabilities, temperature).max(axis=1)


def defer_mask(probabilities: np.ndarray, coverage: np.ndarray, policy: CascadePolicy) -> npt.NDArray[np.bool_]:
    """True where the text goes on to the teacher.

    A threshold of 0 never defers; a confidence threshold of 1 defers every text (a max probability
    can reach 1.0 only in float rounding, so 1 is treated as "always").
    """
    conf = confidence(probabilities, policy.temperature)
    low_conf = conf < policy.confidence_threshold if policy.confidence_threshold < 1.0 else np.ones(conf.size, bool)
    return np.asarray(low_conf | (coverage < policy.coverage_threshold), dtype=bool)
