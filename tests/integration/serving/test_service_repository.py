"""The model repository: <name>/<version>/ folders, the highest version served, load and unload at run
time. A new version is swapped in while requests are in flight without one failing; a damaged one is
refused with the file named while the old one keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from training.testing.quick import copy_model

pytestmark = pytest.mark.asyncio


def infer_body(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def add_version(repo: Path, student: Path, version: int, name: str = "mr") -> Path:
    return copy_model(student, repo / name / str(version))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_the_highest_version_is_served_and_listed(serve: Any, tiny_student: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_version(repo, tiny_student, 1)
    add_version(repo, tiny_student, 2)
    (repo / "empty-model").mkdir()  # no version folder: listed nowhere, loaded never
    async with serve(student=[tiny_student], model_repository=repo) as client:
        meta = (await client.get("/v2/models/mr")).json()
        index = (await client.post("/v2/repository/index", content=b"")).json()
        ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
        also = (await client.get("/v2/repository/index")).json()
        v1 = await client.post("/v1/classify", json={"texts": ["a fine film"], "model": "mr"})
        path_model = await client.post("/v1/classify", json={"texts": ["a fine film"]})
    assert meta["versions"] == ["2"]
    assert index == also == [
        {"name": "mr", "version": "1", "state": "UNAVAILABLE", "reason": "not served"},
        {"name": "mr", "version": "2", "state": "READY", "reason": ""},
        {"name": "mr-tiny", "version": "1", "state": "READY", "reason": ""},  # given by --student
    ]
    assert [(e["name"], e["version"]) for e in ready] == [("mr", "2"), ("mr-tiny", "1")]
    assert v1.status_code == 200 and v1.json()["model"] == "mr"
    assert path_model.json()["model"] == "mr-tiny"  # --student keeps working, and stays the default


async def test_a_new_version_swaps_in_under_load_without_a_failed_request(
    serve: Any, tiny_student: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    add_version(repo, tiny_student, 1)
    async with serve(student=[], model_repository=repo) as client:
        swapped = asyncio.Event()
        statuses: list[int] = []
        versions: list[str] = []

        async def traffic(worker: int) -> None:
            after = 0
            for i in range(400):  # bounded; stops once the new version has answered for a while
                if swapped.is_set():
                    after += 1
                    if after > 15:
                        return
                if i % 2:
                    r = await client.post("/v2/models/mr/infer", json=infer_body(f"worker {worker} text {i}"))
                    if r.status_code == 200:
                        versions.append(r.json()["model_version"])
                else:
                    r = await client.post("/v1/classify", json={"texts": [f"worker {worker} #{i}"], "model": "mr"})
                statuses.append(r.status_code)

        workers = [asyncio.create_task(traffic(w)) for w in range(4)]
        while len(statuses) < 20:  # traffic is flowing before the swap
            await asyncio.sleep(0.01)
        await asyncio.to_thread(add_version, repo, tiny_student, 2)
        load = await client.post("/v2/repository/models/mr/load")
        swapped.set()
        await asyncio.gather(*workers)
        after = (await client.get("/v2/models/mr")).json()
    assert load.status_code == 200, load.text
    assert load.json() == {"name": "mr", "version": "2", "state": "READY", "reason": ""}
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert "1" in versions and versions[-1] == "2"
    assert after["versions"] == ["2"]


async def test_a_damaged_version_is_refused_with_the_file_named_and_the_old_one_serves(
    serve: Any, tiny_student: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    add_version(repo, tiny_student, 1)
    async with serve(student=[], model_repository=repo) as client:
        broken = await asyncio.to_thread(add_version, repo, tiny_student, 2)
        shard = broken / "embeddings" / "shard-00000.npy"
        flip_last_byte(shard)
        refused = await client.post("/v2/repository/models/mr/load", json={})
        still = await client.post("/v2/models/mr/infer", json=infer_body("still served?"))
        index = (await client.post("/v2/repository/index")).json()
    assert refused.status_code == 400
    message = refused.json()["error"]
    assert str(shard) in message and "version 1 keeps serving" in message
    assert still.status_code == 200 and still.json()["model_version"] == "1"
    assert {"name": "mr", "version": "2", "state": "UNAVAILABLE"}.items() <= index[1].items()
    assert str(shard) in index[1]["reason"]


async def test_unload_then_load_again(serve: Any, tiny_student: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_version(repo, tiny_student, 3)
    async with serve(student=[tiny_student], model_repository=repo) as client:
        unload = await client.post("/v2/repository/models/mr/unload",
                                   content=b'{"parameters": {"unload_dependents": false}}')
        gone = await client.post("/v2/models/mr/infer", json=infer_body("gone?"))
        index = (await client.post("/v2/repository/index")).json()
        again = await client.post("/v2/repository/models/mr/load")
        back = await client.post("/v2/models/mr/versions/3/infer", json=infer_body("back?"))
        unknown = await client.post("/v2/repository/models/nope/load")
        not_repository = await client.post("/v2/repository/models/mr-tiny/unload")
        bad_body = await client.post("/v2/repository/models/mr/load", content=b'{"x": 1}')
    assert unload.status_code == 200 and unload.json()["state"] == "UNAVAILABLE"
    assert gone.status_code == 404
    assert index[0] == {"name": "mr", "version": "3", "state": "UNAVAILABLE", "reason": "unloaded"}
    assert again.status_code == 200 and back.status_code == 200
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    assert not_repository.status_code == 404
    assert bad_body.status_code == 422


async def test_without_a_repository_load_is_404(serve: Any) -> None:
    async with serve() as client:
        r = await client.post("/v2/repository/models/mr-tiny/load")
        index = (await client.get("/v2/repository/index")).json()
    assert r.status_code == 404 and "--model-repository" in r.json()["error"]
    assert index == [{"name": "mr-tiny", "version": "1", "state": "READY", "reason": ""}]


