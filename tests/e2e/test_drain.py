"""The stop sequence on a real ``python -m service`` process (service/ops/drain.py): on SIGTERM readiness
answers 503 while new connections are still served for ``drain_delay_s``, then the listener closes and
every request in flight is answered, including those whose body is still being uploaded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.ops.server_process import ServerProcess
from training.data.task_data import TaskData
from training.testing.quick import make_tiny_student

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DRAIN_DELAY_S = 3.0
SLOW_CLIENTS = 6
BODY_TEXTS = 30  # about 330 KB of JSON per request: the size of the measurement
UPLOAD_S = 5.0  # each slow client spreads its body over this long: it is still uploading after the delay


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Path:
    out = tmp_path_factory.mktemp("drain-models") / "mr-tiny"
    return make_tiny_student(out, mr_small.train.texts, mr_small.train.labels, mr_small.label_names)


def slow_upload(port: int, body: bytes, results: list[object], index: int, headers_sent: threading.Event) -> None:
    """POST /v1/classify over a raw socket, the body in chunks over UPLOAD_S; store the status line (or the
    error) in ``results[index]``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            chunks = 20
            step = -(-len(body) // chunks)
            sock.sendall(body[:step])
            headers_sent.set()
            for lo in range(step, len(body), step):
                time.sleep(UPLOAD_S / chunks)  # the pace of a slow client, not a wait for a condition
                sock.sendall(body[lo : lo + step])
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                part = sock.recv(65536)
                if not part:
                    break
                answer += part
            head, _, payload = answer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1]) if head else 0
            results[index] = (status, json.loads(payload) if status == 200 else payload[:200])
    except OSError as exc:
        results[index] = exc


def healthcheck(port: int) -> int:
    """The images' HEALTHCHECK command against the server: its exit code."""
    return subprocess.run([sys.executable, "-m", "service.ops.healthcheck"], cwd=REPO_ROOT, timeout=30,
                          env={"SD_HOST": "0.0.0.0", "SD_PORT": str(port)}, capture_output=True).returncode


def metric(url: str, series: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    line = next((line for line in text.splitlines() if line.startswith(series + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def test_sigterm_drains_readiness_first_then_answers_every_request_in_flight(
    student: Path, tmp_path: Path, mr_small: TaskData
) -> None:
    server = ServerProcess(["--student", str(student), "--threads", "1", "--drain-delay-s", str(DRAIN_DELAY_S),
                            "--graceful-timeout-s", "30"], log=tmp_path / "server.log", cwd=REPO_ROOT)
    try:
        server.wait_ready()
        assert healthcheck(server.port) == 0
        text = " ".join(mr_small.train.texts)[:11_000]
        body = json.dumps({"texts": [text] * BODY_TEXTS}).encode()
        assert len(body) > 300_000
        results: list[object] = [None] * SLOW_CLIENTS
        sent = [threading.Event() for _ in range(SLOW_CLIENTS)]
        threads = [threading.Thread(target=slow_upload, args=(server.port, body, results, i, sent[i]))
                   for i in range(SLOW_CLIENTS)]
        for thread in threads:
            thread.start()
        for event in sent:
            assert event.wait(30), "a slow client could not connect"
        deadline = time.monotonic() + 30
        while metric(server.url, "sd_http_requests_in_flight") < SLOW_CLIENTS + 1:  # + this /metrics request
            assert time.monotonic() < deadline, server.output()

        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # 1. Readiness answers 503 at once ...
        deadline = signalled + DRAIN_DELAY_S
        while (ready := httpx.get(f"{server.url}/readyz", timeout=5.0)).status_code == 200:
            assert time.monotonic() < deadline, "readiness never answered 503 during the drain delay"
        assert ready.status_code == 503 and "shutting down" in ready.json()["error"]["message"]
        # 2. ... while a new connection is still accepted and served.
        fresh = httpx.post(f"{server.url}/v1/classify", json={"texts": ["a new client during the delay"]},
                           headers={"connection": "close"}, timeout=10.0)
        served_fresh_at = time.monotonic() - signalled
        assert fresh.status_code == 200, fresh.text
        assert served_fresh_at < DRAIN_DELAY_S
        assert healthcheck(server.port) == 1  # a container turns unhealthy while it drains
        # 3. After the delay the listener closes: new connections are refused ...
        deadline = signalled + DRAIN_DELAY_S + 10
        while True:
            try:
                httpx.get(f"{server.url}/healthz", timeout=2.0)
            except httpx.TransportError:
                break
            assert time.monotonic() < deadline, "the listener was still open long after the drain delay"
        refused_at = time.monotonic() - signalled
        assert refused_at >= DRAIN_DELAY_S - 0.5
        # ... and every slow upload, still sending its body then, is read to the end and answered.
        for thread in threads:
            thread.join(60)
        for result in results:
            assert isinstance(result, tuple), f"a request in flight was dropped: {result!r}"
            status, answer = result
            assert status == 200, answer
            assert isinstance(answer, dict) and len(answer["results"]) == BODY_TEXTS
        assert server.process.wait(timeout=60) == 0
        exited_at = time.monotonic() - signalled
        assert exited_at < DRAIN_DELAY_S + UPLOAD_S + 30, exited_at
        log = server.output()
        assert "readiness answers 503" in log and "drain delay over" in log
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.stop(timeout_s=10)


def test_a_zero_delay_closes_the_listener_at_once_and_still_answers_uploads_in_flight(
    student: Path, tmp_path: Path, mr_small: TaskData
) -> None:
    server = ServerProcess(["--student", str(student), "--threads", "1", "--drain-delay-s", "0"],
                           log=tmp_path / "server.log", cwd=REPO_ROOT)
    try:
        server.wait_ready()
        body = json.dumps({"texts": [" ".join(mr_small.train.texts)[:11_000]] * BODY_TEXTS}).encode()
        results: list[object] = [None] * 2
        sent = [threading.Event(), threading.Event()]
        threads = [threading.Thread(target=slow_upload, args=(server.port, body, results, i, sent[i]))
                   for i in range(2)]
        for thread in threads:
            thread.start()
        for event in sent:
            assert event.wait(30)
        deadline = time.monotonic() + 30
        while metric(server.url, "sd_http_requests_in_flight") < 3:
            assert time.monotonic() < deadline, server.output()
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert [r[0] if isinstance(r, tuple) else r for r in results] == [200, 200]
        assert server.process.wait(timeout=60) == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
        server.stop(timeout_s=10)
