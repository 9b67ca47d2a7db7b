"""run.json keeps the time of a step whose process was killed outright, and refuses a second live run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from training.stages.run_log import LOST, RunFolderBusy, RunLog, step_seconds

# A real process running a step with a fast heartbeat; it says "beating" once it has beaten a few times.
STEP_PROCESS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from training.stages.run_log import RunLog
    log = RunLog(Path(sys.argv[1]), heartbeat_s=0.1)
    with log.running("label"):
        time.sleep(0.6)
        print("beating", flush=True)
        time.sleep(600)
""")


def test_a_step_killed_outright_is_recorded_as_lost_up_to_its_last_heartbeat(tmp_path: Path) -> None:
    started = time.time()
    process = subprocess.Popen([sys.executable, "-c", STEP_PROCESS, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "beating"
        running = json.loads((tmp_path / "run.json").read_text())["running"]
        assert running["step"] == "label" and running["pid"] == process.pid
        # While it beats, the step's time so far counts, and a second run on the folder is refused.
        assert step_seconds(tmp_path)["label"] >= 0.4
        with pytest.raises(RunFolderBusy, match=f"step label is running in process {process.pid}"):
            RunLog(tmp_path).recover_lost()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    killed_after = time.time() - started

    log = RunLog(tmp_path)
    entry = log.recover_lost()
    assert entry is not None and entry["step"] == "label" and entry["stopped_by"] == LOST
    assert 0.5 <= entry["wall_s"] <= killed_after and entry["peak_rss_gib"] > 0
    saved = json.loads((tmp_path / "run.json").read_text())
    assert "running" not in saved and saved["history"] == [entry]
    assert step_seconds(tmp_path) == {"label": round(entry["wall_s"], 1)}
    assert RunLog(tmp_path).recover_lost() is None  # recorded once


def test_a_step_that_ends_leaves_no_running_entry_and_its_time_once(tmp_path: Path) -> None:
    log = RunLog(tmp_path, heartbeat_s=0.05)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), log.running("kd"):
        time.sleep(0.2)
        raise KeyboardInterrupt
    log.record("kd", started, stopped_by="KeyboardInterrupt")
    saved = json.loads((tmp_path / "run.json").read_text())
    assert "running" not in saved
    assert [(e["step"], e["stopped_by"]) for e in saved["history"]] == [("kd", "KeyboardInterrupt")]
    assert step_seconds(tmp_path)["kd"] == round(saved["history"][0]["wall_s"], 1) >= 0.2
    assert RunLog(tmp_path).recover_lost() is None


def test_a_stale_heartbeat_of_a_live_pid_is_a_lost_step_not_a_busy_folder(tmp_path: Path) -> None:
    """A live pid on this host that beat long ago (a pid reused since) is a lost step, not a live run."""
    since = time.time() - 3600
    running = {"step": "teacher", "since": since, "seen": since + 1200, "pid": os.getpid(),
               "host": socket.gethostname(), "every_s": 30.0}
    (tmp_path / "run.json").write_text(json.dumps({"running": running}))
    entry = RunLog(tmp_path).recover_lost()
    assert entry is not None and entry["wall_s"] == 1200.0 and entry["stopped_by"] == LOST
