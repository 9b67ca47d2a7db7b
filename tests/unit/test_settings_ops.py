"""Operations settings: the API key from a file, readable --help, and log lines (request id, JSON)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.ops.logging_setup import JsonFormatter, RequestIdFilter, access_log, request_context, request_id_from
from service.settings import ServiceSettings, settings_from_cli


def test_the_api_key_comes_from_a_file_and_workers_get_it_by_environment(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    settings = ServiceSettings(student=[Path("x")], api_key_file=key_file)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    env = settings.to_env()
    assert env["SD_API_KEY"] == "s3cret" and "SD_API_KEY_FILE" not in env
    with pytest.raises(ValidationError, match="both set"):
        ServiceSettings(student=[Path("x")], api_key_file=key_file, api_key="other")
    with pytest.raises(ValidationError, match="cannot read"):
        ServiceSettings(student=[Path("x")], api_key_file=tmp_path / "missing")


def test_a_model_repository_alone_is_enough(tmp_path: Path) -> None:
    assert ServiceSettings(model_repository=tmp_path).student == []
    with pytest.raises(ValidationError, match="--model-repository"):
        ServiceSettings()


def test_help_is_readable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        settings_from_cli(["--help"])
    out = capsys.readouterr().out
    for fragment in ("--student DIR", "[env: SD_STUDENT]", "--api-key KEY", "--grpc-port int", "[env: SD_GRPC_PORT]",
                     "--log-format {text,json}", "--model-repository DIR"):
        assert fragment in out, fragment
    for bad in ("list[Path]", "SecretStr", "null}", "default factory", "(default: None)"):
        assert bad not in out, bad
    for block in out.split("\n  --")[1:]:
        assert block.count("(default") <= 1, block


def test_request_ids_are_kept_when_sane_and_replaced_otherwise() -> None:
    assert request_id_from("abc-123") == "abc-123"
    assert len(request_id_from(None)) == 32
    assert request_id_from("bad id\nwith newline") != "bad id\nwith newline"
    assert len(request_id_from("x" * 500)) == 32


def test_json_lines_carry_the_request_id_and_access_fields(caplog: pytest.LogCaptureFixture) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("service.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with request_context("req-9") as info:
            info.texts, info.queue_ms, info.inference_ms = 3, 1.5, 2.25
            access_log("POST /v1/classify", 200, info, 5.0)
    finally:
        logger.removeHandler(handler)
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "req-9" and line["logger"] == "service.access"
    assert (line["route"], line["status"], line["texts"], line["queue_ms"], line["inference_ms"]) == (
        "POST /v1/classify", 200, 3, 1.5, 2.25)
    assert "texts=3" in line["message"]


def test_fastapi_telemetry_is_off_unless_asked_for_and_workers_get_the_choice() -> None:
    from service.app import create_app

    quiet = create_app(ServiceSettings(student=[Path("x")]))
    loud = create_app(ServiceSettings(student=[Path("x")], otel=True))
    # Where this FastAPI has its own OpenTelemetry (its config is on the app), it is off by default.
    if hasattr(quiet, "_telemetry"):
        assert not any(quiet._telemetry[k] for k in ("tracing", "metrics", "logs"))
        assert all(loud._telemetry[k] for k in ("tracing", "metrics", "logs"))
    assert ServiceSettings(student=[Path("x")], otel=True).to_env()["SD_OTEL"] in ("True", "true", "1")
    assert settings_from_cli(["--student", "x", "--otel"]).otel is True
