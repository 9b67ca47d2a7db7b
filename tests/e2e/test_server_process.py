"""A real ``python -m service`` process on a loopback port: start, serve, drain on SIGTERM, exit 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.ops.server_process import ServerNotReady, ServerProcess
from training.data.task_data import TaskData
from training.testing.quick import copy_model, make_tiny_student

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Path:
    out = tmp_path_factory.mktemp("e2e-models") / "mr-tiny"
    return make_tiny_student(out, mr_small.train.texts, mr_small.train.labels, mr_small.label_names)


class Server(ServerProcess):
    """The service process of one test, its output in the test's folder."""

    def __init__(self, args: list[str], log: Path) -> None:
        super().__init__(args, log=log, cwd=REPO_ROOT)

    def wait_ready(self, timeout_s: float = 90.0) -> Server:
        try:
            super().wait_ready(timeout_s)
        except ServerNotReady as exc:
            raise AssertionError(f"{exc}:\n{self.output()}") from exc
        return self

    def stop(self, timeout_s: float = 10.0) -> int:
        if self.process.poll() is None:  # a test's server is killed, not drained
            self.process.kill()
        return super().stop(timeout_s)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[list[str]], Server]]:
    started: list[Server] = []

    def launch(args: list[str]) -> Server:
        server = Server(args, tmp_path / f"server-{len(started)}.log")
        started.append(server)
        return server

    yield launch
    for server in started:
        server.stop()


def in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    line = next(line for line in text.splitlines() if line.startswith("sd_http_requests_in_flight "))
    return float(line.split()[-1])


def test_serves_then_drains_in_flight_requests_on_sigterm_and_exits_0(
    start: Callable[[list[str]], Server], student: Path
) -> None:
    # A 4 s batching window keeps requests in flight long enough to signal the server among them.
    server = start(["--student", str(student), "--max-wait-ms", "4000", "--threads", "1"])
    server.wait_ready()
    texts = ["a gripping, beautifully acted film", "dull, lifeless and far too long"]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v1/classify", json={"texts": texts})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        assert float(r.headers["x-total-time-ms"]) > 0
        infer = client.post("/v2/models/mr-tiny/infer",
                            json={"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": texts[:1]}]})
        assert infer.status_code == 200
        assert client.post("/v1/classify", json={"texts": []}).status_code == 422

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            tasks = [asyncio.ensure_future(client.post("/v1/classify", json={"texts": [f"{texts[i % 2]} #{i}"]}))
                     for i in range(8)]
            deadline = time.monotonic() + 30
            while await asyncio.to_thread(in_flight, server.url) < 9:  # 8 + this /metrics request
                assert time.monotonic() < deadline, "requests never reached the server"
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json()["results"][0]["label"] for r in responses] == [
        responses[i % 2].json()["results"][0]["label"] for i in range(8)
    ]
    assert server.process.wait(timeout=60) == 0
    log = server.output()
    assert "Waiting for connections to close" in log or "Shutting down" in log
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/healthz", timeout=2.0)


def test_a_damaged_model_stops_the_process_with_the_file_named(
    start: Callable[[list[str]], Server], student: Path, tmp_path: Path
) -> None:
    broken = copy_model(student, tmp_path / "broken")
    shard = broken / "embeddings" / "shard-00000.npy"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    server = start(["--student", str(broken)])
    code = server.process.wait(timeout=60)
    assert code != 0
    assert str(shard) in server.output() and "damaged" in server.output()


def test_bad_settings_exit_2_with_a_message(start: Callable[[list[str]], Server]) -> None:
    server = start(["--student", "x", "--max-batch-size", "0"])
    assert server.process.wait(timeout=60) == 2
    assert "max_batch_size" in server.output()


def test_help_lists_the_settings() -> None:
    out = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--student", "--teacher", "--max-batch-size", "--max-wait-ms", "--api-key", "--device",
                 "--allow-cpu-fallback"):
        assert flag in out.stdout


def metric(url: str, series: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    line = next((line for line in text.splitlines() if line.startswith(series + " ")), None)
    return float(line.split()[-1]) if line else 0.0


def test_a_client_that_disconnects_is_dropped_before_inference(
    start: Callable[[list[str]], Server], student: Path
) -> None:
    server = start(["--student", str(student), "--max-wait-ms", "2000"])
    server.wait_ready()
    batches_before = metric(server.url, 'sd_batch_texts_count{model="mr-tiny"}')
    body = b'{"texts": ["a client that leaves"]}'
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.monotonic() + 30
        while in_flight(server.url) < 2:  # the request (in its batch window) + this /metrics request
            assert time.monotonic() < deadline
    # The socket is closed: the server notices, cancels the request, and its batch skips it.
    deadline = time.monotonic() + 30
    while metric(server.url, 'sd_rejected_total{model="mr-tiny",reason="client_gone"}') < 1:
        assert time.monotonic() < deadline, server.output()
    assert metric(server.url, 'sd_http_requests_total{method="POST",route="/v1/classify",status="499"}') == 1
    assert metric(server.url, 'sd_batch_texts_count{model="mr-tiny"}') == batches_before  # nothing ran
