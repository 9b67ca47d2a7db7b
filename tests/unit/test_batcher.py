"""The batcher: pure batch collection on a plain asyncio.Queue, knob validation, and the class's
admission, deadline, cancellation and failure paths with a plain predict function."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from service.batcher import Answer, Batcher, NullObserver, Pending, collect_batch
from service.errors import DeadlineExceeded, InferenceFailed, QueueFull, ShuttingDown


@dataclass
class Rows:
    """A minimal BatchOutput: the texts themselves, upper-cased."""

    values: list[str]

    def __len__(self) -> int:
        return len(self.values)

    def rows(self, start: int, stop: int) -> Rows:
        return Rows(self.values[start:stop])


def upper(texts: list[str]) -> Rows:
    return Rows([t.upper() for t in texts])


def entry(texts: list[str], deadline: float = float("inf")) -> Pending[Rows]:
    future: asyncio.Future[Answer[Rows]] = asyncio.get_running_loop().create_future()
    return Pending(texts, future, enqueued_at=0.0, deadline=deadline)


def queue_of(*entries: Pending[Rows]) -> asyncio.Queue[Pending[Rows]]:
    queue: asyncio.Queue[Pending[Rows]] = asyncio.Queue()
    for e in entries:
        queue.put_nowait(e)
    return queue


# --- collect_batch ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_batch_is_capped_by_texts_and_the_overflow_is_carried_not_lost() -> None:
    a, b, c = entry(["1", "2"]), entry(["3", "4", "5"]), entry(["6"])
    queue = queue_of(a, b, c)
    first = await collect_batch(queue, max_texts=4, max_wait_s=10.0)
    assert first.batch == [a] and first.leftover is b  # 2 + 3 > 4: b waits for the next batch
    second = await collect_batch(queue, max_texts=4, max_wait_s=0.0, leftover=first.leftover)
    assert second.batch == [b, c] and second.leftover is None and second.texts == 4
    assert queue.empty()


@pytest.mark.asyncio
async def test_a_full_batch_returns_without_waiting_for_the_window() -> None:
    queue = queue_of(entry(["a"]), entry(["b"]), entry(["c"]))
    started = time.monotonic()
    got = await collect_batch(queue, max_texts=2, max_wait_s=30.0)
    assert [e.texts for e in got.batch] == [["a"], ["b"]]
    assert time.monotonic() - started < 5.0  # not the 30 s window
    assert queue.qsize() == 1


@pytest.mark.asyncio
async def test_an_oversized_request_forms_a_batch_alone() -> None:
    big, small = entry([str(i) for i in range(10)]), entry(["x"])
    queue = queue_of(big, small)
    got = await collect_batch(queue, max_texts=4, max_wait_s=30.0)
    assert got.batch == [big] and got.leftover is None and queue.qsize() == 1


@pytest.mark.asyncio
async def test_entries_of_clients_that_left_are_skipped() -> None:
    gone, live = entry(["gone"]), entry(["live"])
    gone.future.cancel()
    got = await collect_batch(queue_of(gone, live), max_texts=8, max_wait_s=0.0)
    assert got.gone == 1 and got.batch == [] and got.leftover is None  # a dead first entry: answered at once
    got = await collect_batch(queue_of(live), max_texts=8, max_wait_s=0.0)
    assert got.batch == [live]


@pytest.mark.asyncio
async def test_entries_past_their_deadline_are_reported_not_batched() -> None:
    now = 100.0
    late, fresh, late2 = entry(["late"], deadline=50.0), entry(["fresh"], deadline=200.0), entry(["x"], 99.0)
    got = await collect_batch(queue_of(late), 8, 0.0, clock=lambda: now)
    assert got.expired == [late] and got.batch == []
    got = await collect_batch(queue_of(fresh, late2), 8, 0.0, clock=lambda: now)
    assert got.batch == [fresh] and got.expired == [late2]


@pytest.mark.asyncio
async def test_the_window_takes_entries_that_arrive_in_time() -> None:
    queue = queue_of(entry(["first"]))
    second = entry(["second"])

    async def producer() -> None:
        await asyncio.sleep(0)  # runs while collect_batch waits inside its window
        queue.put_nowait(second)

    task = asyncio.create_task(producer())
    got = await collect_batch(queue, max_texts=8, max_wait_s=0.5)
    await task
    assert [e.texts for e in got.batch] == [["first"], ["second"]]


@pytest.mark.asyncio
async def test_nothing_is_lost_over_many_small_windows() -> None:
    queue: asyncio.Queue[Pending[Rows]] = asyncio.Queue()
    entries = [entry([str(i)] * (1 + i % 3)) for i in range(200)]

    async def producer() -> None:
        for e in entries:
            queue.put_nowait(e)
            if queue.qsize() % 7 == 0:  # interleave with the collector
                await asyncio.sleep(0)

    task = asyncio.create_task(producer())
    seen: list[Pending[Rows]] = []
    leftover = None
    while len(seen) < len(entries):
        got = await collect_batch(queue, max_texts=5, max_wait_s=0.001, leftover=leftover)
        assert got.texts <= 5 or len(got.batch) == 1
        seen += got.batch
        leftover = got.leftover
    await task
    assert seen == entries  # each once, in order


# --- knobs -------------------------------------------------------------------------------------------

GOOD: dict[str, Any] = dict(max_batch_size=4, max_wait_ms=1.0, max_queue_size=4, timeout_s=1.0)


@pytest.mark.parametrize(
    ("knob", "value"),
    [
        ("max_batch_size", 0),
        ("max_batch_size", 2.5),
        ("max_batch_size", True),
        ("max_queue_size", 0),
        ("max_queue_size", -3),
        ("max_wait_ms", -1.0),
        ("max_wait_ms", float("nan")),
        ("timeout_s", 0.0),
        ("timeout_s", -1.0),
        ("retry_after_s", -1),
        ("inline_max_chars", -1),
        ("inline_max_chars", 1.5),
        ("inline_max_chars", True),
    ],
)
def test_bad_knobs_are_refused_in_the_constructor(knob: str, value: Any) -> None:
    with pytest.raises(ValueError, match=knob):
        Batcher("m", upper, **{**GOOD, knob: value})


def test_a_name_is_required() -> None:
    with pytest.raises(ValueError, match="name"):
        Batcher("", upper, **GOOD)


# --- the class -----------------------------------------------------------------------------------------


class Gate:
    """A predict function that blocks until opened, and records every call."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> Rows:
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            self.calls.append(list(texts))
        self.entered.set()
        self.open.wait(timeout=30)
        with self._lock:
            self.concurrent -= 1
        return upper(texts)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll a condition with a deadline (the event loop keeps running in between)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_each_request_gets_its_own_rows_from_a_shared_batch() -> None:
    gate = Gate()
    batcher = Batcher("m", gate, **{**GOOD, "max_batch_size": 64, "max_queue_size": 64})
    await batcher.start()
    try:
        gate.open.set()
        requests = [[f"r{i}-{j}" for j in range(1 + i % 3)] for i in range(20)]
        answers = await asyncio.gather(*(batcher.submit(texts) for texts in requests))
        for texts, answer in zip(requests, answers, strict=True):
            assert answer.output.values == [t.upper() for t in texts]
            assert answer.queue_ms >= 0 and answer.inference_ms >= 0
        assert len(gate.calls) < len(requests)  # some requests shared a runtime call
        assert sorted(t for call in gate.calls for t in call) == sorted(t for r in requests for t in r)
        assert gate.max_concurrent == 1  # one thread per model
    finally:
        await batcher.stop()


