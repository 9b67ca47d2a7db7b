"""The optional API key: every route but health needs it when set; nothing needs it when unset."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.asyncio

KEY = "test-key-4f2a"
CLASSIFY = {"texts": ["a warm, funny film"]}
INFER = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a warm, funny film"]}]}
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/classify", CLASSIFY),
    ("POST", "/v1/compare", CLASSIFY),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("GET", "/v2", None),
    ("GET", "/v2/models/mr-tiny", None),
    ("GET", "/v2/models/mr-tiny/ready", None),
    ("POST", "/v2/models/mr-tiny/infer", INFER),
]
OPEN = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]


async def test_with_a_key_protected_routes_need_it_and_health_does_not(serve: Any) -> None:
    async with serve(api_key=KEY) as client:
        for path in OPEN:
            assert (await client.get(path)).status_code == 200, path
        for method, path, body in PROTECTED:
            missing = await client.request(method, path, json=body)
            wrong = await client.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
            basic = await client.request(method, path, json=body, headers={"Authorization": f"Basic {KEY}"})
            for r in (missing, wrong, basic):
                assert r.status_code == 401, (path, r.text)
                error = r.json()["error"]
                if path.startswith("/v2"):  # the Open Inference Protocol's error string
                    assert "API key" in error or "api key" in error
                else:
                    assert error["type"] == "unauthorized"
                assert r.headers["www-authenticate"] == "Bearer"
            good = await client.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
            # /v1/compare has no teacher here: past auth it is a 404, not a 401
            assert good.status_code == (404 if path == "/v1/compare" else 200), (path, good.text)


async def test_without_a_key_nothing_needs_one(serve: Any) -> None:
    async with serve() as client:
        for method, path, body in PROTECTED:
            r = await client.request(method, path, json=body)
            assert r.status_code in (200, 404), (path, r.text)
            assert r.status_code != 401
        assert (await client.post("/v1/classify", json=CLASSIFY, headers={"Authorization": "Bearer x"})
                ).status_code == 200
