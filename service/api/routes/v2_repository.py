"""Triton's model repository extension over HTTP: the index, and load / unload of one model.

    POST (or GET) /v2/repository/index         {"ready": true} optional: only the ready models
    POST /v2/repository/models/{name}/load      the model's highest version: loaded, warmed, swapped in
    POST /v2/repository/models/{name}/unload

Bodies are optional and read whatever their Content-Type (Triton's client sends none). A version
that cannot be loaded is answered 400 with the file named, and the version serving before goes on.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ValidationError

from service.api.responses import V2_REPOSITORY_ERRORS
from service.api.v2_schemas import RepositoryIndexRequest, RepositoryLoadRequest, RepositoryModel
from service.errors import InvalidInput, InvalidJSON, NotReady
from service.repository.model_repository import IndexEntry, ModelRepository

router = APIRouter(prefix="/v2/repository", tags=["v2 (Open Inference Protocol)"], responses=V2_REPOSITORY_ERRORS)

ModelNamePath = Annotated[str, Path(min_length=1, max_length=200, description="A model of the repository")]
B = TypeVar("B", bound=BaseModel)


def _optional_body(raw: bytes, model: type[B]) -> B:
    if not raw.strip():
        return model()
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ValidationError):
            raise InvalidInput("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                         for e in exc.errors()[:5])) from None
        raise InvalidJSON("request body is not valid JSON") from None


def _repository(request: Request) -> ModelRepository:
    repository: ModelRepository | None = request.app.state.repository
    if repository is None:
        raise NotReady("models are not loaded and warmed up yet")
    return repository


def _out(entry: IndexEntry) -> RepositoryModel:
    return RepositoryModel(name=entry.name, version=entry.version, state=entry.state, reason=entry.reason)


_BODY: dict[str, Any] = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/RepositoryIndexRequest"}}}}}
_LOAD_BODY: dict[str, Any] = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/RepositoryLoadRequest"}}}}}


@router.get("/index", response_model=list[RepositoryModel], summary="Models of the repository and their state")
async def index_get(request: Request) -> list[RepositoryModel]:
    return [_out(e) for e in _repository(request).index()]


@router.post("/index", response_model=list[RepositoryModel], summary="Models of the repository and their state",
             openapi_extra=_BODY)
async def index_post(request: Request) -> list[RepositoryModel]:
    body = _optional_body(await request.body(), RepositoryIndexRequest)
    return [_out(e) for e in _repository(request).index(ready_only=body.ready is True)]


@router.post("/models/{model_name}/load", response_model=RepositoryModel, openapi_extra=_LOAD_BODY,
             summary="Load the model's highest version; the old one serves until the new one is warmed up")
async def load(model_name: ModelNamePath, request: Request) -> RepositoryModel:
    _optional_body(await request.body(), RepositoryLoadRequest)
    return _out(await _repository(request).load(model_name))


@router.post("/models/{model_name}/unload", response_model=RepositoryModel, openapi_extra=_LOAD_BODY,
             summary="Stop serving the model (requests it holds are answered first)")
async def unload(model_name: ModelNamePath, request: Request) -> RepositoryModel:
    _optional_body(await request.body(), RepositoryLoadRequest)
    return _out(await _repository(request).unload(model_name))


def repository_component_schemas() -> dict[str, Any]:
    return {m.__name__: m.model_json_schema(ref_template="#/components/schemas/{model}")
            for m in (RepositoryIndexRequest, RepositoryLoadRequest)}
