"""The cascade rule, shared by the offline calibration (training) and the cascade route (serving).

The student answers every text; a text goes on to the teacher when the student's calibrated confidence
or its n-gram coverage is below a threshold. These are the student's known weak spots (Ye et al. 2022,
section 6: out-of-vocabulary inputs, context beyond four words). ``resolve_policy`` says which thresholds
a serving request runs under (request, settings, manifest). numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

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

    @classmethod
    def from_manifest(cls, cascade: dict[str, Any] | None) -> CascadePolicy | None:
        if not cascade or "operating_point" not in cascade:
            return None
        point = cascade["operating_point"]
        return cls(float(cascade.get("temperature", 1.0)), float(point["confidence_threshold"]),
                   float(point["coverage_threshold"]))


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


# --- serving: which policy a request runs under --------------------------------------------------------

PolicySource = Literal["request", "settings", "manifest", "none"]
THRESHOLDS = ("confidence_threshold", "coverage_threshold")


@dataclass(frozen=True)
class Thresholds:
    """The thresholds one layer sets (None: this layer leaves it to the next)."""

    confidence_threshold: float | None = None
    coverage_threshold: float | None = None


@dataclass(frozen=True)
class ResolvedPolicy:
    policy: CascadePolicy
    sources: dict[str, PolicySource]  # per field of the policy: which layer set it


def resolve_policy(stored: CascadePolicy | None, settings: Thresholds, request: Thresholds) -> ResolvedPolicy:
    """Each threshold from the first layer that sets it: the request, the server settings, the operating
    point stored in the student's manifest; else 0, which never defers.

    The temperature comes from the manifest only (1.0 without one): it is the student's calibration on
    dev, not a knob, and the thresholds are meant on that calibrated scale.
    """
    sources: dict[str, PolicySource] = {"temperature": "manifest" if stored is not None else "none"}
    values: dict[str, float] = {}
    layers: tuple[tuple[PolicySource, Thresholds | CascadePolicy | None], ...] = (
        ("request", request), ("settings", settings), ("manifest", stored)
    )
    for name in THRESHOLDS:
        values[name], sources[name] = 0.0, "none"
        for source, layer in layers:
            value = getattr(layer, name) if layer is not None else None
            if value is not None:
                values[name], sources[name] = float(value), source
                break
    temperature = stored.temperature if stored is not None else 1.0
    return ResolvedPolicy(CascadePolicy(temperature, **values), sources)
