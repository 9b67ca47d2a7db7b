"""Answer options on /v1/classify, /v1/teacher/classify and /v1/cascade/classify (issue 12, item 3):
``top_k``, ``threshold`` and ``raw``, in-process on the tiny real student and teacher."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.runtimes.onnx_session import softmax
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime

pytestmark = pytest.mark.asyncio
ROUTES = ["/v1/classify", "/v1/teacher/classify", "/v1/cascade/classify"]
ATOL = 1e-5


def _labels_best_first(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda label: -scores[label])


async def test_absent_options_answer_exactly_as_before(serve: Any, tiny_teacher: Path, texts: list[str]) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        for route in ROUTES:
            plain = await client.post(route, json={"texts": texts[:3]})
            spelled = await client.post(route, json={"texts": texts[:3], "top_k": None, "threshold": None,
                                                     "raw": False})
            assert plain.status_code == spelled.status_code == 200
            assert plain.content == spelled.content  # the defaults are the answer of before, byte for byte
            for result in plain.json()["results"]:
                assert "logits" not in result
                labels = list(result["scores"])
                assert labels == TeacherRuntime.load(tiny_teacher).labels  # every label, in the model's order


@pytest.mark.parametrize("route", ROUTES)
async def test_top_k_keeps_the_best_labels_first_and_the_label_stays(
    serve: Any, tiny_teacher: Path, texts: list[str], route: str
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        full = (await client.post(route, json={"texts": texts})).json()["results"]
        one = (await client.post(route, json={"texts": texts, "top_k": 1})).json()["results"]
        many = (await client.post(route, json={"texts": texts, "top_k": 50})).json()["results"]
    for f, o, m in zip(full, one, many, strict=True):
        assert o["scores"] == {f["label"]: f["score"]} and o["label"] == f["label"] and o["score"] == f["score"]
        assert list(m["scores"]) == _labels_best_first(f["scores"])  # k above the label count: all, best first
        assert m["scores"] == f["scores"]


@pytest.mark.parametrize("route", ROUTES)
async def test_threshold_drops_labels_below_it(serve: Any, tiny_teacher: Path, texts: list[str], route: str) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        full = (await client.post(route, json={"texts": texts})).json()["results"]
        half = (await client.post(route, json={"texts": texts, "threshold": 0.5})).json()["results"]
        none = (await client.post(route, json={"texts": texts, "threshold": 1.0, "top_k": 2})).json()["results"]
    for f, h, n in zip(full, half, none, strict=True):
        assert h["scores"] == {k: v for k, v in f["scores"].items() if v >= 0.5}
        assert h["label"] == f["label"] and h["score"] == f["score"]
        assert n["scores"] == {k: v for k, v in f["scores"].items() if v >= 1.0}  # usually none is left
        assert n["label"] == f["label"]


async def test_raw_gives_the_runtimes_logits(
    serve: Any, tiny_student: Path, tiny_teacher: Path, texts: list[str]
) -> None:
    student, teacher = StudentRuntime.load(tiny_student), TeacherRuntime.load(tiny_teacher)
    async with serve(teacher=[tiny_teacher]) as client:
        s = (await client.post("/v1/classify", json={"texts": texts, "raw": True})).json()["results"]
        t = (await client.post("/v1/teacher/classify", json={"texts": texts, "raw": True})).json()["results"]
    for results, runtime in ((s, student), (t, teacher)):
        logits = np.array([[r["logits"][label] for label in runtime.labels] for r in results])
        np.testing.assert_allclose(logits, runtime.predict(texts).logits, rtol=0, atol=1e-4)
        scores = np.array([[r["scores"][label] for label in runtime.labels] for r in results])
        np.testing.assert_allclose(softmax(logits), scores, rtol=0, atol=ATOL)
    assert np.std([r["logits"][student.labels[0]] for r in s]) > 1e-3  # logits that vary: the check means something


async def test_the_cascade_answers_raw_logits_of_the_model_that_answered(
    serve: Any, tiny_student: Path, tiny_teacher: Path, texts: list[str]
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        route = "/v1/cascade/classify"
        all_teacher = (await client.post(route, json={"texts": texts, "raw": True, "top_k": 1,
                                                      "confidence_threshold": 1.0})).json()["results"]
        all_student = (await client.post(route, json={"texts": texts, "raw": True, "confidence_threshold": 0.0,
                                                      "coverage_threshold": 0.0})).json()["results"]
        teacher = (await client.post("/v1/teacher/classify", json={"texts": texts, "raw": True})).json()["results"]
        student = (await client.post("/v1/classify", json={"texts": texts, "raw": True})).json()["results"]
    assert {r["answered_by"] for r in all_teacher} == {"teacher"}
    assert [r["logits"] for r in all_teacher] == [r["logits"] for r in teacher]
    assert [r["scores"] for r in all_teacher] == [{r["label"]: r["score"]} for r in teacher]
    assert {r["answered_by"] for r in all_student} == {"student"}
    assert [r["logits"] for r in all_student] == [r["logits"] for r in student]


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/teacher/classify"])
async def test_batched_answers_with_options_equal_single_ones(
    serve: Any, tiny_teacher: Path, mr_small: Any, route: str
) -> None:
    texts = mr_small.dev.texts[:24]
    options = {"top_k": 1, "raw": True}
    async with serve(teacher=[tiny_teacher], max_wait_ms=50.0) as client:
        single = [(await client.post(route, json={"texts": [t], **options})).json()["results"][0] for t in texts]
        groups = [texts[i : i + 3] for i in range(0, len(texts), 3)]
        # Concurrent requests with different options share batches; each gets its own options applied.
        answers = await asyncio.gather(*(client.post(route, json={"texts": g, **(options if i % 2 else {})})
                                         for i, g in enumerate(groups)))
    for i, (group, answer) in enumerate(zip(groups, answers, strict=True)):
        for text, got in zip(group, answer.json()["results"], strict=True):
            want = single[texts.index(text)]
            assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=ATOL)
            if i % 2:
                assert list(got["scores"]) == [want["label"]]
                np.testing.assert_allclose(list(got["logits"].values()), list(want["logits"].values()),
                                           rtol=0, atol=1e-4)
            else:
                assert "logits" not in got and len(got["scores"]) == len(want["logits"])


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"top_k": 0}, "top_k: Input should be greater than or equal to 1"),
        ({"top_k": -2}, "top_k: Input should be greater than or equal to 1"),
        ({"top_k": 1.5}, "top_k: Input should be a valid integer"),
        ({"top_k": "2"}, "top_k: Input should be a valid integer"),
        ({"top_k": True}, "top_k: Input should be a valid integer"),
        ({"threshold": -0.1}, "threshold: Input should be greater than or equal to 0"),
        ({"threshold": 1.5}, "threshold: Input should be less than or equal to 1"),
        ({"threshold": "0.5"}, "threshold: Input should be a valid number"),
        ({"threshold": math.nan}, "threshold: Input should be a finite number"),
        ({"raw": "yes"}, "raw: Input should be a valid boolean"),
        ({"raw": 1}, "raw: Input should be a valid boolean"),
    ],
)
async def test_bad_option_values_are_422_in_the_one_error_shape(
    serve: Any, tiny_teacher: Path, route: str, fields: dict[str, Any], fragment: str
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.post(route, content=json.dumps({"texts": ["a fine film"], **fields}),
                              headers={"content-type": "application/json"})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == "invalid_input" and fragment in body["error"]["message"], body


async def test_the_options_are_in_the_openapi_schema_with_bounds_and_descriptions(serve: Any) -> None:
    async with serve() as client:
        schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    for name in ("ClassifyRequest", "CascadeRequest"):
        props = components[name]["properties"]
        top_k = next(s for s in props["top_k"]["anyOf"] if s.get("type") == "integer")
        threshold = next(s for s in props["threshold"]["anyOf"] if s.get("type") == "number")
        assert top_k["minimum"] == 1
        assert threshold["minimum"] == 0 and threshold["maximum"] == 1
        assert props["raw"]["type"] == "boolean" and props["raw"]["default"] is False
        assert all(props[k]["description"] for k in ("top_k", "threshold", "raw"))
    prediction = components["TeacherPrediction"]["properties"]
    assert "raw" in prediction["logits"]["description"]
