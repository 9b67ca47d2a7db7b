"""Overload, deadlines and clients that leave, on the real app and the real student runtime.

The runtime call is made slow by a gate around the real predict function (a test seam, not a mock):
it records every text it runs and blocks until the test opens it, so no test sleeps to make room.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.batcher import Batcher

pytestmark = pytest.mark.asyncio


class Gate:
    def __init__(self, batcher: Batcher[Any]) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.ran: list[str] = []
        self._predict = batcher._predict
        batcher._predict = self
        # The gate blocks its caller, so every batch must run on the model's thread: a small batch run on
        # the event loop's thread (inline_max_chars) would block the loop the test drives.
        batcher.inline_max_chars = 0

    def __call__(self, texts: list[str]) -> Any:
        self.ran.extend(texts)
        self.entered.set()
        self.open.wait(timeout=30)
        return self._predict(texts)


def app_of(client: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    return app


def student_batcher(client: httpx.AsyncClient) -> Batcher[Any]:
    return app_of(client).state.service.registry.get("student").batcher


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


def metric(text: str, series: str) -> float:
    line = next((line for line in text.splitlines() if line.startswith(series + " ")), None)
    return float(line.split()[-1]) if line else 0.0


async def test_a_full_queue_answers_503_at_once_and_no_request_is_lost_or_answered_twice(serve: Any) -> None:
    requests = 12
    async with serve(max_batch_size=1, max_queue_size=3, max_wait_ms=0.0, retry_after_s=2) as client:
        gate = Gate(student_batcher(client))
        texts = [f"a film number {i}" for i in range(requests)]
        tasks = [asyncio.ensure_future(client.post("/v1/classify", json={"texts": [texts[0]]}))]
        await asyncio.to_thread(gate.entered.wait, 10)  # the first runs, held by the gate
        tasks += [asyncio.ensure_future(client.post("/v1/classify", json={"texts": [t]})) for t in texts[1:]]
        # Three wait in the queue, the other eight are refused at once.
        await wait_until(lambda: sum(t.done() for t in tasks) == requests - 4)
        refused = [t.result() for t in tasks if t.done()]
        assert {r.status_code for r in refused} == {503}
        assert all(r.headers["retry-after"] == "2" and r.json()["error"]["type"] == "queue_full" for r in refused)
        gate.open.set()
        responses = await asyncio.gather(*tasks)
        metrics = (await client.get("/metrics")).text
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 4, 503: 8}
    answered = [t for t, r in zip(texts, responses, strict=True) if r.status_code == 200]
    assert sorted(gate.ran) == sorted(answered)  # each accepted request ran exactly once, refused ones never
    assert metric(metrics, 'sd_rejected_total{model="mr-tiny",reason="queue_full"}') == 8
    assert metric(metrics, 'sd_http_requests_total{method="POST",route="/v1/classify",status="503"}') == 8


async def test_requests_past_their_deadline_get_504_and_are_not_run(serve: Any) -> None:
    async with serve(max_batch_size=1, request_timeout_s=0.3) as client:
        gate = Gate(student_batcher(client))
        running = asyncio.ensure_future(client.post("/v1/classify", json={"texts": ["held by the gate"]}))
        await asyncio.to_thread(gate.entered.wait, 10)
        queued = await client.post("/v1/classify", json={"texts": ["waits too long"]})
        first = await running
        gate.open.set()
        after = await client.post("/v1/classify", json={"texts": ["after the storm"]})
    for r in (queued, first):
        assert r.status_code == 504 and r.json()["error"]["type"] == "deadline_exceeded"
    assert after.status_code == 200
    assert "waits too long" not in gate.ran  # dropped before inference


async def test_a_client_that_disconnects_is_dropped_before_inference(serve: Any) -> None:
    async with serve(max_batch_size=1) as client:
        app = app_of(client)
        batcher = student_batcher(client)
        gate = Gate(batcher)
        running = asyncio.ensure_future(client.post("/v1/classify", json={"texts": ["held by the gate"]}))
        await asyncio.to_thread(gate.entered.wait, 10)

        # A raw ASGI request whose client disconnects while it waits in the queue.
        body = json.dumps({"texts": ["the client leaves"]}).encode()
        messages: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": body, "more_body": False}]
        left = asyncio.Event()
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            if messages:
                return messages.pop(0)
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/classify", "raw_path": b"/v1/classify", "query_string": b"",
            "root_path": "", "headers": [(b"content-type", b"application/json"),
                                         (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5555), "server": ("service", 80),
        }
        gone = asyncio.ensure_future(app(scope, receive, send))
        await wait_until(lambda: batcher.depth == 1)
        left.set()
        await gone
        gate.open.set()
        assert (await running).status_code == 200
        assert (await client.post("/v1/classify", json={"texts": ["next"]})).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert sent[0]["status"] == 499
    assert "the client leaves" not in gate.ran
    assert metric(metrics, 'sd_rejected_total{model="mr-tiny",reason="client_gone"}') == 1


async def test_compare_refused_by_a_full_teacher_queue_does_not_run_its_student_part(
    serve: Any, tiny_teacher: Any
) -> None:
    # The student's window stays open (5 s) until its batch of 2 texts is full, so the compare's
    # student part is still waiting there when the teacher part is refused.
    async with serve(teacher=[tiny_teacher], max_batch_size=2, teacher_max_batch_size=1,
                     teacher_onnx_batch_size=1, max_queue_size=1, max_wait_ms=5000.0) as client:
        registry = app_of(client).state.service.registry
        student_gate = Gate(registry.get("student").batcher)
        student_gate.open.set()
        teacher_gate = Gate(registry.get("teacher").batcher)
        held = asyncio.ensure_future(client.post("/v1/teacher/classify", json={"texts": ["held"]}))
        await asyncio.to_thread(teacher_gate.entered.wait, 10)
        waiting = asyncio.ensure_future(client.post("/v1/teacher/classify", json={"texts": ["waiting"]}))
        await wait_until(lambda: registry.get("teacher").batcher.depth == 1)
        compare = await client.post("/v1/compare", json={"texts": ["compared text"]})
        assert compare.status_code == 503 and compare.json()["error"]["type"] == "queue_full"
        # Fill the student's batch so its window closes now; the compare's text must be skipped.
        after = await client.post("/v1/classify", json={"texts": ["one", "two"]})
        teacher_gate.open.set()
        assert [r.status_code for r in await asyncio.gather(held, waiting)] == [200, 200]
    assert after.status_code == 200
    assert "compared text" not in student_gate.ran
