"""Operations over HTTP, in process: request ids and access lines, opt-in CORS."""

from __future__ import annotations

import logging
from typing import Any

import pytest

pytestmark = pytest.mark.asyncio


async def test_every_log_line_of_a_request_carries_its_id_and_one_access_line_says_what_it_did(
    serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve() as client:
        with caplog.at_level(logging.INFO):
            r = await client.post("/v1/classify", json={"texts": ["a", "b"]}, headers={"x-request-id": "abc-1"})
            other = await client.get("/healthz")
    assert r.headers["x-request-id"] == "abc-1" and len(other.headers["x-request-id"]) == 32
    access = [rec for rec in caplog.records if rec.name == "service.access"]
    mine = [rec for rec in access if getattr(rec, "request_id", None) == "abc-1"]
    assert len(mine) == 1
    line = mine[0]
    assert (line.route, line.status, line.texts) == ("POST /v1/classify", 200, 2)  # type: ignore[attr-defined]
    assert line.inference_ms > 0 and line.queue_ms >= 0  # type: ignore[attr-defined]


async def test_cors_is_off_by_default_and_allows_only_the_listed_origins(serve: Any) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type,authorization"}
    async with serve() as client:
        off = await client.options("/v1/classify", headers=preflight)
    async with serve(cors_allow_origins=["https://app.example"]) as client:
        allowed = await client.options("/v1/classify", headers=preflight)
        other = await client.options("/v1/classify", headers={**preflight, "origin": "https://evil.example"})
        simple = await client.post("/v1/classify", json={"texts": ["a"]}, headers={"origin": "https://app.example"})
    assert "access-control-allow-origin" not in off.headers
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"]
