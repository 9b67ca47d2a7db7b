"""POST /v1/explain and the page at /, in-process on the tiny real student (and teacher)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from service.api.routes.explain import ExplainWorkers
from service.errors import QueueFull
from service.runtimes.explain import MAX_TOP_N

pytestmark = pytest.mark.asyncio


async def test_explain_answers_as_classify_does_with_the_ngrams_that_moved_it(serve: Any, texts: list[str]) -> None:
    async with serve() as client:
        classified = (await client.post("/v1/classify", json={"texts": texts})).json()["results"]
        r = await client.post("/v1/explain", json={"texts": texts, "top_n": 5})
    assert r.status_code == 200, r.text
    assert float(r.headers["x-inference-time-ms"]) > 0
    body = r.json()
    assert body["model"] == "mr-tiny" and len(body["results"]) == len(texts)
    for text, got, want in zip(texts, body["results"], classified, strict=True):
        assert got["label"] == want["label"]
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
        assert got["coverage"] == pytest.approx(want["coverage"]) and got["ngrams_found"] == want["ngrams_found"]
        assert len(got["ngrams"]) == min(5, got["distinct_ngrams"])
        for g in got["ngrams"]:
            assert g["effect"] == g["deltas"][got["label"]]
            assert sum(g["deltas"].values()) == pytest.approx(0.0, abs=1e-5)  # probabilities still sum to 1
            assert len(g["spans"]) == g["count"]
            for start, end in g["spans"]:
                assert text[start:end].lower().split()[0] == g["ngram"].split()[0]
        effects = [abs(g["effect"]) for g in got["ngrams"]]
        assert effects == sorted(effects, reverse=True)


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"texts": ["one", "two", "three"]}, 413, "payload_too_large"),
        ({"texts": ["x" * 101]}, 413, "payload_too_large"),
        ({"texts": []}, 422, "invalid_input"),
        ({"texts": ["  "]}, 422, "invalid_input"),
        ({"texts": [3]}, 422, "invalid_input"),
        ({"texts": ["a film"], "top_n": 0}, 422, "invalid_input"),
        ({"texts": ["a film"], "top_n": MAX_TOP_N + 1}, 422, "invalid_input"),
        ({"texts": ["a film"], "top_n": "3"}, 422, "invalid_input"),
        ({"texts": ["a film"], "extra": 1}, 422, "invalid_input"),
        ({"texts": ["a film"], "model": "nope"}, 404, "model_not_found"),
    ],
)
async def test_limits_and_bad_input_are_answered_as_on_classify(
    serve: Any, body: dict[str, Any], status: int, kind: str
) -> None:
    async with serve(max_texts_per_request=2, max_chars_per_text=100) as client:
        r = await client.post("/v1/explain", json=body)
        if "top_n" not in body and "extra" not in body:  # the same answer as classify's
            same = await client.post("/v1/classify", json=body)
            assert (same.status_code, same.json()) == (r.status_code, r.json())
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == kind


async def test_a_teacher_is_refused_with_the_reason(serve: Any, tiny_teacher: Path) -> None:
    async with serve(teacher=[tiny_teacher]) as client:
        teacher = next(m["name"] for m in (await client.get("/v1/models")).json()["models"] if m["kind"] == "teacher")
        r = await client.post("/v1/explain", json={"texts": ["a film"], "model": teacher})
    assert r.status_code == 422
    assert "students only" in r.json()["error"]["message"]


async def test_explain_is_in_the_openapi_schema_with_the_servers_limits(serve: Any) -> None:
    async with serve(max_texts_per_request=7, max_chars_per_text=300) as client:
        schema = (await client.get("/openapi.json")).json()
    assert "/v1/explain" in schema["paths"] and "/" not in schema["paths"]
    texts = schema["components"]["schemas"]["ExplainRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 7 and texts["items"]["maxLength"] == 300
    top_n = schema["components"]["schemas"]["ExplainRequest"]["properties"]["top_n"]
    assert (top_n["minimum"], top_n["maximum"]) == (1, MAX_TOP_N)
    assert {"413", "422", "503"} <= set(schema["paths"]["/v1/explain"]["post"]["responses"])


async def test_the_page_and_its_files_are_served_without_the_key(serve: Any) -> None:
    async with serve(api_key="k3y") as client:
        page = await client.get("/")
        script = await client.get("/static/page.js")
        style = await client.get("/static/page.css")
        refused = await client.post("/v1/explain", json={"texts": ["a film"]})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/page.js">' in page.text and "https://" not in page.text  # no CDN
    assert script.status_code == 200 and "/v1/explain" in script.text and "https://" not in script.text
    assert style.status_code == 200 and "@import" not in style.text  # no external fonts
    assert refused.status_code == 401


async def test_explanations_beyond_the_limit_are_refused_at_once() -> None:
    workers = ExplainWorkers(limit=1, retry_after_s=2)
    release = threading.Event()
    first = workers.submit(lambda: release.wait(30))
    with pytest.raises(QueueFull) as refused:
        workers.submit(lambda: True)
    assert refused.value.headers == {"Retry-After": "2"}
    release.set()
    assert await first is True
    assert workers.running == 0  # given back on the thread, before the result reaches the event loop
    assert await workers.submit(lambda: 5) == 5
    workers.close()
    assert await workers.submit(lambda: 6) == 6  # a closed pool is made again (an app started twice)
    workers.close()
