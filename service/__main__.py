"""``python -m service``: start the HTTP service (``--help`` lists every setting).

Settings come from flags and ``SD_*`` environment variables (flags win). With one worker the app is
built here and handed to uvicorn; with several, uvicorn starts worker processes that rebuild the same
settings from the environment this function exports (each maps the same shard files, so the pages
of the embedding table are shared between them).

With several workers their Prometheus numbers are summed through files in ``PROMETHEUS_MULTIPROC_DIR``
(a fresh temporary folder unless it is set), so any worker's /metrics answers for all of them.

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish (up to
``graceful_timeout_s``), then runs the lifespan shutdown, and the process exits 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from types import FrameType

import uvicorn
from pydantic import ValidationError

from sdcore.errors import ProjectError
from service.app import configure_logging, create_app
from service.metrics import MULTIPROC_ENV
from service.registry import check_model_folders
from service.settings import ServiceSettings, settings_from_cli


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
    try:
        uvicorn.run(
            create_app(settings) if settings.workers == 1 else "service.app:create_app_from_env",
            factory=settings.workers > 1,
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # keep configure_logging's handler: one format, request ids, JSON if asked
            timeout_graceful_shutdown=settings.graceful_timeout_s,
            access_log=False,  # the service writes its own access line (route, status, texts, times)
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
