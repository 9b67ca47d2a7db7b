"""POST /v1/explain: for each text, the n-grams that moved the student's label most (service/runtimes/explain.py).

Decisions:
- Students only. A DAN's leave-one-out is exact and cheap; a teacher's is neither, so a teacher's name
  is answered 422 with that reason (a name that is no model at all is 404, as on /v1/classify).
- Limits and validation are /v1/classify's (the same ``Text`` schema and ``check_limits``).
- Explanations do not go through the model's batcher (its output is probabilities, not this); they run
  on their own threads, at most ``max_concurrent_explanations`` at a time per process. One more is
  answered 503 with Retry-After at once (bounded admission, never an unbounded queue). The runtime's
  pieces they use (the featurizer's arrays, onnxruntime sessions) are safe to share across threads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response

from service.api.deps import RegistryDep, SettingsDep, check_limits
from service.api.explain_schemas import ExplainRequest, ExplainResponse, NgramEffect, TextExplanation
from service.api.inference import set_timing, until_client_leaves
from service.api.responses import INFERENCE_ERRORS
from service.errors import InvalidInput, QueueFull
from service.repository.registry import ModelRegistry, ServedModel
from service.runtimes.explain import Explanation, explain
from service.runtimes.student import StudentRuntime

T = TypeVar("T")

router = APIRouter(prefix="/v1", tags=["v1"], responses=INFERENCE_ERRORS)


class ExplainWorkers:
    """The threads explanations run on, at most ``limit`` at once; one over is refused at once (503).

    A slot is given back when the work ends on its thread (or is cancelled before it starts), not when
    the request ends: a client that leaves does not free a thread that is still busy for it."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self.retry_after_s = retry_after_s
        self._running = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # made on first use, so an app can be started again

    @property
    def running(self) -> int:
        return self._running

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        with self._lock:
            if self._running >= self.limit:
                raise QueueFull(f"{self.limit} explanations are running; retry later", self.retry_after_s)
            self._running += 1
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.limit, thread_name_prefix="explain")
        future = self._pool.submit(work)
        future.add_done_callback(self._done)  # first: the slot is free before the awaiting route resumes
        return asyncio.wrap_future(future)

    def _done(self, _: Future[Any]) -> None:
        with self._lock:
            self._running -= 1

    def close(self) -> None:
        """At shutdown: work not started is cancelled; running work ends on its thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def student_to_explain(registry: ModelRegistry, name: str | None) -> ServedModel:
    found = registry.find(name) if name is not None else None
    if found is not None and found.kind == "teacher":
        raise InvalidInput(f"{name!r} is a teacher; explanations are for students only (a DAN's leave-one-out "
                           "is exact; a transformer's is not)")
    return registry.get("student", name)


@router.post("/explain", response_model=ExplainResponse, summary="Which n-grams moved the student's label")
async def explain_route(
    body: ExplainRequest, request: Request, response: Response, registry: RegistryDep, settings: SettingsDep
) -> ExplainResponse:
    """Each distinct in-vocabulary n-gram of a text is left out (all its occurrences), the text pooled
    again without it, and all of them go through the head in one call: its effect on a label is the
    probability with it minus the probability without it. Exact for a DAN. Students only."""
    check_limits(body.texts, settings)
    model = student_to_explain(registry, body.model)
    runtime = model.runtime
    if not isinstance(runtime, StudentRuntime):  # the registry's students are StudentRuntimes
        raise InvalidInput(f"{model.name!r} cannot be explained")
    workers: ExplainWorkers = request.app.state.explain_workers
    started = time.perf_counter()
    work = workers.submit(partial(explain, runtime, body.texts, body.top_n))
    explained = await until_client_leaves(request, work)
    set_timing(response, 0.0, (time.perf_counter() - started) * 1000.0)
    return ExplainResponse(model=model.name, results=[shaped(e, model.labels) for e in explained])


def shaped(e: Explanation, labels: list[str]) -> TextExplanation:
    predicted = e.predicted
    return TextExplanation(
        label=labels[predicted],
        score=float(e.probabilities[predicted]),
        scores={label: float(p) for label, p in zip(labels, e.probabilities, strict=True)},
        coverage=e.coverage,
        ngrams_found=e.ngrams_found,
        distinct_ngrams=e.distinct_ngrams,
        ngrams=[
            NgramEffect(
                ngram=g.ngram, count=g.count, spans=g.spans, effect=float(g.deltas[predicted]),
                deltas={label: float(d) for label, d in zip(labels, g.deltas, strict=True)},
            )
            for g in e.effects
        ],
    )
