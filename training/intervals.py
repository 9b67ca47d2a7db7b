"""Confidence intervals of accuracies (scipy only, no torch: ``sd test`` uses them on a serving install)."""

from __future__ import annotations

from scipy.stats import binomtest


def wilson(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``total`` trials (scipy's)."""
    if total == 0:
        return (0.0, 0.0)
    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))
