"""What the inference routes share: run texts through a model's batcher, shape the answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from fastapi import Request, Response

from service.answers import AnswerOptions, answer_rows
from service.errors import ClientClosed
from service.logging_setup import note_inference
from service.registry import ServedModel
from service.runtime import Predictions

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
    """Await ``work``; if the client disconnects first, cancel it (its queued texts are then skipped)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise ClientClosed("the client closed the connection before the answer was ready")


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
    coverage = predictions.coverage if predictions.coverage is not None else np.zeros(len(predictions))
    found = predictions.ngrams_found if predictions.ngrams_found is not None else np.zeros(len(predictions))
    return [
        StudentPrediction(**base.model_dump(), coverage=float(c), ngrams_found=int(n))
        for base, c, n in zip(teacher_results(predictions, labels, options), coverage, found, strict=True)
    ]
