"""``make loadtest``: start the service on loopback, step-load each route with locust, report the knees.

    sd loadtest                               # models/mr-demo + models/mr-demo-teacher
    sd loadtest --quick --student DIR         # short steps, to try it
    sd loadtest --workers 2 --locust-processes 2

For each scenario (student, teacher, mixed and, when the service has it, cascade; requests of 1 and
of 32 texts) and each step of the user ladder, one headless locust run of ``--step-s`` seconds (and at
most ``--max-requests`` requests) against ``127.0.0.1`` only; a scenario stops climbing once a step
is past saturation (p99 over 2 s or over 20% failures). Writes ``<out>.json`` (every step: users,
requests/s, texts/s, p50/p95/p99 ms, failures), ``<out>.md`` and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from loadtest.steps import Step, check_goals, parse_summary, render_markdown, should_stop
from sdcore.machine import load_note, loadavg, machine, shown_path
from service.ops.server_process import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[1]
LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
USER_CLASSES = {"student": "StudentUser", "teacher": "TeacherUser", "mixed": "MixedUser", "cascade": "CascadeUser"}
ROUTES = {"student": "/v1/classify", "teacher": "/v1/teacher/classify", "mixed": "mixed",
          "cascade": "/v1/cascade/classify"}


@dataclass(frozen=True)
class Scenario:
    kind: str  # a key of USER_CLASSES
    texts_per_request: int

    @property
    def name(self) -> str:
        return f"{self.kind} x{self.texts_per_request}"


class Service(ServerProcess):
    """``python -m service`` on a loopback port, started and stopped by the runner."""

    def __init__(self, args: list[str], log: Path) -> None:
        super().__init__(args, log=log, cwd=REPO)

    def has_route(self, path: str) -> bool:
        with urllib.request.urlopen(f"{self.url}/openapi.json", timeout=5.0) as answer:
            return path in json.load(answer).get("paths", {})


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process and its live children (the service and its workers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:  # a worker that exited between the listing and the read
            continue
        total += times.user + times.system
    return total


def waited_children_cpu_seconds() -> float:
    """CPU seconds of this process's finished, waited-for children and theirs (a locust run and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_step(scenario: Scenario, users: int, host: str, args: argparse.Namespace, texts_file: Path,
             work: Path, has_cascade: bool, service_pid: int | None = None) -> Step:
    prefix = work / f"{scenario.kind}-x{scenario.texts_per_request}-u{users}"
    summary_file = prefix.with_suffix(".json")
    summary_file.unlink(missing_ok=True)  # a step run twice must not read the first run's totals
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary", "--reset-stats",
        "-u", str(users), "-r", str(users), "-t", f"{args.step_s}s", "--stop-timeout", "5",
        "--host", host, "--loglevel", "WARNING",
    ]
    if args.locust_processes > 1:
        # The master binds to loopback on a free port (locust's default is 5557 on every interface, which
        # a second load test running at the same time would collide with); its workers connect there.
        port = str(free_port())
        command += ["--processes", str(args.locust_processes), "--master-bind-host", "127.0.0.1",
                    "--master-bind-port", port, "--master-host", "127.0.0.1", "--master-port", port]
    # The locustfile's own options (see loadtest/locustfile.py).
    command += ["--texts-file", str(texts_file), "--texts-per-request", str(scenario.texts_per_request),
                "--max-requests", str(args.max_requests), "--cascade-share", "1" if has_cascade else "0",
                "--summary-file", str(summary_file)]
    command.append(USER_CLASSES[scenario.kind])
    started = time.perf_counter()
    service_cpu = tree_cpu_seconds(service_pid) if service_pid is not None else 0.0
    locust_cpu = waited_children_cpu_seconds()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.step_s + 60, check=False)
    seconds = time.perf_counter() - started
    service_cores = (tree_cpu_seconds(service_pid) - service_cpu) / seconds if service_pid is not None else None
    locust_cores = (waited_children_cpu_seconds() - locust_cpu) / seconds
    if not summary_file.is_file():
        raise RuntimeError(f"locust wrote no summary (exit {done.returncode}):\n{done.stderr[-3000:]}")
    stats = parse_summary(summary_file.read_text())
    return Step(scenario=scenario.name, route=ROUTES[scenario.kind], texts_per_request=scenario.texts_per_request,
                users=users, requests=int(stats["requests"]), failures=int(stats["failures"]),
                requests_per_s=stats["requests_per_s"], p50_ms=stats["p50_ms"], p95_ms=stats["p95_ms"],
                p99_ms=stats["p99_ms"], max_ms=stats["max_ms"], seconds=round(seconds, 1),
                service_cpu_cores=None if service_cores is None else round(service_cores, 3),
                locust_cpu_cores=round(locust_cores, 3))


