"""``python -m service.ops.healthcheck`` (the images' HEALTHCHECK): which URL it asks, and a failure exits 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.ops.healthcheck import readiness_url
from service.ops.server_process import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("host", "url"), [
    ("0.0.0.0", "http://127.0.0.1:8000/readyz"),
    ("", "http://127.0.0.1:8000/readyz"),
    ("::", "http://127.0.0.1:8000/readyz"),
    ("127.0.0.1", "http://127.0.0.1:8000/readyz"),
    ("::1", "http://[::1]:8000/readyz"),
    ("api.internal", "http://api.internal:8000/readyz"),
])
def test_readiness_url(host: str, url: str) -> None:
    assert readiness_url(host, "8000") == url


def test_no_server_exits_1_with_the_url_named() -> None:
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "service.ops.healthcheck"], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, env={"SD_HOST": "127.0.0.1", "SD_PORT": str(port)})
    assert out.returncode == 1
    assert f"http://127.0.0.1:{port}/readyz" in out.stderr
