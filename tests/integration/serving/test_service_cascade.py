"""POST /v1/cascade/classify, in-process on the tiny real student and teacher.

Expected deferrals are computed from the student's own /v1/classify answers with the one deferral rule
(``sdcore.cascade.defer_mask``); the teacher's part is compared with /v1/teacher/classify.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sdcore.cascade import CascadePolicy, CascadeSection, confidence, defer_mask
from sdcore.model_format import ModelFormatError
from sdcore.model_writer import store_cascade_section
from service.app import create_app
from service.runtimes.student import StudentRuntime
from training.testing.quick import copy_model

pytestmark = pytest.mark.asyncio

CASCADE = "/v1/cascade/classify"
OUT_OF_VOCABULARY = "zzqx unknownword"
STUDENT_ONLY = {"answered_by", "student_confidence"}


@pytest.fixture
def cascade_texts(texts: list[str]) -> list[str]:
    """Twelve real test sentences and one with no n-gram in the vocabulary (coverage 0)."""
    return [*texts, OUT_OF_VOCABULARY]


def student_arrays(results: list[dict[str, Any]], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (in label order) and coverage, as /v1/classify answered them."""
    probs = np.array([[r["scores"][label] for label in labels] for r in results])
    return probs, np.array([r["coverage"] for r in results])


def split_point(values: np.ndarray) -> float:
    """A threshold between two distinct middle values: some texts fall below it, some do not."""
    distinct = np.unique(values)
    assert distinct.size >= 2, f"need two distinct values to split, got {distinct}"
    middle = distinct.size // 2
    return float((distinct[middle - 1] + distinct[middle]) / 2)


def answered_by_teacher(body: dict[str, Any]) -> list[bool]:
    return [r["answered_by"] == "teacher" for r in body["results"]]


def without_cascade_fields(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in STUDENT_ONLY}


Results = list[dict[str, Any]]


async def classify_all(client: httpx.AsyncClient, texts: list[str]) -> tuple[Results, Results]:
    """The student's and the teacher's own answers (/v1/classify, /v1/teacher/classify)."""
    student = await client.post("/v1/classify", json={"texts": texts})
    teacher = await client.post("/v1/teacher/classify", json={"texts": texts})
    assert student.status_code == teacher.status_code == 200
    return student.json()["results"], teacher.json()["results"]


def assert_cascade_answers(body: dict[str, Any], student: list[dict[str, Any]], teacher: list[dict[str, Any]],
                           expected: np.ndarray) -> None:
    """Deferred texts carry the teacher's answer and the student's coverage; the others the student's answer."""
    assert answered_by_teacher(body) == expected.tolist()
    assert body["teacher_share"] == pytest.approx(expected.mean())
    for got, own, other, deferred in zip(body["results"], student, teacher, expected, strict=True):
        assert (got["coverage"], got["ngrams_found"]) == (own["coverage"], own["ngrams_found"])
        if deferred:  # the teacher ran on a subset here: padding may move the last bits
            assert got["label"] == other["label"]
            assert got["scores"] == pytest.approx(other["scores"], abs=1e-5)
        else:
            assert without_cascade_fields(got) == own


# --- the extremes are the two models -----------------------------------------------------------------