def write_chart(steps: list[Step], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(s.scenario for s in steps))
    fig, (ax_lat, ax_tps) = plt.subplots(1, 2, figsize=(13, 5))
    for i, name in enumerate(scenarios):
        mine = [s for s in steps if s.scenario == name]
        users = [s.users for s in mine]
        color = f"C{i}"
        ax_lat.plot(users, [s.p50_ms for s in mine], "-o", color=color, ms=3, label=f"{name} p50")
        ax_lat.plot(users, [s.p99_ms for s in mine], "--^", color=color, ms=3, label=f"{name} p99")
        ax_tps.plot(users, [s.texts_per_s for s in mine], "-o", color=color, ms=3, label=name)
    ax_lat.axhline(100, color="grey", lw=0.8, ls=":")
    for ax in (ax_lat, ax_tps):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("closed-loop users")
        ax.grid(True, which="both", lw=0.3)
    ax_lat.set_ylabel("latency ms (p50 solid, p99 dashed; dotted: 100 ms)")
    ax_tps.set_ylabel("texts/s (requests/s x texts per request)")
    ax_lat.legend(fontsize=6, ncol=2)
    ax_tps.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_texts(path: Path, data_cache: Path) -> int:
    """MR sentences, one a line (the workload of the requests); falls back to the locustfile's own."""
    try:
        from training.data.task_data import load_mr

        task = load_mr(data_cache)
        texts = [*task.train.texts, *task.dev.texts, *task.test.texts]
    except Exception as exc:  # the data cache may be absent: say so, and load-test with built-in texts
        print(f"MR sentences unavailable ({exc}); using the locustfile's built-in texts", file=sys.stderr)
        from loadtest.locustfile import FALLBACK_TEXTS

        texts = list(FALLBACK_TEXTS)
    path.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    return len(texts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", type=Path, default=REPO / "models/mr-demo")
    p.add_argument("--teacher", type=Path, default=REPO / "models/mr-demo-teacher")
    p.add_argument("--scenarios", nargs="+", default=["student", "teacher", "mixed", "cascade"],
                   choices=list(USER_CLASSES))
    p.add_argument("--texts-per-request", nargs="+", type=int, default=[1, 32])
    p.add_argument("--users", nargs="+", type=int, default=None,
                   help="the user ladder (default 1 2 4 8 12 16 24 32 64)")
    p.add_argument("--step-s", type=int, default=15, help="seconds of each step")
    p.add_argument("--max-requests", type=int, default=50_000, help="most requests in one step")
    p.add_argument("--workers", type=int, default=1, help="service worker processes")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model per worker")
    p.add_argument("--locust-processes", type=int, default=2,
                   help="locust processes (--processes); 2 sent about a third more than 1 here")
    p.add_argument("--data-cache", type=Path, default=REPO / ".cache/data")
    p.add_argument("--out", type=Path, default=REPO / "reports/loadtest")
    p.add_argument("--quick", action="store_true", help="3 s steps and users 1 4 16: to try it")
    args = p.parse_args(argv)
    if args.quick:
        args.step_s = 3
    args.users = args.users or ([1, 4, 16] if args.quick else [1, 2, 4, 8, 12, 16, 24, 32, 64])
    return args


def service_arguments(args: argparse.Namespace, show: Callable[[Path], str] = str) -> list[str]:
    """The service's command line; ``show`` writes the model paths (the report shows them repo-relative)."""
    return ["--student", show(args.student), "--teacher", show(args.teacher), "--workers", str(args.workers),
            "--threads", str(args.threads), "--log-level", "warning", "--max-queue-size", "1024"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shown = sys.argv[1:] if argv is None else argv
    command = "sd loadtest" + (" " + " ".join(shown) if shown else "")
    service_args = service_arguments(args)
    start_load = loadavg()
    start_note = load_note()
    steps: list[Step] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="loadtest-") as tmp:
        work = Path(tmp)
        texts_file = work / "texts.txt"
        write_texts(texts_file, args.data_cache)
        service = Service(service_args, work / "service.log")
        try:
            service.wait_ready(timeout_s=180)
            has_cascade = service.has_route(ROUTES["cascade"])
            kinds = [k for k in args.scenarios if k != "cascade" or has_cascade]
            if "cascade" in args.scenarios and not has_cascade:
                notes.append("The service has no /v1/cascade/classify route: the cascade scenario was not run "
                             "and MixedUser sends its cascade share to the student route.")
            for batch in args.texts_per_request:
                for kind in kinds:
                    scenario = Scenario(kind, batch)
                    for users in args.users:
                        step = run_step(scenario, users, service.url, args, texts_file, work, has_cascade,
                                        service.process.pid)
                        steps.append(step)
                        print(f"{scenario.name:12s} users {users:3d}: {step.requests_per_s:9,.1f} req/s "
                              f"{step.texts_per_s:10,.1f} texts/s p50 {step.p50_ms:5.0f} p99 {step.p99_ms:6.0f} ms "
                              f"failures {step.failures} CPU service {step.service_cpu_cores:.2f} locust "
                              f"{step.locust_cpu_cores:.2f} (load {loadavg()[0]})", flush=True)
                        if should_stop(step):
                            break
        finally:
            service.stop()
    goals = check_goals(steps)
    report: dict[str, Any] = {
        "command": command,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_start": start_load,
        "loadavg_end": loadavg(),
        "load_note": f"at start, {start_note}",
        "service_command": "python -m service " + " ".join(service_arguments(args, shown_path)),
        "locust": f"FastHttpUser, {args.locust_processes} process(es), closed loop (wait 0)",
        "step_s": args.step_s,
        "max_requests": args.max_requests,
        "steps": [s.to_dict() for s in steps],
        "goals": [vars(g) for g in goals],
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report, steps, goals)
    args.out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    if steps:
        write_chart(steps, args.out.with_suffix(".png"), f"Step load, {os.cpu_count()} cores, {report['date']}")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
