"""One raw ASGI middleware for what every request goes through.

- Body limit: a body larger than ``max_body_bytes`` (by Content-Length, or counted as it streams)
  is answered 413 before anything parses it; the accepted body is replayed to the app.
- ``x-total-time-ms`` on every response, and requests counted by route template and status.
- The request id (``x-request-id``, the client's or a new one) echoed on the response and on every log
  line of the request; one access line per request (``service.ops.logging_setup``).
- The last line of defence: an unexpected exception is logged with its traceback and answered with
  a generic 500 in the service's error shape (the client never sees a traceback).
- A start-up that fails on one of the project's own errors (a damaged model, no CUDA) is reported
  to the server as that error's one line, not as a traceback.

Raw ASGI rather than ``BaseHTTPMiddleware``: the latter wraps ``receive`` and breaks the disconnect
detection the routes rely on.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdcore.errors import ProjectError
from service.errors import PayloadTooLarge, ServiceError, error_bytes, internal_error, is_v2
from service.ops.logging_setup import REQUEST_ID_HEADER, access_log, request_context
from service.ops.metrics import ServiceMetrics

logger = logging.getLogger(__name__)


def _startup_failure_in_one_line(scope: Scope, send: Send) -> Send:
    """Starlette reports a failed lifespan with the traceback as its message, which uvicorn logs;
    for a ProjectError (recorded by the lifespan on the app's state) the one line says it all."""

    async def send_lifespan(message: Message) -> None:
        error = getattr(scope["app"].state, "startup_error", None) if "app" in scope else None
        if message["type"] == "lifespan.startup.failed" and isinstance(error, ProjectError):
            message = {**message, "message": f"cannot start: {error.one_line()}"}
        await send(message)

    return send_lifespan

TOTAL_TIME_HEADER = "x-total-time-ms"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, _startup_failure_in_one_line(scope, send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        with request_context(Headers(scope=scope).get(REQUEST_ID_HEADER)) as info:
            status = await self._answer(scope, receive, send, info.request_id, started)
            access_log(f"{scope['method']} {_route_of(scope)}", status, info, (time.perf_counter() - started) * 1000.0)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, request_id: str, started: float) -> int:
        """Answer the request; returns the status sent (500 when none was)."""
        status = 500
        response_started = False

        async def send_timed(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[TOTAL_TIME_HEADER] = f"{(time.perf_counter() - started) * 1000.0:.3f}"
                headers[REQUEST_ID_HEADER] = request_id
                self.metrics.request_seconds.labels(_route_of(scope)).observe(time.perf_counter() - started)
            await send(message)

        self.metrics.in_flight.inc()
        try:
            app_receive = receive
            if scope["method"] in _BODY_METHODS:
                body = await self._read_body(scope, receive)
                app_receive = _replay(body, receive)
            await self.app(scope, app_receive, send_timed)
        except ServiceError as exc:  # raised here (body too large), outside the app's handlers
            if not response_started:
                await _send_error(send_timed, exc, is_v2(scope["path"]))
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:
                await _send_error(send_timed, internal_error(), is_v2(scope["path"]))
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(_route_of(scope), scope["method"], str(status)).inc()
        return status

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole request body, or PayloadTooLarge as soon as it is known to exceed the limit."""
        limit = self.max_body_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is {int(declared)} bytes; the limit (max_body_bytes) is {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit (max_body_bytes) of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then defers to the server (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _route_of(scope: Scope) -> str:
    """The matched route's template (bounded label values), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


async def _send_error(send: Send, exc: ServiceError, v2: bool) -> None:
    body = error_bytes(exc, v2)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
