"""The Open Inference Protocol's model view, shared by the HTTP routes and the gRPC servicer.

Every model takes one BYTES tensor named ``text`` of shape [n] (or [n, 1]) and answers ``probabilities``
(FP32 [n, labels], in the model's label order), ``label`` (BYTES [n]) and, for a student, ``coverage``
(FP32 [n]) and ``answered_by`` (BYTES [n], with the cascade only).

Request parameters that mean something here (others, such as Triton's ``timeout`` or ``priority``, are
accepted and ignored):
- ``cascade`` (bool, student only): answer like ``/v1/cascade/classify``: the texts the student is
  unsure of go to the teacher; ``confidence_threshold`` and ``coverage_threshold`` (numbers in [0, 1])
  override the server's and the manifest's, ``teacher`` names the teacher.
- ``binary_data_output`` (HTTP only): see ``v2_codec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.api.inference import Timed, run_model
from service.api.routes.cascade import run_cascade, teacher_for
from service.api.v2_codec import Tensor
from service.api.v2_schemas import ModelMetadata, TensorMetadata
from service.cascade_policy import Thresholds, resolve_policy
from service.errors import InvalidInput, ModelNotFound
from service.ops.metrics import ServiceMetrics
from service.repository.registry import ModelRegistry, ServedModel
from service.settings import ServiceSettings

INPUT_NAME = "text"
SERVER_NAME = "sparse-distillation"
SERVER_VERSION = "0.1.0"
PLATFORM = "onnxruntime_onnx"
# Triton's extension names, for what this server implements of each.
EXTENSIONS = ["binary_tensor_data", "parameters", "model_repository"]


def find_model(registry: ModelRegistry, name: str, version: str | None = None) -> ServedModel:
    """The loaded model ``name`` (at ``version`` when given); ModelNotFound (404) naming what is loaded."""
    model = registry.by_name(name)
    if version is not None and version != "" and version != model.version:
        raise ModelNotFound(f"model {name!r} has no loaded version {version!r} (loaded: {model.version})")
    return model


def outputs_of(model: ServedModel) -> list[TensorMetadata]:
    outputs = [
        TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(model.labels)]),
        TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
    ]
    if model.kind == "student":
        outputs.append(TensorMetadata(name="coverage", datatype="FP32", shape=[-1]))
        outputs.append(TensorMetadata(name="answered_by", datatype="BYTES", shape=[-1]))
    return outputs


def metadata_of(model: ServedModel) -> ModelMetadata:
    return ModelMetadata(
        name=model.name,
        versions=[model.version],
        platform=PLATFORM,
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
        outputs=outputs_of(model),
    )


def _threshold(parameters: dict[str, Any], key: str) -> float | None:
    value = parameters.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInput(f"parameters.{key} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class InferPlan:
    """A checked request: which model, which outputs, and whether the cascade runs."""

    model: ServedModel
    outputs: list[str]
    cascade: bool
    teacher: ServedModel | None = None
    thresholds: Thresholds | None = None  # the request's, for the cascade


def plan_infer(
    registry: ModelRegistry, model: ServedModel, input_count: int, wanted: list[str], parameters: dict[str, Any]
) -> InferPlan:
    """Check what the request asks against what the model has; InvalidInput (422) otherwise."""
    if input_count != 1:
        raise InvalidInput(f"this model takes one input ({INPUT_NAME!r}), got {input_count}")
    cascade = parameters.get("cascade", False)
    if not isinstance(cascade, bool):
        raise InvalidInput(f"parameters.cascade must be true or false, got {cascade!r}")
    if cascade and model.kind != "student":
        raise InvalidInput(f"parameters.cascade needs a student; {model.name!r} is a {model.kind}")
    available = [t.name for t in outputs_of(model)]
    if not cascade and "answered_by" in available:
        available.remove("answered_by")
    outputs = wanted or available
    unknown = [name for name in outputs if name not in available]
    if unknown:
        hint = " (answered_by needs parameters.cascade)" if "answered_by" in unknown else ""
        raise InvalidInput(f"unknown output(s) {unknown}; this request can have {available}{hint}")
    if len(set(outputs)) != len(outputs):
        raise InvalidInput(f"an output is asked for twice: {outputs}")
    if not cascade:
        return InferPlan(model, outputs, False)
    teacher_name = parameters.get("teacher")
    if teacher_name is not None and not isinstance(teacher_name, str):
        raise InvalidInput(f"parameters.teacher must be a model name, got {teacher_name!r}")
    thresholds = Thresholds(
        _threshold(parameters, "confidence_threshold"), _threshold(parameters, "coverage_threshold")
    )
    # The cascade route's rule for choosing a teacher (and its 404 when there is none).
    return InferPlan(model, outputs, True, teacher_for(registry, teacher_name, model), thresholds)


@dataclass(frozen=True)
class InferOutcome:
    tensors: list[Tensor]
    queue_ms: float
    inference_ms: float


async def run_infer(
    plan: InferPlan, texts: list[str], settings: ServiceSettings, metrics: ServiceMetrics
) -> InferOutcome:
    """Run the texts through the model's batcher (and the teacher's for the cascade); the asked outputs."""
    model = plan.model
    n = len(texts)
    answered_by: list[str] | None = None
    if plan.cascade and plan.teacher is not None:
        resolved = resolve_policy(
            model.facts.cascade,
            Thresholds(settings.cascade_confidence_threshold, settings.cascade_coverage_threshold),
            plan.thresholds or Thresholds(None, None),
            model.facts.router,
        )
        s, t, defer = await run_cascade(model, plan.teacher, texts, resolved.rule)
        probabilities = np.array(s.predictions.probabilities, dtype=np.float32)
        if t is not None:
            probabilities[defer] = t.predictions.probabilities
        coverage = s.predictions.coverage
        answered_by = ["teacher" if d else "student" for d in defer]
        deferred = int(defer.sum())
        metrics.cascade_texts.labels(model.name, "student").inc(n - deferred)  # as /v1/cascade/classify counts
        metrics.cascade_texts.labels(model.name, "teacher").inc(deferred)
        queue_ms = s.queue_ms + (t.queue_ms if t else 0.0)
        inference_ms = s.inference_ms + (t.inference_ms if t else 0.0)
    else:
        timed: Timed = await run_model(model, texts)
        probabilities = timed.predictions.probabilities
        coverage = timed.predictions.coverage
        queue_ms, inference_ms = timed.queue_ms, timed.inference_ms
    best = np.argmax(probabilities, axis=1)
    tensors = {
        "probabilities": Tensor("probabilities", "FP32", [n, probabilities.shape[1]], probabilities),
        "label": Tensor("label", "BYTES", [n], [model.labels[int(b)] for b in best]),
    }
    if coverage is not None:
        tensors["coverage"] = Tensor("coverage", "FP32", [n], np.asarray(coverage, dtype=np.float32))
    if answered_by is not None:
        tensors["answered_by"] = Tensor("answered_by", "BYTES", [n], answered_by)
    return InferOutcome([tensors[name] for name in plan.outputs], queue_ms, inference_ms)
