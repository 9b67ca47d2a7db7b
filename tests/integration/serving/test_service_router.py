"""The learned cascade router in the service, on the tiny real student and teacher.

The router is fitted by the training code (``training.stages.router.fit_router``) on the tiny student's and
teacher's real answers, stored with ``store_router`` as the cascade step stores it; the expected
deferrals come from the one deferral function (``sdcore.router.defer_texts``) on the runtime's answers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sdcore.model_format import ModelFormatError, load_student_manifest
from sdcore.model_writer import store_router
from sdcore.router import ROUTER_FILE, CascadeRouter, RouterPolicy, defer_texts, load_router
from service.app import create_app
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime
from training.data.task_data import TaskData
from training.stages.router import SliceAnswers, fit_router
from training.testing.quick import copy_model

pytestmark = pytest.mark.asyncio

CASCADE = "/v1/cascade/classify"


@pytest.fixture
def routed_student(tiny_student: Path, tiny_teacher: Path, tmp_path: Path, mr_small: TaskData,
                   texts: list[str]) -> tuple[Path, CascadeRouter]:
    """A copy of the tiny student with a router fitted on its real disagreements with the tiny teacher
    (on the training and dev sentences); its threshold is set to split the test texts."""
    fit_texts = [*mr_small.train.texts, *mr_small.dev.texts]
    student = StudentRuntime.load(tiny_student)
    answers = SliceAnswers(student.predict(fit_texts).student_signals(),
                           TeacherRuntime.load(tiny_teacher).predict(fit_texts).probabilities.argmax(axis=1))
    router = fit_router(answers, gap=0.0, max_share=0.3)
    scores = router.disagreement(student.predict(texts).student_signals())
    router = router.model_copy(update={"threshold": float(np.median(scores))})
    root = copy_model(tiny_student, tmp_path / "mr-tiny")
    store_router(root, router)
    return root, router


async def test_the_router_file_round_trips_through_the_manifest(routed_student: tuple[Path, CascadeRouter]) -> None:
    root, router = routed_student
    manifest = load_student_manifest(root)
    assert manifest.router is not None and manifest.router.path == ROUTER_FILE
    assert load_router(root, manifest) == router
    assert StudentRuntime.load(root).facts.router == router


async def test_the_cascade_uses_the_router_and_a_requested_threshold_overrides_it(
    serve: Any, tiny_teacher: Path, routed_student: tuple[Path, CascadeRouter], texts: list[str]
) -> None:
    root, router = routed_student
    signals = StudentRuntime.load(root).predict(texts).student_signals()
    expected = defer_texts(RouterPolicy.of(router), signals)
    assert expected.any() and not expected.all()
    async with serve(student=[root], teacher=[tiny_teacher]) as client:
        routed = (await client.post(CASCADE, json={"texts": texts})).json()
        overridden = (await client.post(CASCADE, json={"texts": texts, "confidence_threshold": 0.0,
                                                       "coverage_threshold": 0.0})).json()
        everything = (await client.post(CASCADE, json={"texts": texts, "confidence_threshold": 1.0})).json()
        models = (await client.get("/v1/models")).json()["models"]
    assert routed["policy"]["rule"] == "router"
    assert routed["policy"]["router_threshold"] == pytest.approx(router.threshold)
    assert [r["answered_by"] == "teacher" for r in routed["results"]] == expected.tolist()
    assert routed["teacher_share"] == pytest.approx(expected.mean())
    assert overridden["policy"]["rule"] == "thresholds" and overridden["teacher_share"] == 0.0
    assert everything["policy"]["rule"] == "thresholds" and everything["teacher_share"] == 1.0
    assert models[0]["name"] == "mr-tiny"


async def test_server_thresholds_override_the_router_too(
    serve: Any, tiny_teacher: Path, routed_student: tuple[Path, CascadeRouter], texts: list[str]
) -> None:
    root, _ = routed_student
    async with serve(student=[root], teacher=[tiny_teacher], cascade_confidence_threshold=1.0) as client:
        body = (await client.post(CASCADE, json={"texts": texts})).json()
    assert body["policy"]["rule"] == "thresholds" and body["policy"]["sources"]["confidence_threshold"] == "settings"
    assert body["teacher_share"] == 1.0


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "missing", "valid checksum, bad content"])
async def test_a_damaged_router_file_stops_start_up_naming_it(
    settings_for: Any, run_app: Any, routed_student: tuple[Path, CascadeRouter], tmp_path: Path, damage: str
) -> None:
    root = copy_model(routed_student[0], tmp_path / "damaged")
    path = root / ROUTER_FILE
    data = path.read_bytes()
    fragment = {"flipped byte": "sha256 does not match", "truncated": "size is",
                "missing": "missing", "valid checksum, bad content": "cascade router is invalid"}[damage]
    if damage == "flipped byte":
        path.write_bytes(data.replace(b'"coef"', b'"coeg"', 1))
    elif damage == "truncated":
        path.write_bytes(data[:-10])
    elif damage == "missing":
        path.unlink()
    else:  # a file the manifest's checksum matches, but which is no router: refused on its content
        router = json.loads(data)
        router["coef"] = router["coef"][:2]
        path.write_text(json.dumps(router))
        manifest = json.loads((root / "manifest.json").read_text())
        manifest["router"] = {"path": ROUTER_FILE, "bytes": path.stat().st_size,
                              "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=fragment) as refused:
        async with run_app(create_app(settings_for([root]))):
            pass
    assert refused.value.path == path
