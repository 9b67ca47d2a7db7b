"""The one runtime contract: what the batcher and the routes need from a loaded model.

``StudentRuntime`` and ``TeacherRuntime`` implement it directly (LitServe's single model contract):
``load(root, options)`` opens a model folder, ``predict(texts)`` answers one ``Predictions`` for the
whole batch (a bare string is one text), ``facts`` says what the manifest says, ``providers()`` where
it really runs. A runtime knows nothing of HTTP and the routes never touch onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt

from sdcore.cascade import CascadePolicy
from sdcore.router import CascadeRouter, StudentSignals

Kind = Literal["student", "teacher"]

# A hook that sees each stage of a prediction: (stage, seconds, the table rows read or None). The
# student reports "featurize" and "gather" (once per gathered chunk of rows) on its numpy path and
# "kernel" on the compiled one; the bench uses it.
StageObserver = Callable[[str, float, npt.NDArray[np.int64] | None], None]


@dataclass(frozen=True)
class RuntimeOptions:
    # A teacher's onnxruntime intra-op threads; a student's kernel threads (its head uses 1). None = one per core.
    threads: int | None = None
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    verify_checksums: bool = True
    batch_size: int = 32  # teacher: texts per ONNX run (a call's texts are sorted by token length first)
    backend: Literal["kernel", "numpy"] = "kernel"  # student: the compiled kernel, or the numpy reference
    observer: StageObserver | None = None


def as_texts(texts: Sequence[str] | str) -> Sequence[str]:
    """A bare string is one text (iterating it would give one prediction per character)."""
    return [texts] if isinstance(texts, str) else texts


@dataclass(frozen=True)
class Predictions:
    """One runtime call's answers; the batcher slices it into each request's rows."""

    probabilities: npt.NDArray[np.float32]  # [n, labels]
    coverage: npt.NDArray[np.float64] | None = None  # student only: share of n-grams in vocabulary
    ngrams_found: npt.NDArray[np.int64] | None = None  # student only
    logits: npt.NDArray[np.float32] | None = None  # [n, labels], before the softmax (answers with raw=true)
    ngrams_total: npt.NDArray[np.int64] | None = None  # student only: all n-grams of each text

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def student_coverage(self) -> npt.NDArray[np.float64]:
        """The coverage of a student's predictions (a teacher's have none)."""
        if self.coverage is None:
            raise TypeError("these predictions carry no n-gram coverage (not a student's)")
        return self.coverage

    def student_signals(self) -> StudentSignals:
        """What the cascade's deferral rule reads (sdcore.router); a student's predictions only."""
        if self.ngrams_found is None or self.ngrams_total is None:
            raise TypeError("these predictions carry no n-gram counts (not a student's)")
        return StudentSignals(self.probabilities, self.student_coverage, self.ngrams_found, self.ngrams_total)

    def rows(self, start: int, stop: int) -> Predictions:
        return Predictions(
            self.probabilities[start:stop],
            None if self.coverage is None else self.coverage[start:stop],
            None if self.ngrams_found is None else self.ngrams_found[start:stop],
            None if self.logits is None else self.logits[start:stop],
            None if self.ngrams_total is None else self.ngrams_total[start:stop],
        )


@dataclass
class ModelFacts:
    """What ``GET /v1/models`` and the v2 metadata say about a loaded model."""

    name: str
    kind: Kind
    path: str
    labels: list[str]
    metrics: dict[str, Any]
    created_at: str
    details: dict[str, Any] = field(default_factory=dict)  # kind-specific manifest facts
    cascade: CascadePolicy | None = None  # student only: the operating point stored by training.stages.cascade
    router: CascadeRouter | None = None  # student only: the learned router (router.json), when it has one


class Runtime(Protocol):
    kind: Kind
    facts: ModelFacts

    @classmethod
    def load(cls, root: Path | str, options: RuntimeOptions = ...) -> Self: ...

    def predict(self, texts: Sequence[str] | str) -> Predictions: ...

    def providers(self) -> list[str]: ...
