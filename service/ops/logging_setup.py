"""Log lines: the request id in every line logged while a request is answered, one access line per
request, and text or JSON output.

The request id comes from the client's ``x-request-id`` (HTTP header or gRPC metadata; kept when it is
a short printable token) or is generated; it is echoed in the response. It lives in a context variable,
so every line logged in the request's task (and the tasks it starts) carries it; a filter on the root
handler puts it on each record as ``request_id`` ("-" outside a request).
"""

from __future__ import annotations

import contextvars
import json
import logging
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

LogFormat = Literal["text", "json"]
REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")

access_logger = logging.getLogger("service.access")


@dataclass
class RequestInfo:
    """What the access line says about one request; the inference code adds texts and times."""

    request_id: str
    texts: int = 0
    queue_ms: float = 0.0
    inference_ms: float = 0.0


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("sd_request", default=None)


def request_id_from(sent: str | None) -> str:
    """The client's id when it is a sane token (it goes into logs and headers), else a new one."""
    if sent and _VALID_ID.match(sent):
        return sent
    # 128 random bits as 32 hex digits, like uuid4().hex at a fifth of its cost (no os.urandom call, no
    # UUID object); an id needs to be unique, not unguessable. ``random`` reseeds in forked workers.
    return f"{random.getrandbits(128):032x}"


@contextmanager
def request_context(sent_id: str | None) -> Iterator[RequestInfo]:
    info = RequestInfo(request_id_from(sent_id))
    token = _current.set(info)
    try:
        yield info
    finally:
        _current.reset(token)


def note_inference(texts: int, queue_ms: float, inference_ms: float) -> None:
    """Add one model call to the current request's access line (no-op outside a request)."""
    info = _current.get()
    if info is not None:
        info.texts += texts
        info.queue_ms += queue_ms
        info.inference_ms += inference_ms


def access_log(route: str, status: int | str, info: RequestInfo, total_ms: float) -> None:
    access_logger.info(
        "%s %s texts=%d queue_ms=%.3f inference_ms=%.3f total_ms=%.3f",
        route, status, info.texts, info.queue_ms, info.inference_ms, total_ms,
        extra={"request_id": info.request_id, "route": route, "status": status, "texts": info.texts,
               "queue_ms": round(info.queue_ms, 3),
               "inference_ms": round(info.inference_ms, 3), "total_ms": round(total_ms, 3)},
    )


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):  # the access line brings its own
            info = _current.get()
            record.request_id = info.request_id if info is not None else "-"
        return True


_ACCESS_FIELDS = ("route", "status", "texts", "queue_ms", "inference_ms", "total_ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, request_id, the access fields, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker, with --workers N
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for name in _ACCESS_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """The root handler with the request id on every line; uvicorn's loggers go through it too."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []  # propagate to the root: one format for every line
        logging.getLogger(name).propagate = True
