"""A real server with 2 workers: /metrics sums the counts of both processes (prometheus-client's
multiprocess mode); JSON logs carry the request id and the access fields."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from training.data.task_data import TaskData
from training.testing.quick import make_tiny_student

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
SERIES = 'sd_http_requests_total{method="POST",route="/v1/classify",status="200"}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Path:
    out = tmp_path_factory.mktemp("workers") / "mr-tiny"
    return make_tiny_student(out, mr_small.train.texts, mr_small.train.labels, mr_small.label_names)


@pytest.fixture
def two_workers(student: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--student", str(student), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--threads", "1", "--log-format", "json"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    ready_pids: set[str] = set()
    while len(ready_pids) < 2:  # both workers answer: each logs its own "ready" line
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        ready_pids = {line for line in log.read_text(errors="replace").splitlines() if '"message": "ready:' in line}
        time.sleep(0.1)  # polling another process's log file
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield url, log
    process.terminate()
    process.wait(60)


def count(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    line = next((line for line in text.splitlines() if line.startswith(SERIES + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def access_lines(log: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "service.access"
            and str(line["request_id"]).startswith("job-")]


def test_metrics_sum_both_workers_and_json_logs_carry_the_request_id(two_workers: tuple[str, Path]) -> None:
    url, log = two_workers
    sent = 0

    async def send(first: int, n: int) -> list[httpx.Response]:
        # 8 at a time on fresh connections: while one worker is busy the other accepts.
        limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await asyncio.gather(*(
                client.post(f"{url}/v1/classify", json={"texts": [f"film #{i}"]}, headers={"x-request-id": f"job-{i}"})
                for i in range(first, first + n)
            ))

    # Rounds of 40 until both workers have answered some (bounded): only then is a sum tested.
    for _ in range(10):
        responses = asyncio.run(send(sent, 40))
        assert [r.status_code for r in responses] == [200] * 40
        assert [r.headers["x-request-id"] for r in responses] == [f"job-{i}" for i in range(sent, sent + 40)]
        sent += 40
        deadline = time.monotonic() + 10
        while len(access_lines(log)) < sent:  # the log is written by other processes
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if len({line["pid"] for line in access_lines(log)}) == 2:
            break
    access = access_lines(log)
    assert len({line["pid"] for line in access}) == 2, "every request went to one worker: no sum was tested"
    # Every scrape, whichever worker answers it, sees the sum over both processes.
    assert [count(url) for _ in range(6)] == [float(sent)] * 6
    assert len(access) == sent
    assert {line["route"] for line in access} == {"POST /v1/classify"}
    assert all(line["status"] == 200 and line["texts"] == 1 and float(line["inference_ms"]) > 0  # type: ignore[arg-type]
               for line in access)
