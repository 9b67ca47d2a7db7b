"""Dynamic batching: one small queue and one worker thread per model.

A request of k texts is one ``Pending`` entry; a batch is capped by texts, not requests (k counts as
k). Admission is bounded: a full queue answers at once (503 + Retry-After), never waits. A request
whose client has gone (its future is cancelled) or whose deadline has passed is dropped before
inference. Inference runs on the model's own single thread, off the event loop, so a runtime is never
called from two threads at once and the loop keeps answering health checks and admissions. A batch
of at most ``inline_max_chars`` characters runs on the loop's thread instead: for a small student batch
(tens of microseconds) the hop to the thread and back costs more than the inference
(reports/bench-notes.md). Batches still run one at a time, so the runtime still sees one caller.

``collect_batch`` is the pure part: it takes entries from a plain ``asyncio.Queue`` and decides what
goes into the next batch; the ``Batcher`` class owns the queue, the task and the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, Self, TypeVar

from service.errors import DeadlineExceeded, InferenceFailed, QueueFull, ShuttingDown

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class BatchOutput(Protocol):
    """What a model's predict function returns for n texts: n rows that can be sliced."""

    def __len__(self) -> int: ...

    def rows(self, start: int, stop: int) -> Self: ...


OutputT = TypeVar("OutputT", bound=BatchOutput)


@dataclass(frozen=True)
class Answer(Generic[OutputT]):
    output: OutputT  # this request's rows only
    queue_ms: float
    inference_ms: float
    batch_texts: int  # texts in the runtime call that answered it


@dataclass(eq=False)
class Pending(Generic[OutputT]):
    texts: list[str]
    future: asyncio.Future[Answer[OutputT]]
    enqueued_at: float
    deadline: float


@dataclass
class Collected(Generic[OutputT]):
    batch: list[Pending[OutputT]] = field(default_factory=list)
    expired: list[Pending[OutputT]] = field(default_factory=list)  # waited past their deadline
    gone: int = 0  # entries whose future was already done (client left): skipped
    leftover: Pending[OutputT] | None = None  # did not fit: first of the next batch

    @property
    def texts(self) -> int:
        return sum(len(p.texts) for p in self.batch)


async def collect_batch(
    queue: asyncio.Queue[Pending[OutputT]],
    max_texts: int,
    max_wait_s: float,
    leftover: Pending[OutputT] | None = None,
    clock: Clock = time.monotonic,
) -> Collected[OutputT]:
    """Wait for one live entry, then gather more for up to ``max_wait_s`` or until ``max_texts``.

    A first entry larger than ``max_texts`` forms a batch alone (the runtime splits it further).
    An entry that would overflow the batch is returned as ``leftover`` and never lost. When the first
    entry is dead (gone or expired) the result has an empty batch, so the caller answers it at once.
    """
    out: Collected[OutputT] = Collected()

    def admit(entry: Pending[OutputT]) -> bool:
        """Place ``entry``; False when it does not fit in this batch."""
        if entry.future.done():
            out.gone += 1
        elif clock() >= entry.deadline:
            out.expired.append(entry)
        elif out.batch and out.texts + len(entry.texts) > max_texts:
            return False
        else:
            out.batch.append(entry)
        return True

    admit(leftover if leftover is not None else await queue.get())
    if not out.batch:
        return out
    window_end = clock() + max_wait_s
    while out.texts < max_texts:
        try:
            entry = queue.get_nowait()
        except asyncio.QueueEmpty:
            remaining = window_end - clock()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    entry = await queue.get()
            except TimeoutError:
                break
        if not admit(entry):
            out.leftover = entry
            break
    return out


class BatchObserver(Protocol):
    """Where a batcher reports what it does (Prometheus in the service; nothing in unit tests)."""

    def queue_depth(self, depth: int) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def batch_done(self, texts: int, requests: int, inference_s: float, queue_s: list[float]) -> None: ...


class NullObserver:
    def queue_depth(self, depth: int) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def batch_done(self, texts: int, requests: int, inference_s: float, queue_s: list[float]) -> None:
        pass


