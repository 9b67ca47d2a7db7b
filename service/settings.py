"""The service's one settings object: environment variables ``SD_*`` and command-line flags.

Built once in ``main()`` (or by a test) and passed to ``create_app(settings)``; nothing below reads
``os.environ``. Command-line flags win over environment variables, which win over the defaults.
List settings take repeated flags (``--student a --student b``) or a comma-separated value
(``SD_STUDENT=a,b``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, CliApp, CliSettingsSource, NoDecode, SettingsConfigDict

ENV_PREFIX = "SD_"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        cli_prog_name="python -m service",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,  # "--threads int", not "{int,null}"
        cli_show_env_vars=True,  # each flag's SD_* name in --help
        cli_avoid_json=True,
        extra="forbid",
    )

    # --- models ---------------------------------------------------------------------------------
    student: Annotated[list[Path], NoDecode] = Field(
        default=[], description="exported student folder(s); the first is the default student"
    )
    teacher: Annotated[list[Path], NoDecode] = Field(
        default=[], description="exported teacher folder(s); the first is the default teacher"
    )
    model_repository: Path | None = Field(
        default=None,
        description="a model repository: <name>/<version>/ folders (Triton's layout); the highest version of "
        "each model is served, and /v2/repository/models/<name>/load and /unload change that at run time",
    )
    verify_checksums: bool = Field(default=True, description="check every model file's sha256 at start")

    # --- server ---------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8000, ge=0, le=65535, description="port to bind (0 = any free port)")
    grpc_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="port of the gRPC Open Inference Protocol server, beside HTTP on the same models "
        "(unset: no gRPC; 0 = any free port)",
    )
    workers: int = Field(default=1, ge=1, le=64, description="server processes (each maps the same shards)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="the least severe log lines written"
    )
    log_format: Literal["text", "json"] = Field(default="text", description="log lines as text or one JSON object each")
    otel: bool = Field(
        default=False,
        description="FastAPI's built-in OpenTelemetry spans, metrics and logs, exported where an OpenTelemetry SDK "
        "is configured; off, requests skip FastAPI's per-request check for one (the Prometheus metrics at "
        "/metrics are kept either way)",
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="origins allowed to call the API from a browser (CORS); * for any"
    )
    graceful_timeout_s: int = Field(
        default=30, ge=1, description="on SIGTERM, how long in-flight requests may take before they are cut"
    )
    drain_delay_s: float = Field(
        default=5.0, ge=0, le=600,
        description="on SIGTERM, how long readiness answers 503 while new connections are still served, before "
        "the listener closes (time for a load balancer to take the server out); then in-flight requests finish "
        "within graceful_timeout_s. SIGINT (Ctrl-C) skips it. 0 = close the listener at once",
    )

    # --- dynamic batching -------------------------------------------------------------------------
    max_batch_size: int = Field(default=256, ge=1, description="student: most texts in one runtime call")
    teacher_max_batch_size: int = Field(
        default=64, ge=1, description="teacher: most texts in one runtime call (the runtime sorts them by length)"
    )
    teacher_onnx_batch_size: int = Field(default=16, ge=1, description="teacher: rows per ONNX run within a call")
    max_wait_ms: float = Field(
        default=0.0, ge=0, le=10_000,
        description="how long a batch waits to fill up; 0 = take what queued while the previous batch ran",
    )
    student_inline_max_chars: int = Field(
        default=2048, ge=0,
        description="student: a batch of at most this many characters runs on the event loop's thread, not the "
        "model's (the thread hop costs more than a small student batch); 0 = always the model's thread",
    )
    max_queue_size: int = Field(default=256, ge=1, description="requests waiting per model before 503")
    request_timeout_s: float = Field(default=10.0, gt=0, description="a request not answered by then gets 504")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After sent with a 503")

    # --- cascade (/v1/cascade/classify) ------------------------------------------------------------
    cascade_confidence_threshold: float | None = Field(
        default=None, ge=0, le=1,
        description="defer to the teacher below this calibrated student confidence; unset = the "
        "student manifest's operating point (a request's own threshold wins over both)",
    )
    cascade_coverage_threshold: float | None = Field(
        default=None, ge=0, le=1,
        description="defer to the teacher below this n-gram coverage; unset = the student manifest's "
        "operating point (a request's own threshold wins over both)",
    )

    # --- request limits -------------------------------------------------------------------------
    max_texts_per_request: int = Field(default=64, ge=1, description="more texts in one request: 413")
    max_chars_per_text: int = Field(default=20_000, ge=1, description="a longer text: 413")
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="a larger request body: 413")
    max_concurrent_explanations: int = Field(
        default=2, ge=1, description="/v1/explain requests running at once; one more: 503"
    )

    # --- device ---------------------------------------------------------------------------------
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="where ONNX runs")
    allow_cpu_fallback: bool = Field(default=False, description="device=cuda without CUDA: run on CPU, not fail")
    threads: int | None = Field(
        default=None, ge=1,
        description="threads per model: a teacher's ONNX intra-op threads, a student's kernel threads over "
        "a batch's texts (its small ONNX head runs on one); unset: all cores",
    )

    # --- security -------------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        default=None,
        description="if set, every route but health needs 'Authorization: Bearer <key>' (prefer SD_API_KEY or "
        "--api-key-file: a flag shows in ps)",
    )
    api_key_file: Path | None = Field(default=None, description="read the API key from this file (its first line)")

    @field_validator("student", "teacher", "cors_allow_origins", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_key", "cascade_confidence_threshold", "cascade_coverage_threshold", "grpc_port",
                     "model_repository", "api_key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if not self.student and not self.teacher and self.model_repository is None:
            raise ValueError(
                "no model given: pass --student DIR (and optionally --teacher DIR) or --model-repository DIR"
            )
        if self.api_key_file is not None:
            if self.api_key is not None:
                raise ValueError("api_key and api_key_file are both set: give the key one way")
            try:
                key = self.api_key_file.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                raise ValueError(f"api_key_file {self.api_key_file}: cannot read a key ({exc})") from None
            if not key:
                raise ValueError(f"api_key_file {self.api_key_file}: its first line is empty")
            self.api_key, self.api_key_file = SecretStr(key), None  # workers get the key itself, by environment
        if self.teacher_onnx_batch_size > self.teacher_max_batch_size:
            raise ValueError("teacher_onnx_batch_size cannot exceed teacher_max_batch_size")
        return self

    def to_env(self) -> dict[str, str]:
        """These settings as ``SD_*`` variables, so worker processes rebuild the same object."""
        env: dict[str, str] = {}
        for name, value in self:
            if value is None:
                continue
            if isinstance(value, list):
                text = ",".join(str(v) for v in value)
            elif isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env


# How --help names each setting's value, where the type's own name would read as Python.
METAVARS = {"student": "DIR", "teacher": "DIR", "model_repository": "DIR", "api_key": "KEY",
            "api_key_file": "FILE", "cors_allow_origins": "ORIGIN", "host": "ADDRESS"}


def settings_from_cli(argv: list[str] | None) -> ServiceSettings:
    """Parse flags (and the environment); ``--help`` prints every setting with its SD_* variable."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve exported students and teachers over HTTP (v1 and the Open Inference Protocol) and, "
        "with --grpc-port, gRPC. Every flag is also an SD_* environment variable (shown with each); flags win.",
    )
    source: CliSettingsSource[ServiceSettings] = CliSettingsSource(ServiceSettings, root_parser=parser)
    for action in parser._actions:  # argparse keeps no public list of its arguments
        if action.dest in METAVARS:
            action.metavar = METAVARS[action.dest]
        if isinstance(action.help, str):
            action.help = action.help.replace("(default: [])", "(default: none)").replace(
                "(default: None)", "(default: unset)")
    return CliApp.run(ServiceSettings, cli_args=argv, cli_settings_source=source)
