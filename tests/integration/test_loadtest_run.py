"""``make loadtest`` end to end, cut short: a real service process, real locust runs, the three reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.data.task_data import TaskData
from training.testing.quick import make_tiny_student

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_loadtest_runner_writes_a_report_per_route_and_step(
    tmp_path: Path, mr_small: TaskData, tiny_teacher_dir: Path
) -> None:
    student = make_tiny_student(
        tmp_path / "student", mr_small.train.texts, mr_small.train.labels, mr_small.label_names
    )
    out = tmp_path / "reports" / "loadtest"
    command = [
        sys.executable, "-m", "loadtest.run", "--student", str(student), "--teacher", str(tiny_teacher_dir),
        "--scenarios", "student", "teacher", "--texts-per-request", "1", "4", "--users", "1", "2",
        "--step-s", "2", "--max-requests", "300", "--locust-processes", "1", "--out", str(out),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    report = json.loads(out.with_suffix(".json").read_text())
    steps = report["steps"]
    # Every scenario x request size x user count ran (none is past saturation at 2 users).
    seen = {(s["route"], s["texts_per_request"], s["users"]) for s in steps}
    assert seen == {(route, batch, users) for route in ("/v1/classify", "/v1/teacher/classify")
                    for batch in (1, 4) for users in (1, 2)}
    for step in steps:
        assert step["requests"] > 0, step
        assert step["failures"] == 0, step  # a 200 with one result per text, or locust counts a failure
        assert step["p50_ms"] <= step["p99_ms"] <= step["max_ms"], step
        assert step["texts_per_s"] == pytest.approx(step["requests_per_s"] * step["texts_per_request"])
        # --max-requests bounds a step, approximately: the bound is checked every 0.2 s and stopping takes
        # a moment, so a fast route overshoots by what it answers in about half a second.
        assert step["requests"] <= 300 + max(200.0, 0.5 * step["requests_per_s"]), step
        # What each side's processes used over the step: both busy, neither more than the machine has.
        cores = os.cpu_count() or 1
        assert 0 < step["service_cpu_cores"] <= cores + 0.5, step
        assert 0 < step["locust_cpu_cores"] <= cores + 0.5, step
    # The knee and goal lines are computed from those steps, and the cascade scenario was not asked for.
    assert {g["name"] for g in report["goals"]}
    assert not any(s["route"] == "/v1/cascade/classify" for s in steps)
    markdown = out.with_suffix(".md").read_text()
    assert "student x1" in markdown and "teacher x4" in markdown
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_a_step_cut_by_max_requests_keeps_every_worker_s_totals(
    tmp_path: Path, mr_small: TaskData, tiny_teacher_dir: Path
) -> None:
    """Two locust processes (a master and its workers), a 60 s step bounded at 300 requests: the step
    ends long before 60 s, and its totals count at least the 300 requests the bound waited for."""
    student = make_tiny_student(
        tmp_path / "student", mr_small.train.texts, mr_small.train.labels, mr_small.label_names
    )
    out = tmp_path / "loadtest"
    command = [
        sys.executable, "-m", "loadtest.run", "--student", str(student), "--teacher", str(tiny_teacher_dir),
        "--scenarios", "student", "--texts-per-request", "1", "--users", "2", "--step-s", "60",
        "--max-requests", "300", "--locust-processes", "2", "--out", str(out),
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    (step,) = json.loads(out.with_suffix(".json").read_text())["steps"]
    assert step["seconds"] < 45, step  # cut by the bound (locust start-up and shutdown included)
    assert step["requests"] >= 300 and step["failures"] == 0, step
    assert step["locust_cpu_cores"] > 0 and step["service_cpu_cores"] > 0, step
