"""Stop a running service while requests are in flight, and check the drain (scripts/compose_test.sh).

    python scripts/drain_probe.py --url http://127.0.0.1:8000 -- docker compose stop api

Opens ``--slow`` connections that POST a ~330 KB body to /v1/classify in chunks over ``--upload-s``
seconds, waits until the server counts them in flight (``sd_http_requests_in_flight``), runs the stop
command, then checks: readiness answered 503 while a new connection was still served, every slow upload
was answered 200 with one result per text, and the stop command returned within ``--max-stop-s``.
Prints one JSON line with the figures; exit 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPConnection
from typing import Any

TEXT = ("a gripping, beautifully acted film whose quiet moments land as hard as its loud ones, "
        "though the last act drags and the jokes wear thin ") * 60  # about 8,900 characters


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def in_flight(url: str) -> float:
    for line in get(f"{url}/metrics")[1].splitlines():
        if line.startswith("sd_http_requests_in_flight "):
            return float(line.split()[-1])
    return 0.0


def slow_upload(host: str, port: int, body: bytes, upload_s: float, out: dict[str, Any], sent: threading.Event) -> None:
    """One POST whose body arrives in 20 chunks over ``upload_s``; the answer's status and results in ``out``."""
    try:
        conn = HTTPConnection(host, port, timeout=120)
        conn.putrequest("POST", "/v1/classify")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        step = -(-len(body) // 20)
        for i, lo in enumerate(range(0, len(body), step)):
            conn.send(body[lo : lo + step])
            if i == 0:
                sent.set()
            time.sleep(upload_s / 20)  # the pace of a slow client
        answer = conn.getresponse()
        payload = answer.read()
        out["status"] = answer.status
        out["results"] = len(json.loads(payload)["results"]) if answer.status == 200 else payload[:200].decode()
        conn.close()
    except OSError as exc:
        out["error"] = repr(exc)
        sent.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--slow", type=int, default=4, help="slow uploads in flight when the stop begins")
    parser.add_argument("--texts", type=int, default=36, help="texts per slow request (about 9 KB each)")
    parser.add_argument("--upload-s", type=float, default=8.0, help="how long each slow body takes to send")
    parser.add_argument("--max-stop-s", type=float, default=45.0, help="the stop command must return by then")
    parser.add_argument("stop", nargs="+", help="the command that stops the service (after --)")
    args = parser.parse_args(argv)
    where = urllib.parse.urlsplit(args.url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    body = json.dumps({"texts": [TEXT] * args.texts}).encode()
    outs: list[dict[str, Any]] = [{} for _ in range(args.slow)]
    sent = [threading.Event() for _ in range(args.slow)]
    threads = [threading.Thread(target=slow_upload, args=(host, port, body, args.upload_s, outs[i], sent[i]))
               for i in range(args.slow)]
    for thread in threads:
        thread.start()
    failures: list[str] = []
    deadline = time.monotonic() + 30
    while not all(e.is_set() for e in sent) or in_flight(args.url) < args.slow + 1:  # + the /metrics request
        if time.monotonic() > deadline:
            print(json.dumps({"error": "the slow requests never were in flight", "outs": outs}))
            return 1
        time.sleep(0.05)  # poll interval

    started = time.monotonic()
    stop = subprocess.Popen(args.stop)
    ready_503_at = fresh_status = fresh_at = None
    while ready_503_at is None and time.monotonic() - started < 20:
        status, _ = get(f"{args.url}/readyz")
        if status == 503:
            ready_503_at = time.monotonic() - started
        time.sleep(0.05)  # poll interval
    if ready_503_at is None:
        failures.append("readiness never answered 503")
    else:  # a new connection, after readiness went 503: still served during the drain delay
        fresh = HTTPConnection(host, port, timeout=10)
        fresh.request("POST", "/v1/classify", body=json.dumps({"texts": ["new during the drain"]}),
                      headers={"Content-Type": "application/json", "Connection": "close"})
        fresh_status = fresh.getresponse().status
        fresh_at = time.monotonic() - started
        fresh.close()
        if fresh_status != 200:
            failures.append(f"a new connection during the drain delay got {fresh_status}")
    for thread in threads:
        thread.join(120)
    try:
        stop_code = stop.wait(timeout=max(1.0, args.max_stop_s - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        stop.kill()
        stop_code = None
        failures.append(f"the stop command did not return within {args.max_stop_s} s")
    stopped_s = time.monotonic() - started
    if stop_code not in (0, None):
        failures.append(f"the stop command exited {stop_code}")
    answered = sum(1 for o in outs if o.get("status") == 200 and o.get("results") == args.texts)
    if answered != args.slow:
        failures.append(f"{args.slow - answered} of {args.slow} uploads in flight were not answered 200: {outs}")
    print(json.dumps({"in_flight_uploads": args.slow, "body_bytes": len(body), "answered_200": answered,
                      "readyz_503_after_s": ready_503_at, "new_connection_status": fresh_status,
                      "new_connection_after_s": fresh_at, "stop_returned_after_s": round(stopped_s, 2),
                      "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
