"""Dependencies injected into routes, as ``Annotated`` aliases."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import NotReady, PayloadTooLarge, Unauthorized
from service.ops.metrics import ServiceMetrics
from service.repository.registry import ModelRegistry
from service.settings import ServiceSettings


@dataclass
class AppState:
    """What the lifespan puts on ``app.state.service``."""

    settings: ServiceSettings
    metrics: ServiceMetrics
    registry: ModelRegistry | None = None
    # Set on SIGTERM (service.__main__): readiness answers 503 from then on, so a load balancer stops
    # sending new requests while the ones it sent are still served.
    draining: bool = False

    @property
    def ready(self) -> bool:
        return not self.draining and self.registry is not None and self.registry.ready


# Dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its thread
# pool, a thread hop per dependency per request for a dictionary lookup.


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.service
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> ServiceSettings:
    return state.settings


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]


async def get_registry(state: StateDep) -> ModelRegistry:
    if state.registry is None or not state.registry.ready:
        raise NotReady("models are not loaded and warmed up yet")
    return state.registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]

_bearer = HTTPBearer(auto_error=False, description="Needed when the server runs with an API key.")


async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Every route but health needs ``Authorization: Bearer <key>`` when an API key is set."""
    if settings.api_key is None:
        return
    if credentials is None:
        raise Unauthorized("missing 'Authorization: Bearer <api key>' header")
    expected = settings.api_key.get_secret_value().encode("utf-8")
    if not secrets.compare_digest(credentials.credentials.encode("utf-8"), expected):
        raise Unauthorized("invalid API key")


def check_limits(texts: list[str], settings: ServiceSettings) -> None:
    """Request limits beyond the schema: too many or too long texts are 413, naming the limit."""
    if len(texts) > settings.max_texts_per_request:
        raise PayloadTooLarge(
            f"{len(texts)} texts in one request; the limit (max_texts_per_request) is "
            f"{settings.max_texts_per_request}"
        )
    for i, text in enumerate(texts):
        if len(text) > settings.max_chars_per_text:
            raise PayloadTooLarge(
                f"text {i} has {len(text)} characters; the limit (max_chars_per_text) is "
                f"{settings.max_chars_per_text}"
            )
