"""One way to start ``python -m service`` as a child process and wait until it is ready.

Used by the demo, the fuzz run, the load test and the end-to-end tests: a free loopback port, the
server's output to a log file (or the terminal), ``/readyz`` polled with a deadline (no fixed
sleeps), failing early when the process dies, and SIGTERM to stop (a graceful drain).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from sdcore.errors import ProjectError

POLL_S = 0.1  # the poll interval of a health check with a deadline, not a wait for an event


class ServerNotReady(ProjectError):
    """The server exited, or was not ready in time; the message points at its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """``python -m service <args>`` on ``127.0.0.1:<free port>``; a context manager that stops it.

    No load balancer stands in front of these local servers, so the drain delay is 0 unless ``args``
    set ``--drain-delay-s`` (the last value wins).
    """

    def __init__(self, args: list[str], log: Path | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port),
                        "--drain-delay-s", "0", *args]
        self.log = log
        self._log_file = log.open("wb") if log is not None else None
        self.process = subprocess.Popen(
            self.command, cwd=cwd, stdout=self._log_file, stderr=subprocess.STDOUT if log is not None else None
        )

    def output(self) -> str:
        """What the server has written so far (empty when it writes to the terminal)."""
        if self._log_file is None or self.log is None:
            return ""
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def _where(self) -> str:
        return f"; see {self.log}" if self.log is not None else ""

    def wait_ready(self, timeout_s: float = 90.0) -> ServerProcess:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerNotReady(f"the service exited with {self.process.returncode} before it was ready"
                                     + self._where())
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1.0) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(POLL_S)
        raise ServerNotReady(f"the service was not ready within {timeout_s:.0f} s" + self._where())

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the server drains in-flight requests: service/ops/drain.py), then a kill after the timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_file is not None:
            self._log_file.close()
        return int(self.process.returncode)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
