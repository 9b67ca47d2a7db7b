"""The Open Inference Protocol over HTTP as Triton's and KServe's clients speak it: any content type,
binary tensors both ways, versioned routes, the protocol's error body, parameters that pass through."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.api.v2_codec import decode_bytes_elements, encode_bytes_elements

pytestmark = pytest.mark.asyncio


def infer_json(texts: list[str], **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}], **extra}


def binary_body(texts: list[str], **extra: Any) -> tuple[bytes, dict[str, str]]:
    raw = encode_bytes_elements([t.encode() for t in texts])
    head = json.dumps({"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}], **extra}).encode()
    return head + raw, {"Inference-Header-Content-Length": str(len(head)),
                        "Content-Type": "application/octet-stream"}


async def test_json_without_a_content_type_and_binary_in_and_out_agree(serve: Any, texts: list[str]) -> None:
    async with serve() as client:
        plain = await client.post("/v2/models/mr-tiny/infer", content=json.dumps(infer_json(texts)).encode())
        body, headers = binary_body(texts, parameters={"binary_data_output": True})
        binary = await client.post("/v2/models/mr-tiny/infer", content=body, headers=headers)
    assert plain.status_code == 200, plain.text
    outputs = {o["name"]: o for o in plain.json()["outputs"]}
    assert binary.status_code == 200, binary.text
    assert binary.headers["content-type"] == "application/octet-stream"
    split = int(binary.headers["inference-header-content-length"])
    head = json.loads(binary.content[:split])
    offset, blobs = split, {}
    for out in head["outputs"]:
        size = out["parameters"]["binary_data_size"]
        blobs[out["name"]] = binary.content[offset : offset + size]
        offset += size
    assert offset == len(binary.content)
    probs = np.frombuffer(blobs["probabilities"], "<f4").reshape(len(texts), 2)
    np.testing.assert_allclose(probs.ravel(), outputs["probabilities"]["data"], atol=1e-7)
    labels = [b.decode() for b in decode_bytes_elements(blobs["label"], len(texts))]
    assert labels == outputs["label"]["data"]


async def test_versioned_routes_and_the_protocols_error_body(serve: Any) -> None:
    async with serve() as client:
        meta = (await client.get("/v2/models/mr-tiny/versions/1")).json()
        ready = await client.get("/v2/models/mr-tiny/versions/1/ready")
        infer = await client.post("/v2/models/mr-tiny/versions/1/infer", json=infer_json(["a fine film"]))
        no_version = await client.get("/v2/models/mr-tiny/versions/7")
        bad_shape = await client.post("/v2/models/mr-tiny/infer", json={"inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["only one"]}]})
        v1 = await client.post("/v1/classify", json={"texts": ["a"], "model": "nope"})
    assert meta["versions"] == ["1"] and ready.status_code == 200
    assert infer.status_code == 200 and infer.json()["model_version"] == "1"
    assert no_version.status_code == 404 and no_version.json() == {
        "error": "model 'mr-tiny' has no loaded version '7' (loaded: 1)"}
    assert bad_shape.status_code == 422 and "holds 2 elements" in bad_shape.json()["error"]
    assert v1.json()["error"]["type"] == "model_not_found"  # /v1 keeps its own shape


@pytest.mark.parametrize("path", ["/v1/classify", "/v2/models/mr-tiny/infer"])
async def test_a_lone_surrogate_is_422_on_both_protocols(serve: Any, path: str) -> None:
    body = (b'{"texts": ["fine", "\\ud800"]}' if path.startswith("/v1")
            else b'{"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}')
    async with serve() as client:
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "surrogate" in r.text


async def test_cascade_parameters_pass_through(serve: Any, tiny_teacher: Path, texts: list[str]) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        every = await client.post("/v2/models/mr-tiny/infer", json=infer_json(
            texts, parameters={"cascade": True, "confidence_threshold": 1.0}))
        none = await client.post("/v2/models/mr-tiny/infer", json=infer_json(
            texts, parameters={"cascade": True, "confidence_threshold": 0.0, "coverage_threshold": 0.0}))
        teacher = (await client.post("/v1/teacher/classify", json={"texts": texts})).json()["results"]
        bad = await client.post("/v2/models/mr-tiny/infer", json=infer_json(
            texts, parameters={"cascade": True, "confidence_threshold": 2}))
        plain = await client.post("/v2/models/mr-tiny/infer", json=infer_json(
            texts, outputs=[{"name": "answered_by"}]))
        metrics = (await client.get("/metrics")).text
    by_name = {o["name"]: o for o in every.json()["outputs"]}
    assert by_name["answered_by"]["data"] == ["teacher"] * len(texts)
    assert by_name["label"]["data"] == [r["label"] for r in teacher]
    assert {o["name"]: o for o in none.json()["outputs"]}["answered_by"]["data"] == ["student"] * len(texts)
    assert bad.status_code == 422 and "confidence_threshold" in bad.json()["error"]
    assert plain.status_code == 422 and "cascade" in plain.json()["error"]
    n = float(len(texts))
    assert f'sd_cascade_texts_total{{answered_by="teacher",model="mr-tiny"}} {n}' in metrics
    assert f'sd_cascade_texts_total{{answered_by="student",model="mr-tiny"}} {n}' in metrics


async def test_cascade_without_a_teacher_is_a_documented_404(serve: Any) -> None:
    async with serve() as client:
        v2 = await client.post("/v2/models/mr-tiny/infer", json=infer_json(["x"], parameters={"cascade": True}))
        v1 = await client.post("/v1/cascade/classify", json={"texts": ["x"]})
    assert v2.status_code == 404 and "--teacher" in v2.json()["error"]
    assert v1.status_code == 404 and v1.json()["error"]["type"] == "teacher_unavailable"


async def test_gzip_request_bodies_are_inflated(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v2/models/mr-tiny/infer", content=gzip.compress(
            json.dumps(infer_json(["a fine film"])).encode()), headers={"content-encoding": "gzip"})
    assert r.status_code == 200, r.text