class Batcher(Generic[OutputT]):
    """Queues requests for one model, runs them in batches on one thread, answers each its rows."""

    def __init__(
        self,
        name: str,
        predict: Callable[[list[str]], OutputT],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        max_queue_size: int,
        timeout_s: float,
        retry_after_s: int = 1,
        inline_max_chars: int = 0,
        observer: BatchObserver | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if not name:
            raise ValueError("name must be a non-empty string")
        for knob, value in (("max_batch_size", max_batch_size), ("max_queue_size", max_queue_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{knob} must be an integer >= 1, got {value!r}")
        if not max_wait_ms >= 0:  # also refuses NaN
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        if retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {retry_after_s!r}")
        if isinstance(inline_max_chars, bool) or not isinstance(inline_max_chars, int) or inline_max_chars < 0:
            raise ValueError(f"inline_max_chars must be an integer >= 0, got {inline_max_chars!r}")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_size = max_queue_size
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.inline_max_chars = inline_max_chars  # 0: every batch on the model's thread
        self._predict = predict
        self._observer: BatchObserver = observer or NullObserver()
        self._clock = clock
        self._queue: asyncio.Queue[Pending[OutputT]] | None = None
        self._leftover: Pending[OutputT] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._busy = False  # a batch is running
        self._last_submit = clock()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Create the queue, the thread and the task on the running loop."""
        if self._task is not None:
            raise RuntimeError(f"batcher {self.name!r} already started")
        self._queue = asyncio.Queue(maxsize=self.max_queue_size)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{self.name}")
        self._task = asyncio.create_task(self._run(), name=f"batcher-{self.name}")

    async def submit(self, texts: list[str]) -> Answer[OutputT]:
        """Queue ``texts`` and wait for their rows; raises QueueFull, DeadlineExceeded, ShuttingDown."""
        if self._closed or self._queue is None:
            raise ShuttingDown(f"model {self.name!r} is not accepting requests")
        now = self._clock()
        self._last_submit = now
        future: asyncio.Future[Answer[OutputT]] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(Pending(texts, future, now, now + self.timeout_s))
        except asyncio.QueueFull:
            self._observer.rejected("queue_full")
            raise QueueFull(
                f"model {self.name!r} has {self.max_queue_size} requests waiting; retry later",
                self.retry_after_s,
            ) from None
        self._observer.queue_depth(self._queue.qsize())
        try:
            # On timeout or cancellation (client gone) the future is cancelled: the loop skips it.
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            self._observer.rejected("deadline")
            raise DeadlineExceeded(f"model {self.name!r} did not answer within {self.timeout_s:g} s") from None

    async def stop(self) -> None:
        """Stop taking requests, answer any still queued with 503, wait for the running batch."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        waiting = [self._leftover] if self._leftover is not None else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for entry in waiting:
            if not entry.future.done():
                entry.future.set_exception(ShuttingDown(f"model {self.name!r} is shutting down"))
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)

    async def drain(self, quiet_s: float = 0.5, poll_s: float = 0.02) -> None:
        """Stop once nothing is queued or running and no request has come for ``quiet_s``, then ``stop()``.

        For a model that was replaced (a new version took its name): a request that looked the old one
        up just before the swap still gets its answer from it, not a 503."""
        quiet_since = self._clock()
        while True:
            idle = self.depth == 0 and self._leftover is None and not self._busy
            if idle and self._clock() - max(quiet_since, self._last_submit) >= quiet_s:
                break
            await asyncio.sleep(poll_s)  # polling our own queue; this is a background task
        await self.stop()

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            try:
                await self._step(self._queue)
            except Exception:  # a bug here must not silently stop the model: log, keep serving
                logger.exception("batcher %r: unexpected error", self.name)

    async def _step(self, queue: asyncio.Queue[Pending[OutputT]]) -> None:
        collected = await collect_batch(queue, self.max_batch_size, self.max_wait_s, self._leftover, self._clock)
        self._leftover = collected.leftover
        self._observer.queue_depth(queue.qsize())
        live = [entry for entry in collected.batch if not entry.future.done()]  # some left in the window
        for _ in range(collected.gone + len(collected.batch) - len(live)):
            self._observer.rejected("client_gone")
        for entry in collected.expired:
            self._observer.rejected("deadline")
            entry.future.set_exception(
                DeadlineExceeded(f"model {self.name!r}: request waited past its {self.timeout_s:g} s deadline")
            )
        if live:
            await self._infer(live)

    def _runs_inline(self, texts: list[str]) -> bool:
        """Whether a batch is small enough to run on the loop's thread (see the module docstring)."""
        if self.inline_max_chars == 0:
            return False
        chars = 0
        for text in texts:
            chars += len(text)
            if chars > self.inline_max_chars:
                return False
        return True

    async def _infer(self, batch: list[Pending[OutputT]]) -> None:
        texts = [text for entry in batch for text in entry.texts]
        started = self._clock()
        self._busy = True
        try:
            if self._runs_inline(texts):
                output = self._predict(texts)
            else:
                output = await asyncio.get_running_loop().run_in_executor(self._executor, self._predict, texts)
            if len(output) != len(texts):
                raise RuntimeError(f"predict returned {len(output)} rows for {len(texts)} texts")
        except asyncio.CancelledError:  # stop() while this batch runs: nobody waits forever
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(ShuttingDown(f"model {self.name!r} is shutting down"))
            raise
        except Exception:
            logger.exception("inference failed on model %r (%d texts)", self.name, len(texts))
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(InferenceFailed("inference failed; the error is in the server log"))
            return
        finally:
            self._busy = False
        finished = self._clock()
        queue_s = [started - entry.enqueued_at for entry in batch]
        self._observer.batch_done(len(texts), len(batch), finished - started, queue_s)
        offset = 0
        for entry, waited in zip(batch, queue_s, strict=True):
            stop = offset + len(entry.texts)
            if not entry.future.done():  # the client may have left during inference
                entry.future.set_result(
                    Answer(output.rows(offset, stop), waited * 1000.0, (finished - started) * 1000.0, len(texts))
                )
            offset = stop
