"""The Open Inference Protocol (KServe v2) REST routes: health, metadata, inference, with and without a
model version. The tensors are described in ``service.api.v2_infer``; the JSON and binary bodies in
``service.api.v2_codec``. Errors under ``/v2`` are the protocol's ``{"error": "<message>"}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from service.api.deps import RegistryDep, SettingsDep, StateDep, check_limits
from service.api.inference import set_timing, until_client_leaves
from service.api.responses import V2_INFERENCE_ERRORS, V2_METADATA_ERRORS
from service.api.v2_codec import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    decompress,
    encode_response,
    parse_infer_body,
    split_binary,
    texts_of,
)
from service.api.v2_infer import (
    EXTENSIONS,
    SERVER_NAME,
    SERVER_VERSION,
    find_model,
    metadata_of,
    plan_infer,
    run_infer,
)
from service.api.v2_schemas import (
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadata,
    ModelReadyResponse,
    ReadyResponse,
    ServerMetadata,
)
from service.errors import NotReady, V2ErrorBody

__all__ = ["SERVER_VERSION", "health_router", "router", "texts_of"]

ModelNamePath = Annotated[str, Path(min_length=1, max_length=200, description="A loaded model's name")]
VersionPath = Annotated[str, Path(min_length=1, max_length=50, description="A loaded version of the model")]
TAG = "v2 (Open Inference Protocol)"

health_router = APIRouter(prefix="/v2", tags=[TAG])
router = APIRouter(prefix="/v2", tags=[TAG])


@health_router.get("/health/live", response_model=LiveResponse, summary="Server live")
async def live() -> LiveResponse:
    return LiveResponse(live=True)


@health_router.get(
    "/health/ready",
    response_model=ReadyResponse,
    summary="Server ready (every model loaded and warmed up)",
    responses={503: {"model": V2ErrorBody, "description": "Not ready"}},
)
async def ready(state: StateDep) -> ReadyResponse:
    if not state.ready:
        raise NotReady("models are not loaded and warmed up yet")
    return ReadyResponse(ready=True)


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)


@router.get("/models/{model_name}", response_model=ModelMetadata, summary="Model metadata",
            responses=V2_METADATA_ERRORS)
async def model_metadata(model_name: ModelNamePath, registry: RegistryDep) -> ModelMetadata:
    return metadata_of(find_model(registry, model_name))


@router.get("/models/{model_name}/versions/{model_version}", response_model=ModelMetadata,
            summary="Model metadata (one version)", responses=V2_METADATA_ERRORS)
async def model_version_metadata(
    model_name: ModelNamePath, model_version: VersionPath, registry: RegistryDep
) -> ModelMetadata:
    return metadata_of(find_model(registry, model_name, model_version))


def _ready(registry: RegistryDep, name: str, version: str | None) -> ModelReadyResponse:
    model = find_model(registry, name, version)
    if not model.ready:
        raise NotReady(f"model {name!r} is not ready")
    return ModelReadyResponse(name=model.name, ready=True)


@router.get("/models/{model_name}/ready", response_model=ModelReadyResponse, summary="Model ready",
            responses=V2_METADATA_ERRORS)
async def model_ready(model_name: ModelNamePath, registry: RegistryDep) -> ModelReadyResponse:
    return _ready(registry, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", response_model=ModelReadyResponse,
            summary="Model ready (one version)", responses=V2_METADATA_ERRORS)
async def model_version_ready(
    model_name: ModelNamePath, model_version: VersionPath, registry: RegistryDep
) -> ModelReadyResponse:
    return _ready(registry, model_name, model_version)


# The body is read by hand, whatever its Content-Type (Triton's clients send none, or octet-stream with
# binary data), so the schema is declared here rather than by a body parameter.
_INFER_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An inference request as JSON; or, with the `Inference-Header-Content-Length` header, "
        "that many bytes of JSON followed by the inputs' binary data (binary tensor data extension).",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
    }
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    **V2_INFERENCE_ERRORS,
    200: {"model": InferenceResponse, "description": "The outputs; binary outputs follow the JSON header",
          "content": {BINARY_CONTENT_TYPE: {}}},
}


async def _infer(
    request: Request, registry: RegistryDep, settings: SettingsDep, name: str, version: str | None
) -> Response:
    metrics = request.app.state.service.metrics
    model = find_model(registry, name, version)
    body = decompress(await request.body(), request.headers.get("content-encoding"), settings.max_body_bytes)
    infer_request, rest = parse_infer_body(body, request.headers.get(HEADER_LENGTH))
    parameters = dict(infer_request.parameters or {})
    wanted = [o.name for o in infer_request.outputs or []]
    plan = plan_infer(registry, model, len(infer_request.inputs), wanted, parameters)
    (raw,) = split_binary(infer_request.inputs, rest)
    texts = texts_of(infer_request.inputs[0], raw)
    check_limits(texts, settings)
    outcome = await until_client_leaves(request, run_infer(plan, texts, settings, metrics))
    header: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if infer_request.id is not None:
        header["id"] = infer_request.id
    content, headers = encode_response(header, outcome.tensors, infer_request)
    response = Response(content, headers=headers)
    set_timing(response, outcome.queue_ms, outcome.inference_ms)
    return response


@router.post("/models/{model_name}/infer", summary="Inference", response_class=Response,
             responses=_INFER_RESPONSES, openapi_extra=_INFER_OPENAPI)
async def infer(
    model_name: ModelNamePath, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    return await _infer(request, registry, settings, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer", summary="Inference (one version)",
             response_class=Response, responses=_INFER_RESPONSES, openapi_extra=_INFER_OPENAPI)
async def infer_version(
    model_name: ModelNamePath, model_version: VersionPath, request: Request, registry: RegistryDep,
    settings: SettingsDep,
) -> Response:
    return await _infer(request, registry, settings, model_name, model_version)


def v2_component_schemas() -> dict[str, Any]:
    """The request schemas the OpenAPI document must hold for ``_INFER_OPENAPI``'s reference."""
    schema = InferenceRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "InferenceRequest": schema}
