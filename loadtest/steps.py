"""The pure parts of ``make loadtest``: the summary locust writes at exit -> a step, the knee, the report text.

A *scenario* is a route with a request size (1 or 32 texts); a *step* is one locust run at a fixed
number of closed-loop users. The *knee* of a scenario is its highest-throughput step that still has
p99 < ``P99_LIMIT_MS`` and no failures: the most load the route takes before queueing shows.
Unit-tested in tests/unit/test_loadtest_steps.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

P99_LIMIT_MS = 100.0
# Goals of issues 4 and 11 (issue 11 raised the single-text goal from 1,000 to 2,000 requests/s).
GOAL_STUDENT_RPS = 2000.0  # single-text requests/s on the student route ...
GOAL_STUDENT_P99_MS = 50.0  # ... at p99 <= 50 ms
GOAL_BATCH_RATIO = 30.0  # 32-text requests: student texts/s >= 30 x the teacher's


@dataclass(frozen=True)
class Step:
    scenario: str  # e.g. "student x1"
    route: str
    texts_per_request: int
    users: int
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    seconds: float
    # CPU each side used over the step (CPU seconds / the step's wall seconds; 1.0 = one core busy): the
    # service's processes and locust's. They share the machine's cores, so the client's cost bounds the
    # service's. None where not measured.
    service_cpu_cores: float | None = None
    locust_cpu_cores: float | None = None

    @property
    def texts_per_s(self) -> float:
        return self.requests_per_s * self.texts_per_request

    @property
    def healthy(self) -> bool:
        return self.failures == 0 and self.requests > 0 and self.p99_ms < P99_LIMIT_MS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"texts_per_s": self.texts_per_s, "healthy": self.healthy}


SUMMARY_KEYS = ("requests", "failures", "requests_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms")


def parse_summary(text: str) -> dict[str, float]:
    """The totals the locustfile writes at exit (``--summary-file``), checked: every key, as numbers."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"locust summary is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("locust summary is not a JSON object")
    missing = [k for k in SUMMARY_KEYS if k not in data]
    if missing:
        raise ValueError(f"locust summary lacks {', '.join(missing)}")
    bad = [k for k in SUMMARY_KEYS if not isinstance(data[k], int | float) or isinstance(data[k], bool)]
    if bad:
        raise ValueError(f"locust summary has non-numbers for {', '.join(bad)}")
    return {k: float(data[k]) for k in SUMMARY_KEYS}


def knee(steps: Sequence[Step]) -> Step | None:
    """The healthy step with the most requests/s (None when no step is healthy)."""
    healthy = [s for s in steps if s.healthy]
    return max(healthy, key=lambda s: s.requests_per_s) if healthy else None


def should_stop(step: Step, p99_cap_ms: float = 2000.0, failure_share: float = 0.2) -> bool:
    """Past saturation: more users only add queueing (or errors), so the scenario's later steps are skipped."""
    if step.requests == 0:
        return True
    return step.p99_ms > p99_cap_ms or step.failures / step.requests > failure_share


def best_under(steps: Sequence[Step], p99_ms: float) -> Step | None:
    """The step with the most requests/s among those with no failures and p99 <= ``p99_ms``."""
    ok = [s for s in steps if s.failures == 0 and s.requests > 0 and s.p99_ms <= p99_ms]
    return max(ok, key=lambda s: s.requests_per_s) if ok else None


@dataclass
class Verdict:
    name: str
    met: bool | None
    detail: str


