"""How one text's answer is shaped from a model's row of probabilities: the answer options.

Shared by the HTTP routes (``service/api``) and the ``sd predict`` command, so both answer alike:

- no option: ``scores`` holds every label in the model's order (the answer of before the options);
- ``top_k``: at most the k most probable labels; ``threshold``: only labels whose probability is at
  least it. With either, the kept labels come best first (ties in the model's order). ``label`` and
  ``score`` stay the most probable label whatever is kept, so an answer always names one;
- ``raw``: ``logits`` too, every label's, in the model's order (before the softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.runtimes.contract import Predictions


@dataclass(frozen=True)
class AnswerOptions:
    top_k: int | None = None  # >= 1; None = every label
    threshold: float | None = None  # in [0, 1]; None = no label dropped
    raw: bool = False

    def __post_init__(self) -> None:
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be an integer >= 1, got {self.top_k!r}")
        if self.threshold is not None and not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")

    @property
    def filters(self) -> bool:
        return self.top_k is not None or self.threshold is not None


def kept_scores(row: np.ndarray, labels: list[str], options: AnswerOptions) -> dict[str, float]:
    """The ``scores`` of one answer: label -> probability, as the options keep them."""
    if not options.filters:
        return {label: float(p) for label, p in zip(labels, row, strict=True)}
    order = np.argsort(-row, kind="stable")  # best first; equal probabilities in the model's order
    if options.top_k is not None:
        order = order[: options.top_k]
    threshold = options.threshold
    return {labels[i]: float(row[i]) for i in order if threshold is None or float(row[i]) >= threshold}


def answer_rows(predictions: Predictions, labels: list[str], options: AnswerOptions) -> list[dict[str, Any]]:
    """One plain answer per text: label, score, scores (+ logits with ``raw``; + coverage and
    ngrams_found for a student's predictions)."""
    probs = predictions.probabilities
    best = np.argmax(probs, axis=1) if len(predictions) else np.zeros(0, dtype=np.int64)
    if options.raw and predictions.logits is None:
        raise ValueError("raw answers need the logits, and these predictions carry none")
    out: list[dict[str, Any]] = []
    for i, (row, b) in enumerate(zip(probs, best, strict=True)):
        answer: dict[str, Any] = {"label": labels[int(b)], "score": float(row[b]),
                                  "scores": kept_scores(row, labels, options)}
        if options.raw and predictions.logits is not None:
            answer["logits"] = {label: float(v) for label, v in zip(labels, predictions.logits[i], strict=True)}
        if predictions.coverage is not None:
            answer["coverage"] = float(predictions.coverage[i])
        if predictions.ngrams_found is not None:
            answer["ngrams_found"] = int(predictions.ngrams_found[i])
        out.append(answer)
    return out
