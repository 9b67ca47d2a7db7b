"""Confidence intervals of accuracies, whole and by n-gram coverage bucket (numpy and scipy only, no torch:
``sd test`` uses them on a serving install)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest

# Coverage buckets [lo, hi) of equal width; the last one holds 1.0 too.
COVERAGE_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def wilson(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``total`` trials (scipy's)."""
    if total == 0:
        return (0.0, 0.0)
    ci = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def interval(correct: int, total: int) -> list[float]:
    """``wilson`` rounded to 4 places, as the reports print it."""
    return [round(x, 4) for x in wilson(correct, total)]


def coverage_bucket_of(coverage: np.ndarray) -> np.ndarray:
    """The index of each text's coverage bucket (``COVERAGE_EDGES``)."""
    return np.clip(np.searchsorted(COVERAGE_EDGES, coverage, side="right") - 1, 0, len(COVERAGE_EDGES) - 2)


def coverage_buckets(coverage: np.ndarray, right: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy (with its interval) of the texts in each coverage bucket that holds any."""
    which = coverage_bucket_of(coverage)
    rows = []
    for b in range(len(COVERAGE_EDGES) - 1):
        hits = right[which == b]
        if hits.size:
            correct = int(hits.sum())
            rows.append({"coverage": [COVERAGE_EDGES[b], COVERAGE_EDGES[b + 1]], "texts": int(hits.size),
                         "accuracy": round(correct / hits.size, 4), "accuracy_ci95": interval(correct, hits.size)})
    return rows
