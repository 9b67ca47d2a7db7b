"""The app factory. Nothing is created at import time: ``create_app(settings)`` builds an app whose
lifespan loads the models onto its state, warms them up, and only then reports ready.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from sdcore.errors import ProjectError
from service.api.deps import AppState, require_api_key
from service.api.middleware import ServiceMiddleware
from service.api.routes import cascade, classify, explain, health, metrics, models, page, v2, v2_repository
from service.errors import install_error_handlers
from service.ops.logging_setup import REQUEST_ID_HEADER
from service.ops.logging_setup import configure_logging as _configure_logging
from service.ops.metrics import ServiceMetrics
from service.repository.model_repository import ModelRepository
from service.repository.registry import ModelRegistry
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

DESCRIPTION = """Sparse Distillation serving: a huge sparse n-gram DAN student distilled from a transformer
teacher (Ye et al., NAACL 2022), both behind dynamic batchers. v1 JSON routes and the Open Inference
Protocol (KServe v2) over HTTP (JSON and binary tensors) and gRPC. Every error body under /v1 is
`{"error": {"type": ..., "message": ...}}`; under /v2 it is the protocol's `{"error": "<message>"}`."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.service
    try:
        registry = await asyncio.to_thread(ModelRegistry.load, state.settings, state.metrics)
    except ProjectError as exc:  # a damaged model, no CUDA, two models of one name: one line (middleware)
        logger.error("cannot start: %s", exc.one_line())
        app.state.startup_error = exc
        raise
    repository = ModelRepository(state.settings.model_repository, registry, state.settings, state.metrics)
    grpc_server = None
    try:
        await registry.start()
        state.registry = registry
        app.state.repository = repository
        await registry.warm_up()
        if state.settings.grpc_port is not None:
            from service.grpc_api.server import start_grpc  # grpcio is imported only where gRPC is on

            grpc_server, app.state.grpc_port = await start_grpc(
                app, state.settings.host, state.settings.grpc_port, state.settings.max_body_bytes
            )
        logger.info("ready: %s", ", ".join(f"{m.kind} {m.name!r} on {m.device}" for m in registry.models))
        yield
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=state.settings.graceful_timeout_s)
        await repository.stop()
        await registry.stop()
        app.state.explain_workers.close()
        state.metrics.process_exit()
        logger.info("models stopped")


def create_app(settings: ServiceSettings) -> FastAPI:
    app = FastAPI(
        title="Sparse Distillation service",
        version=v2.SERVER_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        **telemetry_option(settings),
    )
    metrics_ = ServiceMetrics()
    app.state.service = AppState(settings=settings, metrics=metrics_)
    app.state.repository = None  # set by the lifespan
    app.state.grpc_port = None  # the port the gRPC server bound, when it runs
    app.state.explain_workers = explain.ExplainWorkers(settings.max_concurrent_explanations, settings.retry_after_s)
    install_error_handlers(app)
    app.add_middleware(ServiceMiddleware, max_body_bytes=settings.max_body_bytes, metrics=metrics_)
    if settings.cors_allow_origins:  # opt-in: browsers may call the API from these origins only
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_allow_origins, allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", REQUEST_ID_HEADER, "inference-header-content-length"],
            expose_headers=[REQUEST_ID_HEADER, "x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms",
                            "inference-header-content-length"],
        )
    # The key check (and its OpenAPI security scheme) only where a key is set, so the schema says
    # the truth about each deployment.
    protected = [Depends(require_api_key)] if settings.api_key is not None else []
    app.include_router(health.router)
    app.include_router(v2.health_router)
    page.mount(app)  # the page at / (static files; it calls the API with the key the user types)
    for router in (classify.router, cascade.router, explain.router, models.router, metrics.router, v2.router,
                   v2_repository.router):
        app.include_router(router, dependencies=protected)
    app.openapi = partial(openapi_with_limits, app, settings)  # type: ignore[method-assign]
    return app


def telemetry_option(settings: ServiceSettings) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (newer FastAPI releases have it) off unless ``--otel``: with it on, every
    request pays a check for a configured SDK even where there is none (a few percent of a small request's
    CPU, reports/bench-notes.md). A FastAPI without it takes no such argument."""
    if settings.otel or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def openapi_with_limits(app: FastAPI, settings: ServiceSettings) -> dict[str, Any]:
    """The OpenAPI schema with this server's request limits filled in (maxItems, maxLength).

    The limits are settings, not constants, so the request models cannot carry them; exceeding one
    is answered 413 (see ``check_limits``), which the schema documents.
    """
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = FastAPI.openapi(app)  # builds FastAPI's schema and caches it on the app
    # The bodies the v2 routes read by hand (any content type), declared for the schema.
    schema["components"]["schemas"].update(v2.v2_component_schemas())
    schema["components"]["schemas"].update(v2_repository.repository_component_schemas())
    for name in ("ClassifyRequest", "CompareRequest", "CascadeRequest", "ExplainRequest"):
        texts = schema["components"]["schemas"][name]["properties"]["texts"]
        texts["maxItems"] = settings.max_texts_per_request
        texts["items"]["maxLength"] = settings.max_chars_per_text
    return schema


def configure_logging(level: str, log_format: str = "text") -> None:
    """Every log line with time, logger and request id, as text or JSON (``service.ops.logging_setup``)."""
    _configure_logging(level, "json" if log_format == "json" else "text")


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and worker processes: settings from ``SD_*`` variables."""
    settings = ServiceSettings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)
