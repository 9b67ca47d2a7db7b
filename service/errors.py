"""One exception hierarchy for the service and one table that maps it to HTTP status codes.

Every error the service answers has the same body, ``{"error": {"type": ..., "message": ...}}``,
whatever raised it: our own errors, FastAPI's request validation, Starlette's 404/405, the body-size
middleware or an unexpected exception (logged with its traceback, answered with a generic 500).
Under ``/v2`` the body is the Open Inference Protocol's ``{"error": "<message>"}`` instead (Triton and
KServe clients read that string), with the same status codes.
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ErrorType(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_INPUT = "invalid_input"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_LOAD_FAILED = "model_load_failed"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_READY = "not_ready"
    QUEUE_FULL = "queue_full"
    SHUTTING_DOWN = "shutting_down"
    TEACHER_UNAVAILABLE = "teacher_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CLIENT_CLOSED = "client_closed_request"
    INFERENCE_FAILED = "inference_failed"
    INTERNAL = "internal_error"


# The one table from error type to status code.
STATUS: dict[ErrorType, int] = {
    ErrorType.INVALID_JSON: 400,
    ErrorType.INVALID_INPUT: 422,
    ErrorType.PAYLOAD_TOO_LARGE: 413,
    ErrorType.UNAUTHORIZED: 401,
    ErrorType.NOT_FOUND: 404,
    ErrorType.MODEL_NOT_FOUND: 404,
    ErrorType.MODEL_LOAD_FAILED: 400,  # as Triton answers a failed load; the old version keeps serving
    ErrorType.METHOD_NOT_ALLOWED: 405,
    ErrorType.NOT_READY: 503,
    ErrorType.QUEUE_FULL: 503,
    ErrorType.SHUTTING_DOWN: 503,
    # A route that needs a teacher on a server without one: a deployment fact, not a transient failure
    # (retrying won't help), so a 4xx like the teacher route's "no teacher model is loaded".
    ErrorType.TEACHER_UNAVAILABLE: 404,
    ErrorType.DEADLINE_EXCEEDED: 504,
    ErrorType.CLIENT_CLOSED: 499,  # nginx's code; only logs and metrics see it, the client has left
    ErrorType.INFERENCE_FAILED: 500,
    ErrorType.INTERNAL: 500,
}


class ServiceError(Exception):
    """Base of every error the service answers on purpose."""

    type: ErrorType = ErrorType.INTERNAL

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return STATUS[self.type]


class InvalidJSON(ServiceError):
    type = ErrorType.INVALID_JSON


class InvalidInput(ServiceError):
    type = ErrorType.INVALID_INPUT


class PayloadTooLarge(ServiceError):
    type = ErrorType.PAYLOAD_TOO_LARGE


class Unauthorized(ServiceError):
    type = ErrorType.UNAUTHORIZED

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class NotFound(ServiceError):
    type = ErrorType.NOT_FOUND


class ModelNotFound(ServiceError):
    type = ErrorType.MODEL_NOT_FOUND


class ModelLoadFailed(ServiceError):
    """A repository model (version) that cannot be loaded: missing or damaged; the message names the file."""

    type = ErrorType.MODEL_LOAD_FAILED


class MethodNotAllowed(ServiceError):
    type = ErrorType.METHOD_NOT_ALLOWED


class NotReady(ServiceError):
    type = ErrorType.NOT_READY


class QueueFull(ServiceError):
    type = ErrorType.QUEUE_FULL

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after_s)})


class ShuttingDown(ServiceError):
    type = ErrorType.SHUTTING_DOWN


class TeacherUnavailable(ServiceError):
    """The route needs a teacher and the server has none loaded (a deployment fact: retrying won't help)."""

    type = ErrorType.TEACHER_UNAVAILABLE


class DeadlineExceeded(ServiceError):
    type = ErrorType.DEADLINE_EXCEEDED


class ClientClosed(ServiceError):
    type = ErrorType.CLIENT_CLOSED


class InferenceFailed(ServiceError):
    """The runtime raised; the cause is logged, the client gets a generic message."""

    type = ErrorType.INFERENCE_FAILED


class ErrorDetail(BaseModel):
    type: ErrorType
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """The body of every error under ``/v2`` (Open Inference Protocol)."""

    error: str


V2_PREFIX = "/v2"


def is_v2(path: str) -> bool:
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def error_body(kind: ErrorType, message: str, v2: bool = False) -> dict[str, Any]:
    if v2:
        return {"error": message}
    return {"error": {"type": kind.value, "message": message}}


def error_response(exc: ServiceError, v2: bool = False) -> JSONResponse:
    return JSONResponse(error_body(exc.type, exc.message, v2), status_code=exc.status, headers=exc.headers)


def error_bytes(exc: ServiceError, v2: bool = False) -> bytes:
    """The body of ``exc`` encoded, for the raw ASGI middleware."""
    return json.dumps(error_body(exc.type, exc.message, v2)).encode("utf-8")


def internal_error() -> ServiceError:
    return ServiceError("internal server error")


def describe_validation_error(exc: RequestValidationError) -> ServiceError:
    """FastAPI's validation errors as one of ours: unparsable JSON is 400, the rest 422."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidJSON("request body is not valid JSON")
    parts = []
    for e in errors[:5]:
        loc = [p for p in e.get("loc", ()) if p != "body"]
        if not loc and e.get("type") in ("model_attributes_type", "dict_type", "model_type", "missing"):
            return InvalidInput("the body must be a JSON object (send 'Content-Type: application/json')")
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return InvalidInput("; ".join(parts) + more)


_HTTP_STATUS_ERRORS: dict[int, type[ServiceError]] = {404: NotFound, 405: MethodNotAllowed}


def install_error_handlers(app: FastAPI) -> None:
    """Route every handled error through ``error_response`` (unexpected ones: see middleware)."""

    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)  # registered for ServiceError only
        return error_response(exc, is_v2(request.url.path))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(describe_validation_error(exc), is_v2(request.url.path))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        v2 = is_v2(request.url.path)
        if exc.status_code == 400:  # FastAPI could not decode the body (bad UTF-8, nesting too deep)
            return error_response(InvalidJSON("request body is not valid JSON"), v2)
        cls = _HTTP_STATUS_ERRORS.get(exc.status_code)
        if cls is None:  # another status raised by the framework: keep it, same body shape
            kind = ErrorType.INTERNAL if exc.status_code >= 500 else ErrorType.INVALID_INPUT
            return JSONResponse(error_body(kind, str(exc.detail), v2), exc.status_code, headers=exc.headers)
        return error_response(cls(str(exc.detail), dict(exc.headers or {})), v2)  # 405 keeps its Allow header

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
