"""Service settings: SD_* variables, command-line flags (which win), validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import ServiceSettings, settings_from_cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SD_"):
            monkeypatch.delenv(name)


def test_defaults_are_safe() -> None:
    s = ServiceSettings(student=[Path("m")])
    assert (s.host, s.port, s.workers, s.device, s.api_key) == ("127.0.0.1", 8000, 1, "cpu", None)
    assert s.allow_cpu_fallback is False and s.verify_checksums is True


def test_environment_with_prefix_and_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_STUDENT", "models/a, models/b")
    monkeypatch.setenv("SD_PORT", "9001")
    monkeypatch.setenv("SD_API_KEY", "s3cret")
    monkeypatch.setenv("SD_ALLOW_CPU_FALLBACK", "true")
    s = ServiceSettings()
    assert s.student == [Path("models/a"), Path("models/b")]
    assert s.port == 9001 and s.allow_cpu_fallback is True
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)  # secrets stay out of logs


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_PORT", "9001")
    monkeypatch.setenv("SD_MAX_BATCH_SIZE", "8")
    s = settings_from_cli(
        ["--student", "s1", "--student", "s2", "--teacher", "t", "--port", "9002", "--max-wait-ms", "0",
         "--device", "cuda", "--allow-cpu-fallback", "--threads", "2"]
    )
    assert s.student == [Path("s1"), Path("s2")] and s.teacher == [Path("t")]
    assert (s.port, s.max_batch_size, s.max_wait_ms, s.device, s.threads) == (9002, 8, 0.0, "cuda", 2)
    assert s.allow_cpu_fallback is True


def test_empty_api_key_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_API_KEY", "")
    assert ServiceSettings(student=[Path("m")]).api_key is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({}, "no model given"),
        ({"student": ["m"], "port": 70000}, "port"),
        ({"student": ["m"], "max_batch_size": 0}, "max_batch_size"),
        ({"student": ["m"], "max_queue_size": 0}, "max_queue_size"),
        ({"student": ["m"], "max_wait_ms": -1}, "max_wait_ms"),
        ({"student": ["m"], "request_timeout_s": 0}, "request_timeout_s"),
        ({"student": ["m"], "device": "tpu"}, "device"),
        ({"student": ["m"], "threads": 0}, "threads"),
        ({"student": ["m"], "teacher_onnx_batch_size": 128, "teacher_max_batch_size": 64}, "teacher_onnx"),
        ({"student": ["m"], "max_body_bytes": 10}, "max_body_bytes"),
        ({"student": ["m"], "no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        ServiceSettings(**overrides)  # type: ignore[arg-type]


def test_to_env_rebuilds_the_same_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ServiceSettings(student=[Path("a"), Path("b")], teacher=[Path("t")], api_key="k",  # type: ignore[arg-type]
                               max_wait_ms=3.5, allow_cpu_fallback=True, threads=3)
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert ServiceSettings() == original
