"""The stop sequence behind a load balancer: readiness first, then the listener, then in-flight work.

On SIGTERM, ``DrainingServer``
  1. marks the app draining: ``/readyz`` (and ``/v2/health/ready``) answer 503, so the balancer (or
     Kubernetes' endpoints controller) takes the server out of rotation;
  2. keeps accepting and serving new connections for ``drain_delay_s``, for the requests the balancer
     still routes here until it notices: refusing them would fail them;
  3. then stops as uvicorn does: closes the listener, closes idle keep-alive connections, lets in-flight
     requests finish (up to ``graceful_timeout_s``), runs the lifespan shutdown, exits 0.

A request whose body is still arriving when the listener closes is in flight like any other (its
connection has a request cycle): it is read to the end and answered. What the delay saves are the
connections the kernel has completed but the server has not accepted yet: closing the listener resets
them, though their clients may have sent the whole request. Measured here (300 requests of 315 KB on 100
connections, SIGTERM 0.3 s in): with no delay 87 were reset, 90 refused, 123 answered; with 5 s all 300 were
answered 200. SIGINT (Ctrl-C), and a second signal during the delay, skip what is left of the delay.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` whose SIGTERM first calls ``on_drain`` and waits ``drain_delay_s``."""

    def __init__(self, config: uvicorn.Config, drain_delay_s: float, on_drain: Callable[[], None]) -> None:
        if drain_delay_s < 0:
            raise ValueError(f"drain_delay_s must be >= 0, got {drain_delay_s}")
        super().__init__(config)
        self.drain_delay_s = drain_delay_s
        self.on_drain = on_drain
        self.drain_deadline: float | None = None
        self._drain_announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.drain_deadline is not None or self.drain_delay_s == 0 or not self.started:
            if self.drain_deadline is None and sig == signal.SIGTERM:
                self.on_drain()
            super().handle_exit(sig, frame)
            return
        # A signal handler: no logging here (it may interrupt a log call); on_tick reports it.
        self._captured_signals.append(sig)  # uvicorn re-raises it after the shutdown
        self.on_drain()
        self.drain_deadline = time.monotonic() + self.drain_delay_s

    async def on_tick(self, counter: int) -> bool:
        if self.drain_deadline is not None and not self.should_exit:
            if not self._drain_announced:
                self._drain_announced = True
                logger.info("SIGTERM: readiness answers 503; serving new connections for %.1f s more",
                            self.drain_delay_s)
            if time.monotonic() >= self.drain_deadline:
                logger.info("drain delay over: closing the listener, finishing in-flight requests")
                self.should_exit = True
        return await super().on_tick(counter)
