"""The end of `make demo`: serve the freshly trained model, answer one request, stop.

Starts `python -m service` on a free loopback port, waits for /readyz (with a deadline, no fixed
sleeps), sends the same texts to the student, comparison and cascade routes, prints the answers and
stops the server with SIGTERM. Prints the run's accuracy report first.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import load_config

EXAMPLES = [
    "A gorgeous, witty and deeply moving film.",
    "The plot is thin and the jokes fall flat.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, body: dict[str, object] | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_ready(base: str, proc: subprocess.Popen[bytes], deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with code {proc.returncode} before it was ready")
        try:
            if request(f"{base}/readyz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)  # polling interval of a health check, not a wait for an event
    raise SystemExit(f"the service was not ready within {deadline_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/mr-demo.toml")
    args = parser.parse_args()
    config = load_config(args.config)
    report = Path(config.evaluate.report or f"reports/accuracy-{config.name}").with_suffix(".md")
    if report.is_file():
        print(report.read_text())
    if not Path("service/__main__.py").is_file():
        print("(the service is not part of this checkout yet; the exported model is in", config.student_dir, ")")
        return
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "service", "--student", str(config.student_dir), "--port", str(port)]
    if config.teacher_dir.is_dir():
        cmd += ["--teacher", str(config.teacher_dir)]
    print("$", " ".join(cmd))
    proc = subprocess.Popen(cmd)
    try:
        wait_ready(base, proc, deadline_s=120)
        for route in ("/v1/classify", "/v1/compare", "/v1/cascade/classify"):
            status, answer = request(base + route, {"texts": EXAMPLES})
            print(f"POST {route} -> {status}")
            print(json.dumps(answer, indent=2))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
