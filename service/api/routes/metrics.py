"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.api.deps import StateDep
from service.api.responses import AUTH_ERRORS
from service.ops.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"], responses=AUTH_ERRORS)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(state: StateDep) -> Response:
    for model in state.registry.models if state.registry is not None else []:
        state.metrics.queue_depth.labels(model.name).set(model.batcher.depth)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
