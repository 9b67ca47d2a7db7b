"""Fixtures of the service's integration tests: tiny real models built once per session with
``training.testing.quick``, and an in-process server (the app's lifespan run, HTTP through httpx's ASGI
transport). Treat the model folders as read-only; tests that damage a model damage a copy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from service.app import create_app
from service.settings import ServiceSettings
from training.data.task_data import TaskData
from training.testing.quick import copy_model, make_tiny_student

Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Path:
    """A tiny DAN trained on 400 MR sentences, exported by the real exporter (float16 shards)."""
    out = tmp_path_factory.mktemp("models") / "mr-tiny"
    return make_tiny_student(out, mr_small.train.texts, mr_small.train.labels, mr_small.label_names,
                             shard_rows=200)  # several shards, so gathers cross shard bounds


@pytest.fixture(scope="session")
def tiny_student_b(tmp_path_factory: pytest.TempPathFactory, tiny_student: Path) -> Path:
    """The same student under another name, to test choosing a model by name."""
    out = copy_model(tiny_student, tmp_path_factory.mktemp("models-b") / "mr-tiny-b")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["name"] = "mr-tiny-b"
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def tiny_teacher(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Path:
    """A tiny BERT teacher, fine-tuned a little and exported to ONNX by the real exporter."""
    try:
        from training.testing.quick import make_tiny_teacher  # type: ignore[attr-defined]
    except ImportError:  # until training.testing.quick has it: the teacher tests' tiny BERT (same real exporter)
        return Path(request.getfixturevalue("tiny_teacher_dir"))
    out = tmp_path_factory.mktemp("teachers") / "mr-tiny-teacher"
    path: Path = make_tiny_teacher(out, mr_small.train.texts, mr_small.train.labels, mr_small.label_names)
    return path


@pytest.fixture
def texts(mr_small: TaskData) -> list[str]:
    """Twelve real test sentences of varied length."""
    return mr_small.test.texts[:12]


def in_process_settings(student: list[Path], teacher: list[Path], **overrides: Any) -> ServiceSettings:
    base: dict[str, Any] = {"student": student, "teacher": teacher, "threads": 1, "max_wait_ms": 1.0}
    return ServiceSettings(**{**base, **overrides})


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan run (models loaded and warmed), and a client talking to it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service", timeout=30) as client:
            yield client


@pytest.fixture
def serve(tiny_student: Path) -> Serve:
    """``async with serve(teacher=..., **settings) as client``: an in-process server on the tiny student."""

    def factory(student: list[Path] | None = None, teacher: list[Path] | None = None,
                **overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        settings = in_process_settings(student or [tiny_student], teacher or [], **overrides)
        return running(create_app(settings))

    return factory


@pytest.fixture
def settings_for(tiny_student: Path) -> Callable[..., ServiceSettings]:
    """``settings_for(student=[...], teacher=[...], **overrides)``: settings for an in-process app."""

    def factory(student: list[Path] | None = None, teacher: list[Path] | None = None, **overrides: Any
                ) -> ServiceSettings:
        return in_process_settings(student if student is not None else [tiny_student], teacher or [], **overrides)

    return factory


@pytest.fixture
def run_app() -> Callable[[FastAPI], AbstractAsyncContextManager[httpx.AsyncClient]]:
    """``async with run_app(app) as client``: run an app's lifespan (raises what start-up raises)."""
    return running
