"""``python -m service``: start the HTTP service (``--help`` lists every setting).

Settings come from flags and ``SD_*`` environment variables (flags win). With one worker the app is
built here and handed to uvicorn; with several, uvicorn starts worker processes that rebuild the same
settings from the environment this function exports (each maps the same shard files, so the pages
of the embedding table are shared between them).

With several workers their Prometheus numbers are summed through files in ``PROMETHEUS_MULTIPROC_DIR``
(a fresh temporary folder unless it is set), so any worker's /metrics answers for all of them.

On SIGTERM (one worker) readiness answers 503 at once, new connections are still served for
``drain_delay_s``, then the listener closes and in-flight requests finish (up to ``graceful_timeout_s``),
the lifespan shutdown runs, and the process exits 0 (``service.ops.drain``). With several workers uvicorn's
supervisor stops them its own way (no readiness phase): one worker per container, scaled by replicas,
is the layout for a load balancer.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from sdcore.errors import ProjectError
from service.app import configure_logging, create_app
from service.ops.drain import DrainingServer
from service.ops.metrics import MULTIPROC_ENV
from service.repository.registry import check_model_folders
from service.settings import ServiceSettings, settings_from_cli

logger = logging.getLogger(__name__)
STARTUP_FAILURE = 3  # uvicorn's own exit code when the app's start-up fails (a damaged model, ...)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """uvicorn drains, then re-raises the SIGTERM it caught so the default action can run; the drain
    was clean by then, so the process ends with status 0 rather than "killed by SIGTERM"."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    try:
        settings = settings_from_cli(sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    try:
        check_model_folders(settings)  # a wrong path is one line here, not a failed start-up traceback
    except ProjectError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    return serve(settings)


def serve(settings: ServiceSettings) -> int:
    """Run the server until SIGTERM or Ctrl-C (blocking)."""
    configure_logging(settings.log_level, settings.log_format)
    metrics_dir = None
    if settings.workers > 1:
        os.environ.update(settings.to_env())
        if not os.environ.get(MULTIPROC_ENV):  # read by prometheus-client when the workers import it
            metrics_dir = tempfile.mkdtemp(prefix="sd-metrics-")
            os.environ[MULTIPROC_ENV] = metrics_dir
    signal.signal(signal.SIGTERM, _exit_cleanly)
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep configure_logging's handler: one format, request ids, JSON if asked
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        access_log=False,  # the service writes its own access line (route, status, texts, times)
    )
    try:
        if settings.workers > 1:
            if settings.drain_delay_s > 0:
                logger.warning("workers > 1: drain_delay_s is not applied (uvicorn's supervisor stops the "
                               "workers); run one worker per container behind a load balancer")
            uvicorn.run("service.app:create_app_from_env", factory=True, workers=settings.workers, **options)
            return 0
        app = create_app(settings)

        def mark_draining() -> None:
            app.state.service.draining = True

        server = DrainingServer(uvicorn.Config(app, **options), settings.drain_delay_s, mark_draining)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
