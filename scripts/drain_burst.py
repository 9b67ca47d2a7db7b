"""The stop measurement of issue 13, on a real server process on loopback:

    python scripts/drain_burst.py --student models/mr-tiny [--drain-delay-s 5]

100 connections each POST 3 requests of about 315 KB to /v1/classify, SIGTERM 0.3 s after the start;
prints how the 300 requests ended (status, or the client's error) and when the process exited.
Bounded: 300 requests, a 60 s client timeout.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import Counter
from http.client import HTTPConnection
from pathlib import Path

from service.ops.server_process import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", required=True, type=Path)
    parser.add_argument("--drain-delay-s", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--requests-per-connection", type=int, default=3)
    parser.add_argument("--signal-after-s", type=float, default=0.3)
    args = parser.parse_args(argv)
    server = ServerProcess(["--student", str(args.student), "--threads", "1", "--drain-delay-s",
                            str(args.drain_delay_s)], log=Path("drain-burst-server.log"), cwd=REPO_ROOT)
    server.wait_ready(120)
    body = json.dumps({"texts": ["a gripping, beautifully acted film " * 300] * 30}).encode()
    ends: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        for _ in range(args.requests_per_connection):
            try:
                conn = HTTPConnection("127.0.0.1", server.port, timeout=60)
                conn.request("POST", "/v1/classify", body=body, headers={"Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
                end = str(answer.status)
                conn.close()
            except OSError as exc:
                end = type(exc).__name__
            with lock:
                ends[end] += 1

    threads = [threading.Thread(target=client) for _ in range(args.connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(args.signal_after_s)  # the moment of the signal, as in the measurement
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(120)
    code = server.process.wait(60)
    print(f"drain delay {args.drain_delay_s} s, bodies of {len(body)} bytes: exit {code} "
          f"{time.monotonic() - started:.1f} s after the start; {dict(sorted(ends.items()))}")
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
