"""The bad-input matrix: each case gets the right status and error type in the one error shape, and the
server still answers afterwards. Unexpected errors are logged with a traceback and answered 500."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytestmark = pytest.mark.asyncio

LIMITS = {"max_texts_per_request": 5, "max_chars_per_text": 200, "max_body_bytes": 4096}
JSON = {"content-type": "application/json"}


async def chunks(total: int) -> AsyncIterator[bytes]:
    """A body sent chunked (no Content-Length), so only counting can find it too large."""
    yield b'{"texts": ["'
    for _ in range(total // 1000):
        yield b"a" * 1000
    yield b'"]}'


CASES: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    # (case, method, path, request kwargs, status, error type, text expected in the message)
    ("invalid json", "POST", "/v1/classify", {"content": b'{"texts": [', "headers": JSON}, 400, "invalid_json", "JSON"),
    ("not utf-8", "POST", "/v1/classify", {"content": b'{"texts": ["\xff\xfe"]}', "headers": JSON}, 400,
     "invalid_json", "JSON"),
    ("empty body", "POST", "/v1/classify", {"content": b"", "headers": JSON}, 422, "invalid_input", "JSON object"),
    ("body is a list", "POST", "/v1/classify", {"json": ["a"]}, 422, "invalid_input", "JSON object"),
    ("not json content type", "POST", "/v1/classify", {"content": b'{"texts": ["a"]}',
     "headers": {"content-type": "text/plain"}}, 422, "invalid_input", "application/json"),
    ("texts missing", "POST", "/v1/classify", {"json": {}}, 422, "invalid_input", "texts"),
    ("texts not a list", "POST", "/v1/classify", {"json": {"texts": "a film"}}, 422, "invalid_input", "texts"),
    ("empty list", "POST", "/v1/classify", {"json": {"texts": []}}, 422, "invalid_input", "at least 1"),
    ("empty text", "POST", "/v1/classify", {"json": {"texts": ["ok", ""]}}, 422, "invalid_input", "texts[1]"),
    ("blank text", "POST", "/v1/classify", {"json": {"texts": [" \n\t"]}}, 422, "invalid_input", "empty"),
    ("number text", "POST", "/v1/classify", {"json": {"texts": [7]}}, 422, "invalid_input", "string"),
    ("null text", "POST", "/v1/classify", {"json": {"texts": [None]}}, 422, "invalid_input", "string"),
    ("object text", "POST", "/v1/classify", {"json": {"texts": [{"a": 1}]}}, 422, "invalid_input", "string"),
    ("unknown field", "POST", "/v1/classify", {"json": {"texts": ["a"], "colour": 3}}, 422, "invalid_input",
     "colour"),
    ("model not a string", "POST", "/v1/classify", {"json": {"texts": ["a"], "model": 3}}, 422,
     "invalid_input", "model"),
    ("too many texts", "POST", "/v1/classify", {"json": {"texts": ["a film"] * 6}}, 413, "payload_too_large",
     "max_texts_per_request"),
    ("too long text", "POST", "/v1/classify", {"json": {"texts": ["ok", "a" * 201]}}, 413, "payload_too_large",
     "max_chars_per_text"),
    ("body too large", "POST", "/v1/classify", {"json": {"texts": ["a" * 5000]}}, 413, "payload_too_large",
     "max_body_bytes"),
    ("chunked body too large", "POST", "/v1/classify", {"content": chunks(6000), "headers": JSON}, 413,
     "payload_too_large", "max_body_bytes"),
    ("unknown model", "POST", "/v1/classify", {"json": {"texts": ["a"], "model": "nope"}}, 404,
     "model_not_found", "nope"),
    ("teacher route, none loaded", "POST", "/v1/teacher/classify", {"json": {"texts": ["a"]}}, 404,
     "model_not_found", "teacher"),
    ("compare limits", "POST", "/v1/compare", {"json": {"texts": ["a"] * 6}}, 413, "payload_too_large",
     "max_texts_per_request"),
    ("wrong method", "GET", "/v1/classify", {}, 405, "method_not_allowed", ""),
    ("trace method", "TRACE", "/healthz", {}, 405, "method_not_allowed", ""),
    ("unknown path", "GET", "/v1/nothing-here", {}, 404, "not_found", ""),
    ("v2 unknown model", "POST", "/v2/models/nope/infer", {"json": {"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}}, 404, "model_not_found", "nope"),
    ("v2 no inputs", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": []}}, 422, "invalid_input", "inputs"),
    ("v2 wrong datatype", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": [
        {"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}}, 422, "invalid_input", "BYTES"),
    ("v2 wrong input name", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": [
        {"name": "INPUT0", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}}, 422, "invalid_input", "text"),
    ("v2 shape mismatch", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": [
        {"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}}, 422, "invalid_input", "shape"),
    ("v2 negative shape", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": [
        {"name": "text", "shape": [-1], "datatype": "BYTES", "data": ["a"]}]}}, 422, "invalid_input", "shape"),
    ("v2 unknown output", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": [
        {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}], "outputs": [{"name": "logits"}]}},
     422, "invalid_input", "logits"),
    ("v2 too many texts", "POST", "/v2/models/mr-tiny/infer", {"json": {"inputs": [
        {"name": "text", "shape": [6], "datatype": "BYTES", "data": ["a"] * 6}]}}, 413, "payload_too_large",
     "max_texts_per_request"),
    ("deeply nested json", "POST", "/v1/classify", {"content": b"[" * 100_000 + b"]" * 100_000,
     "headers": JSON}, 413, "payload_too_large", "max_body_bytes"),
    ("nested json under the limit", "POST", "/v1/classify", {"content": b"[" * 2000 + b"]" * 2000,
     "headers": JSON}, 400, "invalid_json", "JSON"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_requests_get_the_right_error_and_the_server_keeps_answering(
    serve: Any, method: str, path: str, kwargs: dict[str, Any], status: int, kind: str, fragment: str
) -> None:
    async with serve(**LIMITS) as client:
        r = await client.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error"}
        if path.startswith("/v2"):  # the Open Inference Protocol's error: one string
            assert isinstance(body["error"], str) and fragment in body["error"]
        else:
            assert set(body["error"]) == {"type", "message"}
            assert body["error"]["type"] == kind
            assert fragment in body["error"]["message"]
        assert "Traceback" not in r.text
        if status == 405:
            assert r.headers["allow"]  # RFC 9110: a 405 lists the methods that work
        after = await client.post("/v1/classify", json={"texts": ["still answering?"]})
        assert after.status_code == 200


async def test_an_unexpected_error_is_logged_and_answered_500_without_details(
    serve: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from service.api.routes import classify

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(classify, "student_results", broken)
    async with serve() as client:
        with caplog.at_level(logging.ERROR):
            r = await client.post("/v1/classify", json={"texts": ["a film"]})
        assert (await client.get("/readyz")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 500
    assert r.json() == {"error": {"type": "internal_error", "message": "internal server error"}}
    assert "secret internals" in caplog.text and "Traceback" in caplog.text
    assert 'route="/v1/classify",status="500"' in metrics


async def test_a_failing_runtime_is_500_and_the_next_batch_works(serve: Any, caplog: pytest.LogCaptureFixture,
                                                                 request: pytest.FixtureRequest) -> None:
    async with serve() as client:
        app = client._transport.app
        batcher = app.state.service.registry.get("student").batcher
        real = batcher._predict

        def fails_on_boom(texts: list[str]) -> Any:
            if any("boom" in t for t in texts):
                raise ValueError("runtime broke")
            return real(texts)

        batcher._predict = fails_on_boom
        with caplog.at_level(logging.ERROR):
            r = await client.post("/v1/classify", json={"texts": ["boom"]})
        assert r.status_code == 500 and r.json()["error"]["type"] == "inference_failed"
        assert "runtime broke" not in r.text and "runtime broke" in caplog.text
        assert (await client.post("/v1/classify", json={"texts": ["fine"]})).status_code == 200