@pytest.mark.asyncio
async def test_a_full_queue_is_refused_at_once_with_retry_after() -> None:
    gate = Gate()
    batcher = Batcher("m", gate, **{**GOOD, "max_batch_size": 1, "max_queue_size": 2}, retry_after_s=3)
    await batcher.start()
    try:
        running = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.to_thread(gate.entered.wait, 10)  # "a" is inside predict
        queued = [asyncio.ensure_future(batcher.submit([t])) for t in ("b", "c")]
        await wait_until(lambda: batcher.depth == 2)
        with pytest.raises(QueueFull) as refused:
            await batcher.submit(["d"])
        assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "3"
        gate.open.set()
        answers = await asyncio.gather(running, *queued)
        assert [a.output.values for a in answers] == [["A"], ["B"], ["C"]]
        assert [t for call in gate.calls for t in call] == ["a", "b", "c"]  # "d" never ran
    finally:
        gate.open.set()
        await batcher.stop()


@pytest.mark.asyncio
async def test_a_request_past_its_deadline_gets_504_and_is_not_run() -> None:
    gate = Gate()
    batcher = Batcher("m", gate, **{**GOOD, "max_batch_size": 1, "timeout_s": 0.2})
    await batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(["slow"]))
        await asyncio.to_thread(gate.entered.wait, 10)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(["late"])  # waits behind "slow" until its deadline
        with pytest.raises(DeadlineExceeded):
            await first  # the running one times out too; its late result is dropped
        gate.open.set()
        after = await batcher.submit(["after"])
        assert after.output.values == ["AFTER"]
        assert "late" not in [t for call in gate.calls for t in call]
    finally:
        gate.open.set()
        await batcher.stop()