def check_goals(steps: Sequence[Step]) -> list[Verdict]:
    by: dict[str, list[Step]] = {}
    for s in steps:
        by.setdefault(s.scenario, []).append(s)
    out: list[Verdict] = []
    single = by.get("student x1", [])
    best = best_under(single, GOAL_STUDENT_P99_MS)
    single_goal = (f"student route >= {GOAL_STUDENT_RPS:,.0f} single-text requests/s at p99 <= "
                   f"{GOAL_STUDENT_P99_MS:.0f} ms")
    if not single:
        out.append(Verdict(single_goal, None, "not measured"))
    else:
        got = best.requests_per_s if best else 0.0
        where = f"{best.users} users, p99 {best.p99_ms:.0f} ms" if best else "no step had p99 <= 50 ms"
        if best is not None and best.service_cpu_cores is not None and best.locust_cpu_cores is not None:
            where += f"; CPU: service {best.service_cpu_cores:.2f} cores, locust {best.locust_cpu_cores:.2f}"
        out.append(Verdict(single_goal, got >= GOAL_STUDENT_RPS, f"best {got:,.0f} req/s ({where})"))
    student32, teacher32 = knee(by.get("student x32", [])), knee(by.get("teacher x32", []))
    if not by.get("student x32") or not by.get("teacher x32"):
        out.append(Verdict("32-text requests: student texts/s >= 30x the teacher's", None, "not measured"))
    else:
        s_tps = student32.texts_per_s if student32 else 0.0
        t_best = max(by["teacher x32"], key=lambda s: s.texts_per_s if s.failures == 0 else 0.0)
        t_tps = teacher32.texts_per_s if teacher32 else t_best.texts_per_s
        ratio = s_tps / t_tps if t_tps > 0 else float("inf")
        note = "" if teacher32 else " (no teacher step had p99 < 100 ms: its best failure-free step is used)"
        out.append(Verdict("32-text requests: student texts/s >= 30x the teacher's", ratio >= GOAL_BATCH_RATIO,
                           f"student knee {s_tps:,.0f} texts/s / teacher {t_tps:,.1f} texts/s = {ratio:,.1f}x{note}"))
    return out


def steps_table(steps: Sequence[Step]) -> str:
    lines = ["| scenario | users | requests | req/s | texts/s | p50 ms | p95 ms | p99 ms | failures | "
             "service CPU | locust CPU | knee |",
             "|---" * 12 + "|"]
    knees = {s.scenario: knee([t for t in steps if t.scenario == s.scenario]) for s in steps}
    for s in steps:
        mark = "**knee**" if knees.get(s.scenario) == s else ""
        lines.append(f"| {s.scenario} | {s.users} | {s.requests:,} | {s.requests_per_s:,.1f} | {s.texts_per_s:,.1f} | "
                     f"{s.p50_ms:.0f} | {s.p95_ms:.0f} | {s.p99_ms:.0f} | {s.failures} | "
                     f"{_cores(s.service_cpu_cores)} | {_cores(s.locust_cpu_cores)} | {mark} |")
    return "\n".join(lines)


def _cores(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def knees_table(steps: Sequence[Step]) -> str:
    lines = ["| scenario | knee users | req/s | texts/s | p99 ms |", "|---|---|---|---|---|"]
    for scenario in dict.fromkeys(s.scenario for s in steps):
        k = knee([s for s in steps if s.scenario == scenario])
        if k is None:
            lines.append(f"| {scenario} | none (no step with p99 < {P99_LIMIT_MS:.0f} ms and no failures) | | | |")
        else:
            lines.append(
                f"| {scenario} | {k.users} | {k.requests_per_s:,.1f} | {k.texts_per_s:,.1f} | {k.p99_ms:.0f} |"
            )
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], steps: Sequence[Step], goals: Sequence[Verdict]) -> str:
    goal_lines = ["| goal | met | detail |", "|---|---|---|"]
    for g in goals:
        mark = "not measured" if g.met is None else ("yes" if g.met else "**no**")
        goal_lines.append(f"| {g.name} | {mark} | {g.detail} |")
    out = [
        "# Load test: the HTTP service under a step load",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}  ",
        f"Date: {report['date']}  ",
        f"Load average (1, 5, 15 min) at start {report['loadavg_start']}, at end {report['loadavg_end']}; "
        f"{report['load_note']}",
        "",
        f"Service: `{report['service_command']}`  ",
        f"Locust: {report['locust']}",
        "",
        "Closed-loop users (each sends its next request when the previous one is answered), one locust run "
        f"per step of {report['step_s']} s (at most {report['max_requests']:,} requests), stats reset once all "
        "users are started. Locust and the service share the machine's cores; each step's CPU columns say how "
        "many cores each used on average over the step (CPU seconds / wall seconds, locust's start-up "
        "included). Latency percentiles are "
        "locust's (whole milliseconds). Knee = the step with the most requests/s that has p99 < "
        f"{P99_LIMIT_MS:.0f} ms and no failures.",
        "",
        "## Goals",
        "",
        *goal_lines,
        "",
        "## Knees",
        "",
        knees_table(steps),
        "",
        "## Every step",
        "",
        steps_table(steps),
        "",
    ]
    for note in report.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"
