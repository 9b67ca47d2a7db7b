"""Invariants of the batched service (STYLE.md 9): batched answers equal one-by-one answers, and the
student's answers equal the runtime's direct answers (the export tests cover runtime == PyTorch)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime

pytestmark = pytest.mark.asyncio

ATOL = 1e-6  # the head's GEMM may round differently for another batch shape


def probabilities(results: list[dict[str, Any]], labels: list[str]) -> np.ndarray:
    return np.array([[r["scores"][label] for label in labels] for r in results])


async def test_student_answers_equal_the_runtime_direct_answers(
    serve: Any, tiny_student: Path, mr_small: Any
) -> None:
    texts = mr_small.dev.texts[:40]
    runtime = StudentRuntime.load(tiny_student)
    direct = runtime.predict(texts)
    async with serve() as client:
        results = (await client.post("/v1/classify", json={"texts": texts})).json()["results"]
    np.testing.assert_allclose(probabilities(results, runtime.labels), direct.probabilities, rtol=0, atol=ATOL)
    np.testing.assert_allclose([r["coverage"] for r in results], direct.coverage, rtol=0, atol=1e-12)
    assert [r["ngrams_found"] for r in results] == direct.ngrams_found.tolist()


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/teacher/classify"])
async def test_concurrent_requests_are_batched_and_equal_one_by_one(
    serve: Any, tiny_teacher: Path, mr_small: Any, route: str
) -> None:
    texts = mr_small.dev.texts[:48]
    labels = TeacherRuntime.load(tiny_teacher).labels
    # A wide window so concurrent requests share runtime calls.
    async with serve(teacher=[tiny_teacher], max_wait_ms=50.0) as client:
        one_by_one = [(await client.post(route, json={"texts": [t]})).json()["results"][0] for t in texts]
        metrics_before = (await client.get("/metrics")).text
        groups = [texts[i : i + 1 + i % 3] for i in range(0, len(texts), 3)]  # requests of 1-3 texts
        answers = await asyncio.gather(*(client.post(route, json={"texts": g}) for g in groups))
        metrics_after = (await client.get("/metrics")).text
    batched = [r for answer in answers for r in answer.json()["results"]]
    sent = [t for g in groups for t in g]
    expected = [one_by_one[texts.index(t)] for t in sent]
    np.testing.assert_allclose(probabilities(batched, labels), probabilities(expected, labels), rtol=0, atol=ATOL)
    assert [r["label"] for r in batched] == [r["label"] for r in expected]
    # Fewer runtime calls than requests: the batcher did batch.
    model = "mr-tiny" if route == "/v1/classify" else tiny_teacher.name
    calls = batch_count(metrics_after, model) - batch_count(metrics_before, model)
    assert 1 <= calls < len(groups)


def batch_count(metrics: str, model: str) -> float:
    prefix = f'sd_batch_texts_count{{model="{model}"}} '
    line = next(line for line in metrics.splitlines() if line.startswith(prefix))
    return float(line.removeprefix(prefix))


async def test_a_request_larger_than_the_batch_size_is_answered_whole(serve: Any, mr_small: Any) -> None:
    texts = mr_small.dev.texts[:20]
    async with serve(max_batch_size=4) as client:
        big = (await client.post("/v1/classify", json={"texts": texts})).json()["results"]
        single = [(await client.post("/v1/classify", json={"texts": [t]})).json()["results"][0] for t in texts]
    assert [r["label"] for r in big] == [r["label"] for r in single]
    np.testing.assert_allclose(probabilities(big, ["negative", "positive"]),
                               probabilities(single, ["negative", "positive"]), rtol=0, atol=ATOL)