@pytest.mark.asyncio
async def test_a_cancelled_request_is_skipped_before_inference() -> None:
    gate = Gate()
    batcher = Batcher("m", gate, **{**GOOD, "max_batch_size": 1})
    await batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.to_thread(gate.entered.wait, 10)
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        await wait_until(lambda: batcher.depth == 1)
        gone.cancel()
        gate.open.set()
        assert (await first).output.values == ["FIRST"]
        assert (await batcher.submit(["next"])).output.values == ["NEXT"]
        assert [t for call in gate.calls for t in call] == ["first", "next"]
    finally:
        gate.open.set()
        await batcher.stop()


@pytest.mark.asyncio
async def test_a_failing_runtime_fails_its_batch_and_the_batcher_keeps_serving() -> None:
    def flaky(texts: list[str]) -> Rows:
        if "boom" in texts:
            raise RuntimeError("runtime exploded")
        return upper(texts)

    batcher = Batcher("m", flaky, **GOOD)
    await batcher.start()
    try:
        with pytest.raises(InferenceFailed) as failed:
            await batcher.submit(["boom"])
        assert "exploded" not in failed.value.message  # the client gets no internals
        assert (await batcher.submit(["ok"])).output.values == ["OK"]
    finally:
        await batcher.stop()


@pytest.mark.asyncio
async def test_small_batches_run_on_the_loops_thread_and_larger_ones_on_the_models() -> None:
    threads: dict[str, str] = {}

    def where(texts: list[str]) -> Rows:
        threads[texts[0]] = threading.current_thread().name
        if texts == ["boom"]:
            raise RuntimeError("runtime exploded")
        return upper(texts)

    batcher = Batcher("m", where, **GOOD, inline_max_chars=10)
    await batcher.start()
    try:
        assert (await batcher.submit(["short", "12345"])).output.values == ["SHORT", "12345"]  # 10 characters
        assert (await batcher.submit(["longer", "12345"])).output.values == ["LONGER", "12345"]  # 11
        with pytest.raises(InferenceFailed):  # a failure inline is the batch's failure, as on the thread
            await batcher.submit(["boom"])
        assert (await batcher.submit(["ok"])).output.values == ["OK"]
    finally:
        await batcher.stop()
    assert threads["short"] == threads["boom"] == threads["ok"] == threading.current_thread().name
    assert threads["longer"].startswith("infer-m")


@pytest.mark.asyncio
async def test_a_runtime_returning_the_wrong_row_count_is_an_inference_failure() -> None:
    batcher = Batcher("m", lambda texts: Rows(["only one"]), **GOOD)
    await batcher.start()
    try:
        with pytest.raises(InferenceFailed):
            await batcher.submit(["a", "b"])
    finally:
        await batcher.stop()


@pytest.mark.asyncio
async def test_stop_answers_waiting_requests_and_refuses_new_ones() -> None:
    gate = Gate()
    batcher = Batcher("m", gate, **{**GOOD, "max_batch_size": 1})
    await batcher.start()
    running = asyncio.ensure_future(batcher.submit(["running"]))
    await asyncio.to_thread(gate.entered.wait, 10)
    waiting = asyncio.ensure_future(batcher.submit(["waiting"]))
    await wait_until(lambda: batcher.depth == 1)
    stopping = asyncio.ensure_future(batcher.stop())
    await wait_until(lambda: waiting.done())
    gate.open.set()
    await stopping
    for task in (running, waiting):
        with pytest.raises(ShuttingDown):
            await task
    with pytest.raises(ShuttingDown):
        await batcher.submit(["new"])
    assert not batcher.running


@pytest.mark.asyncio
async def test_a_request_cancelled_while_its_batch_fills_is_skipped() -> None:
    gate = Gate()
    gate.open.set()
    depths: list[int] = []

    class Depths(NullObserver):
        def queue_depth(self, depth: int) -> None:
            depths.append(depth)

    batcher = Batcher("m", gate, **{**GOOD, "max_batch_size": 2, "max_wait_ms": 30_000.0}, observer=Depths())
    await batcher.start()
    try:
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        await wait_until(lambda: 1 in depths and batcher.depth == 0)  # queued, then taken into the window
        gone.cancel()
        answer = await batcher.submit(["stays"])  # fills the batch: the window closes at once
        assert answer.output.values == ["STAYS"]
        assert gate.calls == [["stays"]]
    finally:
        await batcher.stop()
