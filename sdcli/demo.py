"""The end of `make demo` (``sd demo``): serve the freshly trained model, answer one request, stop.

Starts the service on a free loopback port (``service.ops.server_process``), sends the same texts to the
student, comparison and cascade routes, prints the answers and stops the server with SIGTERM. Prints
the run's accuracy report first.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

from service.ops.server_process import ServerProcess
from training.config import load_config

EXAMPLES = [
    "A gorgeous, witty and deeply moving film.",
    "The plot is thin and the jokes fall flat.",
]
ROUTES = ("/v1/classify", "/v1/compare", "/v1/cascade/classify")


def post(url: str, body: dict[str, object]) -> tuple[int, object]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def demo(config_path: Path, texts: list[str] = EXAMPLES) -> dict[str, int]:
    """Print the accuracy report, then each route's answer on ``texts``; returns each route's status."""
    config = load_config(config_path)
    report = Path(config.evaluate.report or f"reports/accuracy-{config.name}").with_suffix(".md")
    if report.is_file():
        print(report.read_text())
    args = ["--student", str(config.student_dir)]
    if config.teacher_dir.is_dir():
        args += ["--teacher", str(config.teacher_dir)]
    statuses: dict[str, int] = {}
    with ServerProcess(args) as server:
        print("$", " ".join(server.command))
        server.wait_ready(timeout_s=120)
        for route in ROUTES:
            status, answer = post(server.url + route, {"texts": texts})
            statuses[route] = status
            print(f"POST {route} -> {status}")
            print(json.dumps(answer, indent=2))
    return statuses
