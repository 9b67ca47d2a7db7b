"""``runs/<name>/run.json``: the wall time and peak memory of every step invocation, written and read here.

An invocation is recorded when it ends, normally or cut short (Ctrl-C, SIGTERM, an error: ``stopped_by``
names it). While a step runs, a heartbeat keeps a ``running`` entry fresh (every ``HEARTBEAT_S``), so a
process killed outright (SIGKILL, the OOM killer, the machine gone) still leaves its time, to within one
heartbeat: the next invocation records it with ``stopped_by = "lost"``. A fresh heartbeat from a live
process on this host means another ``sd run`` is at work on the same run folder; that one is refused.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sdcore.atomic import atomic_write_json
from sdcore.errors import ProjectError
from sdcore.process_memory import peak_rss_bytes

RUN_LOG = "run.json"
HEARTBEAT_S = 30.0
LOST = "lost"


class RunFolderBusy(ProjectError):
    """Another live process is running a step of the same run folder."""


def _gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 3)


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def _beating_s(running: dict[str, Any]) -> float:
    """A ``running`` entry's time: from the step's start to its last heartbeat."""
    return max(0.0, float(running["seen"]) - float(running["since"]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


class RunLog:
    """One invocation's view of ``run.json``: steps are recorded through it, one at a time."""

    def __init__(self, run_dir: Path, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = run_dir / RUN_LOG
        self.heartbeat_s = heartbeat_s
        self._log: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self._lock = threading.Lock()  # the heartbeat thread and the step's end both write the file

    def recover_lost(self) -> dict[str, Any] | None:
        """Record the step a killed process left running, as ``lost`` with its time up to the last beat;
        ``RunFolderBusy`` when that process is alive and beating. Returns the entry recorded, if any."""
        running = self._log.get("running")
        if not running:
            return None
        fresh = time.time() - float(running["seen"]) < 3 * max(self.heartbeat_s, float(running.get("every_s", 0)))
        if fresh and running.get("host") == socket.gethostname() and _alive(int(running["pid"])):
            raise RunFolderBusy(
                f"{self.path.parent}: step {running['step']} is running in process {running['pid']} "
                f"(since {_stamp(float(running['since']))})",
                hint="wait for it, or stop it (kill it, or Ctrl-C) before running this config again")
        entry = {"step": running["step"], "wall_s": round(_beating_s(running), 2),
                 "peak_rss_gib": running.get("peak_rss_gib", 0.0), "at": _stamp(float(running["seen"])),
                 "stopped_by": LOST}
        with self._lock:
            self._log.pop("running", None)
            self._log.setdefault("history", []).append(entry)
            atomic_write_json(self.path, self._log)
        return entry

    @contextmanager
    def running(self, step: str) -> Iterator[None]:
        """Keep a ``running`` entry for ``step`` fresh until the block ends (however it ends)."""
        since = time.time()
        stop = threading.Event()

        def beat() -> None:
            with self._lock:
                self._log["running"] = {"step": step, "since": since, "seen": time.time(), "pid": os.getpid(),
                                        "host": socket.gethostname(), "every_s": self.heartbeat_s,
                                        "peak_rss_gib": _gib(peak_rss_bytes())}
                atomic_write_json(self.path, self._log)

        def beating() -> None:
            while not stop.wait(self.heartbeat_s):
                beat()

        beat()
        thread = threading.Thread(target=beating, name=f"run-log-heartbeat-{step}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with self._lock:
                self._log.pop("running", None)

    def record(self, step: str, started: float, stopped_by: str | None = None) -> None:
        """Append one invocation of ``step`` (``started``: its ``time.perf_counter()`` at the start)."""
        entry: dict[str, Any] = {"step": step, "wall_s": round(time.perf_counter() - started, 2),
                                 "peak_rss_gib": _gib(peak_rss_bytes()), "at": _stamp(time.time())}
        if stopped_by:
            entry["stopped_by"] = stopped_by
        with self._lock:
            self._log.setdefault("history", []).append(entry)
            atomic_write_json(self.path, self._log)

    def as_dict(self) -> dict[str, Any]:
        return self._log


def step_seconds(run_dir: Path) -> dict[str, float]:
    """Wall seconds of each step so far, summed over the invocations in ``run.json``: those cut short or
    lost included, and the one running now (or left running by a process killed since) up to its last
    heartbeat."""
    log = RunLog(run_dir).as_dict()
    entries = list(log.get("history") or [])
    if running := log.get("running"):
        entries.append({"step": running["step"], "wall_s": _beating_s(running)})
    out: dict[str, float] = {}
    for entry in entries:
        out[entry["step"]] = round(out.get(entry["step"], 0.0) + float(entry.get("wall_s", 0.0)), 1)
    return out
