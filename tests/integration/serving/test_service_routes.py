"""Every route of the service, in-process on tiny real models (student and teacher)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.runtimes.student import StudentRuntime

pytestmark = pytest.mark.asyncio

TIMING = ("x-queue-time-ms", "x-inference-time-ms", "x-total-time-ms")


def assert_timed(headers: Any) -> None:
    for name in TIMING:
        assert float(headers[name]) >= 0.0, name


def assert_prediction(result: dict[str, Any], labels: list[str]) -> None:
    assert set(result["scores"]) == set(labels)
    assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["label"] == max(result["scores"], key=result["scores"].get)
    assert result["score"] == result["scores"][result["label"]]


async def test_health_and_readiness(serve: Any) -> None:
    async with serve() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "models": ["mr-tiny"]}
        assert "x-total-time-ms" in ready.headers


async def test_classify_answers_each_text_with_label_scores_and_coverage(
    serve: Any, texts: list[str], tiny_student: Path
) -> None:
    labels = StudentRuntime.load(tiny_student).labels
    async with serve() as client:
        r = await client.post("/v1/classify", json={"texts": [*texts, "zzqx unknownword"]})
    assert r.status_code == 200
    assert_timed(r.headers)
    body = r.json()
    assert body["model"] == "mr-tiny" and len(body["results"]) == len(texts) + 1
    for result in body["results"]:
        assert_prediction(result, labels)
        assert 0.0 <= result["coverage"] <= 1.0 and result["ngrams_found"] >= 0
    assert sum(res["coverage"] > 0 for res in body["results"][:-1]) >= len(texts) - 2  # MR has a few non-English lines
    out_of_vocabulary = body["results"][-1]
    assert out_of_vocabulary["coverage"] == 0.0 and out_of_vocabulary["ngrams_found"] == 0


async def test_a_model_is_chosen_by_name(serve: Any, tiny_student: Path, tiny_student_b: Path) -> None:
    async with serve(student=[tiny_student, tiny_student_b]) as client:
        default = await client.post("/v1/classify", json={"texts": ["a fine film"]})
        named = await client.post("/v1/classify", json={"texts": ["a fine film"], "model": "mr-tiny-b"})
        unknown = await client.post("/v1/classify", json={"texts": ["a fine film"], "model": "nope"})
    assert default.json()["model"] == "mr-tiny" and named.json()["model"] == "mr-tiny-b"
    assert named.json()["results"] == default.json()["results"]  # same weights, other name
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "model_not_found"
    assert "mr-tiny-b" in unknown.json()["error"]["message"]


async def test_teacher_classify(serve: Any, texts: list[str], tiny_teacher: Path) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.post("/v1/teacher/classify", json={"texts": texts})
        as_student = await client.post("/v1/classify", json={"texts": texts, "model": tiny_teacher.name})
    assert r.status_code == 200
    assert_timed(r.headers)
    body = r.json()
    assert body["model"] == tiny_teacher.name and len(body["results"]) == len(texts)
    for result in body["results"]:
        assert_prediction(result, ["negative", "positive"])
        assert "coverage" not in result
    assert as_student.status_code == 404  # a teacher is not a student


async def test_compare_runs_both_and_reports_agreement(serve: Any, texts: list[str], tiny_teacher: Path) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.post("/v1/compare", json={"texts": texts})
        student = (await client.post("/v1/classify", json={"texts": texts})).json()["results"]
        teacher = (await client.post("/v1/teacher/classify", json={"texts": texts})).json()["results"]
    assert r.status_code == 200
    assert_timed(r.headers)
    body = r.json()
    assert (body["student_model"], body["teacher_model"]) == ("mr-tiny", tiny_teacher.name)
    agree = [s["label"] == t["label"] for s, t in zip(student, teacher, strict=True)]
    assert [item["agree"] for item in body["results"]] == agree
    assert body["agreement_rate"] == pytest.approx(sum(agree) / len(agree))
    assert [item["student"]["label"] for item in body["results"]] == [s["label"] for s in student]
    assert [item["teacher"]["label"] for item in body["results"]] == [t["label"] for t in teacher]
    assert body["latency_ms"]["student"] > 0 and body["latency_ms"]["teacher"] > 0


async def test_compare_without_a_teacher_is_404(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v1/compare", json={"texts": ["fine"]})
    assert r.status_code == 404 and r.json()["error"]["type"] == "model_not_found"


async def test_models_lists_manifest_facts(serve: Any, tiny_student: Path, tiny_teacher: Path) -> None:
    manifest = json.loads((tiny_student / "manifest.json").read_text())
    async with serve(teacher=[tiny_teacher]) as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["device_requested"] == "cpu"
    student, teacher = body["models"]
    assert student["name"] == "mr-tiny" and student["kind"] == "student" and student["default"]
    assert (student["vocab_size"], student["embedding_dim"], student["dtype"]) == (
        manifest["vocab_size"], manifest["embedding_dim"], manifest["shard_dtype"]
    )
    assert student["labels"] == manifest["labels"] and student["metrics"] == manifest["metrics"]
    assert student["device"] == "cpu" and student["providers"] == ["CPUExecutionProvider"]
    assert student["device_note"] is None and student["ready"]
    assert teacher["kind"] == "teacher" and teacher["max_length"] > 0 and teacher["vocab_size"] is None


async def test_metrics_count_requests_batches_and_queue(serve: Any, texts: list[str]) -> None:
    async with serve() as client:
        for text in texts[:3]:
            assert (await client.post("/v1/classify", json={"texts": [text]})).status_code == 200
        await client.post("/v1/classify", json={"texts": []})
        r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sd_http_requests_total{method="POST",route="/v1/classify",status="200"} 3.0' in text
    assert 'sd_http_requests_total{method="POST",route="/v1/classify",status="422"} 1.0' in text
    for series in ("sd_queue_seconds_count", "sd_inference_seconds_count", "sd_batch_texts_bucket",
                   'sd_queue_depth{model="mr-tiny"}', "sd_http_request_seconds_bucket"):
        assert series in text, series
    # 3 requests + the warm-up went through the batcher
    assert 'sd_batch_texts_count{model="mr-tiny"} 4.0' in text


async def test_openapi_and_docs(serve: Any) -> None:
    async with serve() as client:
        spec = (await client.get("/openapi.json")).json()
        docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    for path in ("/v1/classify", "/v1/teacher/classify", "/v1/compare", "/v1/models", "/healthz", "/readyz",
                 "/metrics", "/v2/models/{model_name}/infer"):
        assert path in spec["paths"], path
    error = spec["paths"]["/v1/classify"]["post"]["responses"]["422"]
    assert error["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


# --- Open Inference Protocol (KServe v2) -----------------------------------------------------------


async def test_v2_health_and_metadata(serve: Any, tiny_teacher: Path) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        server = (await client.get("/v2")).json()
        student = (await client.get("/v2/models/mr-tiny")).json()
        teacher = (await client.get(f"/v2/models/{tiny_teacher.name}")).json()
        ready = (await client.get("/v2/models/mr-tiny/ready")).json()
        missing = await client.get("/v2/models/nope")
    assert server["name"] == "sparse-distillation"
    assert {"binary_tensor_data", "parameters", "model_repository"} <= set(server["extensions"])
    assert student["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o for o in student["outputs"]}["probabilities"] == {
        "name": "probabilities", "datatype": "FP32", "shape": [-1, 2]
    }
    assert "coverage" in {o["name"] for o in student["outputs"]}
    assert "coverage" not in {o["name"] for o in teacher["outputs"]}
    assert ready == {"name": "mr-tiny", "ready": True}
    assert missing.status_code == 404 and "nope" in missing.json()["error"]  # the protocol's error string


async def test_v2_infer_equals_v1(serve: Any, texts: list[str], tiny_teacher: Path) -> None:
    request = {"id": "req-7", "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    async with serve(teacher=[tiny_teacher]) as client:
        v2 = await client.post("/v2/models/mr-tiny/infer", json=request)
        v1 = (await client.post("/v1/classify", json={"texts": texts})).json()["results"]
        only = await client.post("/v2/models/mr-tiny/infer", json={**request, "outputs": [{"name": "label"}]})
        nested = {"inputs": [{"name": "text", "shape": [len(texts), 1], "datatype": "BYTES",
                              "data": [[t] for t in texts]}]}
        teacher = await client.post(f"/v2/models/{tiny_teacher.name}/infer", json=nested)
    assert v2.status_code == 200
    assert_timed(v2.headers)
    body = v2.json()
    assert body["model_name"] == "mr-tiny" and body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    probs = outputs["probabilities"]
    assert probs["datatype"] == "FP32" and probs["shape"] == [len(texts), 2]
    expected = [[r["scores"]["negative"], r["scores"]["positive"]] for r in v1]
    np.testing.assert_allclose(np.reshape(probs["data"], (len(texts), 2)), expected, rtol=0, atol=1e-6)
    assert outputs["label"]["data"] == [r["label"] for r in v1]
    np.testing.assert_allclose(outputs["coverage"]["data"], [r["coverage"] for r in v1], atol=1e-6)
    assert [o["name"] for o in only.json()["outputs"]] == ["label"]
    assert teacher.status_code == 200
    assert {o["name"] for o in teacher.json()["outputs"]} == {"probabilities", "label"}
