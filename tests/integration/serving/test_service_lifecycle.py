"""Start-up and shutdown: readiness before and after loading, models refused at start, devices."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import onnxruntime as ort
import pytest

from sdcore.model_format import ModelFormatError
from service.app import create_app
from service.repository.registry import StartupError
from service.runtimes.devices import DeviceUnavailable
from training.testing.quick import copy_model

pytestmark = pytest.mark.asyncio


async def test_not_ready_until_loaded_and_warmed_then_ready_then_not_after_shutdown(settings_for: Any) -> None:
    app = create_app(settings_for())
    transport = httpx.ASGITransport(app=app)  # no lifespan run yet: nothing loaded
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v2/health/live")).status_code == 200
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"
        r = await client.get("/v2/health/ready")
        assert r.status_code == 503 and "not loaded" in r.json()["error"]  # the protocol's error string
        r = await client.post("/v1/classify", json={"texts": ["too early"]})
        assert r.status_code == 503 and r.json()["error"]["type"] == "not_ready"
        assert (await client.get("/v1/models")).status_code == 503

        async with app.router.lifespan_context(app):
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 200
            assert (await client.post("/v1/classify", json={"texts": ["now"]})).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        r = await client.post("/v1/classify", json={"texts": ["too late"]})
        assert r.status_code == 503


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "victim"),
    [
        ("flip", "embeddings/shard-00001.npy"),
        ("flip", "head.onnx"),
        ("flip", "vocab/keys.npy"),
        ("delete", "head.onnx"),
        ("delete", "manifest.json"),
        ("truncate", "embeddings/shard-00000.npy"),
    ],
)
async def test_a_damaged_model_stops_start_up_naming_the_file(
    settings_for: Any, run_app: Any, tiny_student: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    damage: str, victim: str,
) -> None:
    root = copy_model(tiny_student, tmp_path / "mr-tiny")
    path = root / victim
    if damage == "flip":
        flip_a_byte(path)
    elif damage == "delete":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-7])
    app = create_app(settings_for([root]))
    with caplog.at_level(logging.ERROR), pytest.raises(ModelFormatError) as refused:
        async with run_app(app):
            pass
    assert refused.value.path == path
    assert str(path) in caplog.text and "cannot start" in caplog.text


async def test_a_missing_folder_and_a_teacher_given_as_student_are_refused(
    settings_for: Any, run_app: Any, tmp_path: Path, tiny_teacher: Path
) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        async with run_app(create_app(settings_for([tmp_path / "nowhere"]))):
            pass
    with pytest.raises(ModelFormatError, match="is a teacher model, but was given as a student"):
        async with run_app(create_app(settings_for([tiny_teacher]))):
            pass


async def test_two_models_with_one_name_are_refused(
    settings_for: Any, run_app: Any, tiny_student: Path, tmp_path: Path
) -> None:
    twin = copy_model(tiny_student, tmp_path / "twin")  # the manifest still says "mr-tiny"
    with pytest.raises(StartupError, match="share a name"):
        async with run_app(create_app(settings_for([tiny_student, twin]))):
            pass


needs_no_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA"
)


@needs_no_cuda
async def test_cuda_without_cuda_stops_start_up_unless_cpu_fallback_is_allowed(
    settings_for: Any, run_app: Any
) -> None:
    with pytest.raises(DeviceUnavailable, match="allow-cpu-fallback"):
        async with run_app(create_app(settings_for(device="cuda"))):
            pass
    settings = settings_for(device="cuda", allow_cpu_fallback=True)
    async with run_app(create_app(settings)) as client:
        body: dict[str, Any] = (await client.get("/v1/models")).json()
        assert (await client.post("/v1/classify", json={"texts": ["runs anyway"]})).status_code == 200
    assert body["device_requested"] == "cuda"
    (model,) = body["models"]
    assert model["device"] == "cpu" and "cuda unavailable" in model["device_note"]
