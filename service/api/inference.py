"""What the inference routes share: run texts through a model's batcher, shape the answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request, Response
from pydantic import BaseModel

from service.answers import AnswerOptions, answer_rows
from service.errors import ClientClosed
from service.ops.logging_setup import note_inference
from service.repository.registry import ServedModel
from service.runtimes.contract import Predictions

from .schemas import AnswerFields, StudentPrediction, TeacherPrediction

QUEUE_TIME_HEADER = "x-queue-time-ms"
INFERENCE_TIME_HEADER = "x-inference-time-ms"

T = TypeVar("T")
DEFAULT_ANSWER = AnswerOptions()


@dataclass(frozen=True)
class Timed:
    predictions: Predictions
    queue_ms: float
    inference_ms: float
    wall_ms: float  # submit to answer, as the route saw it


async def _client_gone(request: Request) -> None:
    """Returns when the server reports the client's disconnect (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_client_leaves(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (its queued texts are then skipped).

    ``work`` runs in the caller's task; only the disconnect watcher is a task of its own (one task per
    request, not two and an ``asyncio.wait``: this is on every inference request's path)."""
    current = asyncio.current_task()
    assert current is not None, "until_client_leaves runs inside a task"
    left = finished = False

    def on_leave(watcher: asyncio.Future[None]) -> None:
        nonlocal left
        # ``finished``: the callback can be queued just before the work returned; the task is then past
        # this function (sending its answer) and must not be cancelled.
        if not finished and not watcher.cancelled() and watcher.exception() is None:
            left = True
            current.cancel()

    watcher = asyncio.ensure_future(_client_gone(request))
    watcher.add_done_callback(on_leave)
    try:
        return await work
    except asyncio.CancelledError:
        if left and current.uncancel() == 0:  # cancelled by the watcher alone, not by the server
            raise ClientClosed("the client closed the connection before the answer was ready") from None
        raise
    finally:
        finished = True
        watcher.remove_done_callback(on_leave)
        watcher.cancel()


async def gather_or_cancel(*work: Awaitable[T]) -> list[T]:
    """All results, or the first error with the other parts cancelled (``asyncio.gather`` leaves them
    running: a compare whose teacher queue is full would still run its student batch for nobody)."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def run_model(model: ServedModel, texts: list[str]) -> Timed:
    started = time.perf_counter()
    answer = await model.batcher.submit(texts)
    wall_ms = (time.perf_counter() - started) * 1000.0
    note_inference(len(texts), answer.queue_ms, answer.inference_ms)
    return Timed(answer.output, answer.queue_ms, answer.inference_ms, wall_ms)


def answer_options(body: AnswerFields) -> AnswerOptions:
    """A request's answer options (already validated by its schema)."""
    return AnswerOptions(top_k=body.top_k, threshold=body.threshold, raw=body.raw)


def set_timing(response: Response, queue_ms: float, inference_ms: float) -> None:
    response.headers[QUEUE_TIME_HEADER] = f"{queue_ms:.3f}"
    response.headers[INFERENCE_TIME_HEADER] = f"{inference_ms:.3f}"


def teacher_results(
    predictions: Predictions, labels: list[str], options: AnswerOptions = DEFAULT_ANSWER
) -> list[TeacherPrediction]:
    return [
        TeacherPrediction(label=a["label"], score=a["score"], scores=a["scores"], logits=a.get("logits"))
        for a in answer_rows(predictions, labels, options)
    ]


def student_results(
    predictions: Predictions, labels: list[str], options: AnswerOptions = DEFAULT_ANSWER
) -> list[StudentPrediction]:
    rows = answer_rows(predictions, labels, options)
    for row in rows:  # a student's predictions carry both; a runtime that has none reports zero
        row.setdefault("coverage", 0.0)
        row.setdefault("ngrams_found", 0)
    return [StudentPrediction(**row) for row in rows]


def json_answer(body: BaseModel, queue_ms: float, inference_ms: float) -> Response:
    """``body`` as the JSON response, with the timing headers.

    A route that returns a Response skips FastAPI's second validation and dump of the body (its
    ``response_model`` still documents it); the body was validated when it was built."""
    response = Response(body.model_dump_json(), media_type="application/json")
    set_timing(response, queue_ms, inference_ms)
    return response
