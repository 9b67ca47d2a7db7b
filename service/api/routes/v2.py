"""The Open Inference Protocol (KServe v2) REST routes: health, metadata, inference.

Texts go in as one BYTES tensor named ``text`` of shape [n] (or [n, 1]); the answer holds
``probabilities`` (FP32 [n, labels], in the model's label order), ``label`` (BYTES [n]) and, for a
student, ``coverage`` (FP32 [n]). Errors keep the service's one error shape, a JSON object under
``error`` where the protocol has a string: clients that read ``error`` still find it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response

from service.api.deps import RegistryDep, SettingsDep, StateDep, check_limits
from service.api.inference import run_model, set_timing, until_client_leaves
from service.api.responses import INFERENCE_ERRORS, METADATA_ERRORS
from service.api.v2_schemas import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadata,
    ModelReadyResponse,
    ReadyResponse,
    RequestInput,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)
from service.errors import ErrorBody, InvalidInput, NotReady
from service.registry import ServedModel
from service.runtime import Predictions

INPUT_NAME = "text"
SERVER_NAME = "sparse-distillation"
SERVER_VERSION = "0.1.0"

ModelNamePath = Annotated[str, Path(min_length=1, max_length=200, description="A loaded model's name")]

health_router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])


@health_router.get("/health/live", response_model=LiveResponse, summary="Server live")
async def live() -> LiveResponse:
    return LiveResponse(live=True)


@health_router.get(
    "/health/ready",
    response_model=ReadyResponse,
    summary="Server ready (every model loaded and warmed up)",
    responses={503: {"model": ErrorBody, "description": "Not ready"}},
)
async def ready(state: StateDep) -> ReadyResponse:
    if not state.ready:
        raise NotReady("models are not loaded and warmed up yet")
    return ReadyResponse(ready=True)


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])


def _outputs_of(model: ServedModel) -> list[TensorMetadata]:
    outputs = [
        TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, len(model.labels)]),
        TensorMetadata(name="label", datatype="BYTES", shape=[-1]),
    ]
    if model.kind == "student":
        outputs.append(TensorMetadata(name="coverage", datatype="FP32", shape=[-1]))
    return outputs


@router.get("/models/{model_name}", response_model=ModelMetadata, summary="Model metadata",
            responses=METADATA_ERRORS)
async def model_metadata(model_name: ModelNamePath, registry: RegistryDep) -> ModelMetadata:
    model = registry.by_name(model_name)
    return ModelMetadata(
        name=model.name,
        platform="onnxruntime_onnx",
        inputs=[TensorMetadata(name=INPUT_NAME, datatype="BYTES", shape=[-1])],
        outputs=_outputs_of(model),
    )


@router.get("/models/{model_name}/ready", response_model=ModelReadyResponse, summary="Model ready",
            responses=METADATA_ERRORS)
async def model_ready(model_name: ModelNamePath, registry: RegistryDep) -> ModelReadyResponse:
    model = registry.by_name(model_name)
    if not model.ready:
        raise NotReady(f"model {model_name!r} is not ready")
    return ModelReadyResponse(name=model.name, ready=True)


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major elements of a [n] or [n, 1] tensor given flat or nested one level."""
    flat: list[Any] = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    return flat


def texts_of(tensor: RequestInput) -> list[str]:
    """The texts of the request's input tensor (name and datatype checked by its schema);
    InvalidInput (422) naming what is wrong."""
    if len(tensor.shape) == 2 and tensor.shape[1] != 1:
        raise InvalidInput(f"input shape must be [n] or [n, 1], got {tensor.shape}")
    data = _flatten(tensor.data)
    count = math.prod(tensor.shape)
    if count != len(data):
        raise InvalidInput(f"input shape {tensor.shape} holds {count} elements, data has {len(data)}")
    for i, text in enumerate(data):
        if not isinstance(text, str):
            raise InvalidInput(f"input data[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInput(f"input data[{i}] is empty or only whitespace")
    return data


def _tensors(model: ServedModel, predictions: Predictions) -> dict[str, ResponseOutput]:
    probs = predictions.probabilities
    n = len(predictions)
    best = np.argmax(probs, axis=1)
    out = {
        "probabilities": ResponseOutput(
            name="probabilities", shape=[n, probs.shape[1]], datatype="FP32", data=probs.ravel().tolist()
        ),
        "label": ResponseOutput(name="label", shape=[n], datatype="BYTES",
                                data=[model.labels[int(b)] for b in best]),
    }
    if predictions.coverage is not None:
        out["coverage"] = ResponseOutput(
            name="coverage", shape=[n], datatype="FP32", data=predictions.coverage.astype(np.float32).tolist()
        )
    return out


@router.post("/models/{model_name}/infer", response_model=InferenceResponse, summary="Inference",
             responses=INFERENCE_ERRORS)
async def infer(
    model_name: ModelNamePath, body: InferenceRequest, request: Request, response: Response,
    registry: RegistryDep, settings: SettingsDep,
) -> InferenceResponse:
    model = registry.by_name(model_name)
    if len(body.inputs) != 1:
        raise InvalidInput(f"this model takes one input ({INPUT_NAME!r}), got {len(body.inputs)}")
    available = [t.name for t in _outputs_of(model)]
    wanted = [o.name for o in body.outputs] if body.outputs else available
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise InvalidInput(f"unknown output(s) {unknown}; this model has {available}")
    texts = texts_of(body.inputs[0])
    check_limits(texts, settings)
    timed = await until_client_leaves(request, run_model(model, texts))
    set_timing(response, timed.queue_ms, timed.inference_ms)
    tensors = _tensors(model, timed.predictions)
    return InferenceResponse(model_name=model.name, id=body.id, outputs=[tensors[name] for name in wanted])
