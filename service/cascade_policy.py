"""Which cascade rule a serving request runs under: thresholds from the request, the server or the
manifest, or the learned router the student's folder holds.

Order: a threshold set by the request or by the server settings wins (the grid rule then runs with
every threshold resolved layer by layer, as before); else the learned router (``router.json``), when
the student has one; else the operating point stored in the manifest; else 0 (never defer).
The rules themselves are ``sdcore.router.defer_texts``, the ones the offline evaluation scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sdcore.cascade import CascadePolicy
from sdcore.router import CascadeRouter, DeferralRule, RouterPolicy

PolicySource = Literal["request", "settings", "manifest", "none"]
RuleName = Literal["router", "thresholds"]
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
    router: RouterPolicy | None = None  # set when the learned router decides, not the thresholds

    @property
    def rule(self) -> DeferralRule:
        return self.router if self.router is not None else self.policy

    @property
    def rule_name(self) -> RuleName:
        return "router" if self.router is not None else "thresholds"


def resolve_policy(stored: CascadePolicy | None, settings: Thresholds, request: Thresholds,
                   router: CascadeRouter | None = None) -> ResolvedPolicy:
    """Each threshold from the first layer that sets it: the request, the server settings, the operating
    point stored in the student's manifest; else 0, which never defers.

    ``router``: the student's learned router, which decides unless the request or the settings set a
    threshold. The temperature comes from the manifest only (1.0 without one): it is the student's calibration on
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
    policy = CascadePolicy(temperature, **values)
    explicit = any(sources[name] in ("request", "settings") for name in THRESHOLDS)
    if router is not None and not explicit:
        return ResolvedPolicy(policy, sources, RouterPolicy.of(router))
    return ResolvedPolicy(policy, sources)