async def test_thresholds_at_zero_give_exactly_the_students_answers(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.post(CASCADE, json={"texts": cascade_texts, "confidence_threshold": 0,
                                             "coverage_threshold": 0.0})
        student = (await client.post("/v1/classify", json={"texts": cascade_texts})).json()
    assert r.status_code == 200
    for header in ("x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms"):
        assert float(r.headers[header]) >= 0.0, header
    body = r.json()
    assert (body["model"], body["teacher_model"], body["teacher_share"]) == ("mr-tiny", tiny_teacher.name, 0.0)
    assert [res["answered_by"] for res in body["results"]] == ["student"] * len(cascade_texts)
    assert [without_cascade_fields(res) for res in body["results"]] == student["results"]
    # the tiny student has no calibration stored: temperature 1, the confidence is the top probability
    assert [res["student_confidence"] for res in body["results"]] == pytest.approx(
        [res["score"] for res in student["results"]]
    )
    assert body["policy"] == {
        "temperature": 1.0, "confidence_threshold": 0.0, "coverage_threshold": 0.0,
        "sources": {"temperature": "none", "confidence_threshold": "request", "coverage_threshold": "request"},
        "rule": "thresholds", "router_threshold": None,
    }


async def test_confidence_threshold_one_gives_exactly_the_teachers_answers(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.post(CASCADE, json={"texts": cascade_texts, "confidence_threshold": 1})
        student, teacher = await classify_all(client, cascade_texts)
    assert r.status_code == 200
    body = r.json()
    assert body["teacher_share"] == 1.0
    assert [res["answered_by"] for res in body["results"]] == ["teacher"] * len(cascade_texts)
    for got, own, other in zip(body["results"], student, teacher, strict=True):
        # the same texts in one teacher request, as /v1/teacher/classify sent them: identical
        assert {k: got[k] for k in ("label", "score", "scores")} == other
        assert (got["coverage"], got["ngrams_found"]) == (own["coverage"], own["ngrams_found"])
        assert got["student_confidence"] == pytest.approx(own["score"])


async def test_no_calibration_and_no_override_defers_nothing(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.post(CASCADE, json={"texts": cascade_texts})
        models = (await client.get("/v1/models")).json()["models"]
    body = r.json()
    assert r.status_code == 200 and body["teacher_share"] == 0.0
    assert set(body["policy"]["sources"].values()) == {"none"}
    assert models[0]["kind"] == "student" and models[0]["cascade"] is None


# --- only the texts the rule picks are deferred ----------------------------------------------------------


async def test_low_coverage_texts_and_only_they_go_to_the_teacher(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        student, teacher = await classify_all(client, cascade_texts)
        labels = list(student[0]["scores"])
        probs, coverage = student_arrays(student, labels)
        threshold = split_point(coverage)
        r = await client.post(CASCADE, json={"texts": cascade_texts, "coverage_threshold": threshold})
    expected = defer_mask(probs, coverage, CascadePolicy(coverage_threshold=threshold))
    assert expected.tolist() == (coverage < threshold).tolist()
    assert 0 < expected.sum() < len(cascade_texts)
    assert expected[-1]  # the out-of-vocabulary text
    assert r.status_code == 200
    assert_cascade_answers(r.json(), student, teacher, expected)


async def test_low_confidence_texts_and_only_they_go_to_the_teacher(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        student, teacher = await classify_all(client, cascade_texts)
        labels = list(student[0]["scores"])
        probs, coverage = student_arrays(student, labels)
        threshold = split_point(probs.max(axis=1))
        r = await client.post(CASCADE, json={"texts": cascade_texts, "confidence_threshold": threshold})
    expected = defer_mask(probs, coverage, CascadePolicy(confidence_threshold=threshold))
    assert expected.tolist() == (probs.max(axis=1) < threshold).tolist()
    assert 0 < expected.sum() < len(cascade_texts)
    assert r.status_code == 200
    assert_cascade_answers(r.json(), student, teacher, expected)


# --- where the policy comes from -------------------------------------------------------------------------


@pytest.fixture
def calibrated_student(tiny_student: Path, tmp_path: Path, cascade_texts: list[str]) -> tuple[Path, dict[str, Any]]:
    """A copy of the tiny student with a cascade section stored as ``training.stages.cascade`` stores it.

    The operating point is picked from the runtime's answers so that it splits the test texts on
    both thresholds; the route's behaviour is then checked against the service's own answers.
    """
    out = StudentRuntime.load(tiny_student).predict(cascade_texts)
    temperature = 2.0
    point = {
        "confidence_threshold": split_point(confidence(out.probabilities, temperature)),
        "coverage_threshold": split_point(out.coverage[out.coverage > 0]),  # keeps some low-confidence-only
        "dev_acc": 0.71, "teacher_share": 0.4,
    }
    section = {"temperature": temperature, "tolerance": 0.005, "teacher_dev_acc": 0.72,
               "operating_point": point, "curve": [point]}
    root = copy_model(tiny_student, tmp_path / "mr-tiny")
    store_cascade_section(root, section)
    return root, section


async def test_the_manifests_operating_point_is_used_when_nothing_overrides_it(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path, calibrated_student: tuple[Path, dict[str, Any]]
) -> None:
    root, section = calibrated_student
    stored = CascadeSection.model_validate(section).policy()
    async with serve(student=[root], teacher=[tiny_teacher]) as client:
        student, teacher = await classify_all(client, cascade_texts)
        r = await client.post(CASCADE, json={"texts": cascade_texts})
        mixed = await client.post(CASCADE, json={"texts": cascade_texts, "confidence_threshold": 0.0})
        models = (await client.get("/v1/models")).json()["models"]
    labels = list(student[0]["scores"])
    probs, coverage = student_arrays(student, labels)

    body = r.json()
    assert r.status_code == 200
    assert body["policy"] == {**stored.to_dict(), "sources": dict.fromkeys(
        ("temperature", "confidence_threshold", "coverage_threshold"), "manifest"),
        "rule": "thresholds", "router_threshold": None}
    expected = defer_mask(probs, coverage, stored)
    low_conf = confidence(probs, stored.temperature) < stored.confidence_threshold
    low_cov = coverage < stored.coverage_threshold
    assert (low_conf & ~low_cov).any() and (low_cov & ~low_conf).any() and not expected.all()  # both reasons
    assert_cascade_answers(body, student, teacher, expected)
    assert [res["student_confidence"] for res in body["results"]] == pytest.approx(
        confidence(probs, stored.temperature).tolist()
    )

    # a request overriding one threshold keeps the other (and the temperature) from the manifest
    mixed_body = mixed.json()
    assert mixed_body["policy"]["sources"] == {
        "temperature": "manifest", "confidence_threshold": "request", "coverage_threshold": "manifest"
    }
    assert answered_by_teacher(mixed_body) == low_cov.tolist()

    point = section["operating_point"]
    assert models[0]["cascade"] == {
        "temperature": 2.0, "confidence_threshold": point["confidence_threshold"],
        "coverage_threshold": point["coverage_threshold"], "dev_acc": 0.71, "teacher_share": 0.4,
        "teacher_dev_acc": 0.72, "tolerance": 0.005,
    }
    assert models[1]["kind"] == "teacher" and models[1]["cascade"] is None


async def test_server_settings_come_between_the_request_and_the_manifest(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path, calibrated_student: tuple[Path, dict[str, Any]]
) -> None:
    root, section = calibrated_student
    async with serve(student=[root], teacher=[tiny_teacher], cascade_confidence_threshold=1.0) as client:
        from_settings = (await client.post(CASCADE, json={"texts": cascade_texts})).json()
        from_request = (await client.post(CASCADE, json={"texts": cascade_texts, "confidence_threshold": 0})).json()
    assert from_settings["policy"]["sources"] == {
        "temperature": "manifest", "confidence_threshold": "settings", "coverage_threshold": "manifest"
    }
    assert from_settings["policy"]["confidence_threshold"] == 1.0 and from_settings["teacher_share"] == 1.0
    assert from_request["policy"]["sources"]["confidence_threshold"] == "request"
    assert from_request["policy"]["coverage_threshold"] == section["operating_point"]["coverage_threshold"]
    assert 0.0 < from_request["teacher_share"] < 1.0  # the manifest's coverage threshold still defers some


async def test_a_malformed_cascade_section_stops_start_up_naming_the_manifest(
    settings_for: Any, run_app: Any, tiny_student: Path, tmp_path: Path
) -> None:
    root = copy_model(tiny_student, tmp_path / "mr-tiny")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["cascade"] = {"temperature": 1.0, "operating_point": {"confidence_threshold": 1.5,
                                                                   "coverage_threshold": 0.1}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="cascade section is invalid") as refused:
        async with run_app(create_app(settings_for([root]))):
            pass
    assert refused.value.path == root / "manifest.json"


# --- errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"confidence_threshold": 1.5}, "confidence_threshold: Input should be less than or equal to 1"),
        ({"coverage_threshold": -0.1}, "coverage_threshold: Input should be greater than or equal to 0"),
        ({"confidence_threshold": "0.5"}, "confidence_threshold: Input should be a valid number"),
        ({"coverage_threshold": True}, "coverage_threshold: Input should be a valid number"),
        ({"confidence_threshold": math.nan}, "confidence_threshold: Input should be a finite number"),
        ({"coverage_threshold": math.inf}, "coverage_threshold: Input should be a finite number"),
        ({"teacher": 3}, "teacher"),
        ({"colour": 3}, "colour"),  # an unknown field (top_k is an answer option now)
        ({"texts": []}, "at least 1"),
    ],
)
async def test_bad_requests_are_422_in_the_one_error_shape(
    serve: Any, tiny_teacher: Path, fields: dict[str, Any], fragment: str
) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        # json.dumps writes NaN and Infinity (as many clients do); httpx's json= would refuse them
        r = await client.post(CASCADE, content=json.dumps({"texts": ["a fine film"], **fields}),
                              headers={"content-type": "application/json"})
        after = await client.post(CASCADE, json={"texts": ["a fine film"]})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == "invalid_input" and fragment in body["error"]["message"]
    assert after.status_code == 200


async def test_without_a_teacher_the_cascade_is_unavailable(serve: Any) -> None:
    async with serve() as client:  # student only
        r = await client.post(CASCADE, json={"texts": ["a fine film"], "confidence_threshold": 0})
        named = await client.post(CASCADE, json={"texts": ["a fine film"], "teacher": "nope"})
        limits = await client.post(CASCADE, json={"texts": ["a fine film"] * 65})
    # A deployment fact, not a transient failure: a documented 4xx (a 5xx would say "retry").
    assert r.status_code == 404 and "retry-after" not in r.headers
    assert r.json()["error"]["type"] == "teacher_unavailable" and "--teacher" in r.json()["error"]["message"]
    assert named.status_code == 404 and named.json()["error"]["type"] == "model_not_found"
    assert limits.status_code == 413 and limits.json()["error"]["type"] == "payload_too_large"


# --- metrics and schema --------------------------------------------------------------------------------


async def test_metrics_count_texts_by_who_answered_and_deferred_texts_go_as_one_teacher_request(
    serve: Any, cascade_texts: list[str], tiny_teacher: Path
) -> None:
    teacher = tiny_teacher.name
    async with serve(teacher=[tiny_teacher]) as client:
        before = (await client.get("/metrics")).text
        student = (await client.post("/v1/classify", json={"texts": cascade_texts})).json()["results"]
        coverage = np.array([res["coverage"] for res in student])
        threshold = split_point(coverage)
        deferred = int((coverage < threshold).sum())
        r = await client.post(CASCADE, json={"texts": cascade_texts, "coverage_threshold": threshold})
        none = await client.post(CASCADE, json={"texts": cascade_texts[:3], "coverage_threshold": 0})
        text = (await client.get("/metrics")).text
    assert r.status_code == none.status_code == 200 and 0 < deferred < len(cascade_texts)
    assert r.json()["teacher_share"] == pytest.approx(deferred / len(cascade_texts))
    for answered_by in ("student", "teacher"):  # the series exist before the first cascade request
        assert f'sd_cascade_texts_total{{answered_by="{answered_by}",model="mr-tiny"}} 0.0' in before
    assert f'sd_cascade_texts_total{{answered_by="teacher",model="mr-tiny"}} {float(deferred)}' in text
    student_texts = len(cascade_texts) - deferred + 3
    assert f'sd_cascade_texts_total{{answered_by="student",model="mr-tiny"}} {float(student_texts)}' in text
    # the teacher ran twice: the warm-up and one request holding exactly the deferred texts
    assert f'sd_batch_texts_count{{model="{teacher}"}} 2.0' in text
    assert f'sd_batch_texts_sum{{model="{teacher}"}} {float(1 + deferred)}' in text
    assert 'sd_http_requests_total{method="POST",route="/v1/cascade/classify",status="200"} 2.0' in text


async def test_openapi_documents_the_cascade_route(serve: Any) -> None:
    async with serve(max_texts_per_request=7) as client:
        spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"][CASCADE]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CascadeRequest")
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/CascadeResponse")
    for status in ("404", "413", "422", "503"):
        error = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert error.endswith("/ErrorBody"), status
    assert "teacher_unavailable" in operation["responses"]["404"]["description"]
    schemas = spec["components"]["schemas"]
    request = schemas["CascadeRequest"]["properties"]
    assert request["texts"]["maxItems"] == 7
    threshold = next(s for s in request["confidence_threshold"]["anyOf"] if s.get("type") == "number")
    assert (threshold["minimum"], threshold["maximum"]) == (0, 1)
    result = schemas["CascadePrediction"]["properties"]
    assert result["answered_by"]["enum"] == ["student", "teacher"] and "student_confidence" in result
    assert "cascade" in schemas["ModelInfo"]["properties"]
