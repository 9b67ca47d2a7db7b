"""Which cascade thresholds a serving request runs under: the request's, the server's, the manifest's.

The rule itself (``defer_mask``) is ``sdcore.cascade``, the one the offline calibration scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sdcore.cascade import CascadePolicy

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
