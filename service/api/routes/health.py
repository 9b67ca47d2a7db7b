"""Health routes (never behind the API key): liveness, readiness, Prometheus metrics live elsewhere."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import StateDep
from service.api.schemas import Health, Readiness
from service.errors import ErrorBody, NotReady

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Models loaded and warmed up",
    responses={503: {"model": ErrorBody, "description": "Not ready (loading, or shutting down)"}},
)
async def readyz(state: StateDep) -> Readiness:
    if state.draining:
        raise NotReady("shutting down: draining in-flight requests")
    if not state.ready or state.registry is None:
        raise NotReady("models are not loaded and warmed up yet")
    return Readiness(models=[m.name for m in state.registry.models])
