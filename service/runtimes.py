"""The runtime layer as the batcher sees it: a model folder in, ``predict(texts) -> Predictions`` out.

Thin adapters over ``StudentRuntime`` and ``TeacherRuntime``: they know nothing of HTTP, and the routes
never touch onnxruntime. ``Predictions`` is what one runtime call returns; the batcher slices it into
each request's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.cascade import CascadePolicy
from service.model_format import MANIFEST, ModelFormatError, read_manifest_kind
from service.student_runtime import StudentRuntime, softmax
from service.teacher_runtime import TeacherRuntime

Kind = Literal["student", "teacher"]


@dataclass(frozen=True)
class Predictions:
    probabilities: npt.NDArray[np.float32]  # [n, labels]
    coverage: npt.NDArray[np.float64] | None = None  # student only: share of n-grams in vocabulary
    ngrams_found: npt.NDArray[np.int64] | None = None  # student only

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    def rows(self, start: int, stop: int) -> Predictions:
        return Predictions(
            self.probabilities[start:stop],
            None if self.coverage is None else self.coverage[start:stop],
            None if self.ngrams_found is None else self.ngrams_found[start:stop],
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
    cascade: CascadePolicy | None = None  # student only: the operating point stored by training.cascade


class StudentModel:
    kind: Kind = "student"

    def __init__(self, runtime: StudentRuntime) -> None:
        self.runtime = runtime
        m = runtime.manifest
        self.facts = ModelFacts(
            name=m.name,
            kind="student",
            path=str(runtime.root),
            labels=list(m.labels),
            metrics=dict(m.metrics),
            created_at=m.created_at,
            details={
                "vocab_size": m.vocab_size,
                "embedding_dim": m.embedding_dim,
                "hidden_dim": m.hidden_dim,
                "dtype": m.shard_dtype,
                "shards": len(m.shards),
                "featurizer": m.featurizer.model_dump(),
            },
        )
        self.facts.cascade, cascade_facts = _cascade_of(m.cascade, runtime.root / MANIFEST)
        if cascade_facts is not None:
            self.facts.details["cascade"] = cascade_facts

    def predict(self, texts: Sequence[str]) -> Predictions:
        out = self.runtime.predict(texts)
        return Predictions(out.probabilities, out.coverage, out.ngrams_found)

    def active_providers(self) -> list[str]:
        return list(self.runtime.head.get_providers())


class TeacherModel:
    kind: Kind = "teacher"

    def __init__(self, runtime: TeacherRuntime, onnx_batch_size: int) -> None:
        self.runtime = runtime
        self.onnx_batch_size = onnx_batch_size
        m = runtime.manifest
        self.facts = ModelFacts(
            name=m.name,
            kind="teacher",
            path=str(runtime.root),
            labels=list(m.labels),
            metrics=dict(m.metrics),
            created_at=m.created_at,
            details={"max_length": m.max_length, "base_model": m.base_model, "dtype": _output_dtype(runtime)},
        )

    def predict(self, texts: Sequence[str]) -> Predictions:
        # The runtime sorts the texts of a call by token length and runs ONNX in sub-batches of
        # ``onnx_batch_size``, so short texts of different requests share little padding.
        return Predictions(softmax(self.runtime.logits(list(texts), batch_size=self.onnx_batch_size)))

    def active_providers(self) -> list[str]:
        return list(self.runtime.session.get_providers())


ServedRuntime = StudentModel | TeacherModel


def _cascade_of(section: dict[str, Any] | None, manifest: Path) -> tuple[CascadePolicy | None, dict[str, Any] | None]:
    """The cascade policy of a student manifest, and its operating point's facts for ``/v1/models``
    (without the curve, which can hold hundreds of points). A malformed section stops the load here,
    naming the manifest, rather than failing the first cascade request."""
    try:
        policy = CascadePolicy.from_manifest(section)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(manifest, f"its cascade section is invalid ({type(exc).__name__}: {exc})") from exc
    if policy is None or section is None:
        return None, None
    point = section["operating_point"]
    facts: dict[str, Any] = {
        **policy.to_dict(),
        "dev_acc": _number(point.get("dev_acc")),
        "teacher_share": _number(point.get("teacher_share")),
        "teacher_dev_acc": _number(section.get("teacher_dev_acc")),
        "tolerance": _number(section.get("tolerance")),
    }
    return policy, facts


def _number(value: Any) -> float | None:
    """An optional fact of the manifest as a float, or None when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


_ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def _output_dtype(runtime: TeacherRuntime) -> str:
    """The element type of the teacher graph's logits, as numpy names it."""
    onnx_type = str(runtime.session.get_outputs()[0].type)
    return _ONNX_TYPES.get(onnx_type, onnx_type)


def load_model(
    root: Path, expected: Kind, *, threads: int | None, providers: Sequence[str], verify_checksums: bool,
    teacher_onnx_batch_size: int,
) -> ServedRuntime:
    """Load one model folder; raise ModelFormatError naming the file if it is missing or damaged."""
    kind = read_manifest_kind(root)
    if kind != expected:
        raise ModelFormatError(root / "manifest.json", f"is a {kind} model, but was given as a {expected}")
    if expected == "student":
        return StudentModel(StudentRuntime.load(root, threads, providers, verify_checksums))
    teacher = TeacherRuntime.load(root, threads=threads, providers=providers, verify_checksums=verify_checksums)
    return TeacherModel(teacher, teacher_onnx_batch_size)
