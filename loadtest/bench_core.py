"""The pure parts of ``make bench``: how many samples to time, medians, speed-ups, goals, the report.

Nothing here imports a model library or touches the clock, so every function is unit-tested with plain
numbers (tests/unit/test_bench_core.py). The measuring side is ``loadtest/bench_systems.py``; the
command is ``sd bench`` (loadtest/bench.py).

A *cell* is one (workload, system, batch size, threads) combination. It is timed as ``repeats`` passes
over the same ``samples`` texts (a prefix of the workload's seeded shuffle, so every system sees the
same texts in the same order), after a warm-up; its figure is the median pass.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The goals of issues 4 and 11, checked in ``check_goals``.
GOAL_SPEEDUP_OVER_LARGE = 1000.0  # a student >= 1000x the RoBERTa-Large shape at its best, both workloads
GOAL_PAPER_SPEEDUP_OVER_LARGE = 2000.0  # the 1B student >= 2000x, same (issue 11)
GOAL_FASTTEXT_RATIO = 0.5  # the 1B student >= 0.5x fastText's samples/s on sentences (issue 11)
GOAL_DEMO_FASTTEXT_RATIO = 1.0  # the demo student >= 1.0x fastText, batch 32, 1 thread, both workloads
GOAL_WHOLE_OVER_POOL = 1.5  # the 1B student's text -> probabilities time <= 1.5x its pooling-only time, reviews
GOAL_DEMO_LATENCY_US = 50.0  # the demo student's in-process batch-1 latency, p50, sentences
GOAL_GATHER_SHARE = 0.5  # gather >= 50% of this machine's memory copy bandwidth, on full reviews (issue 4)


@dataclass(frozen=True)
class Plan:
    """How a cell is timed: ``repeats`` passes of ``samples`` texts (a whole number of batches)."""

    samples: int
    repeats: int


def plan_cell(
    seconds_per_sample: float,
    batch_size: int,
    pool_size: int,
    repeat_s: float,
    cell_s: float,
    max_repeats: int = 5,
    min_repeats: int = 3,
) -> Plan:
    """Samples per pass and number of passes for a system that takes ``seconds_per_sample``.

    A pass aims at ``repeat_s`` seconds (at least one batch, at most the whole pool rounded down to
    whole batches); passes are repeated up to ``max_repeats`` times within ``cell_s``, at least
    ``min_repeats`` times when a pass is short enough and always at least once. So a fast system gets
    several long passes and a slow one (RoBERTa-Large on full reviews, about a second a review) one
    batch, timed once.
    """
    if batch_size <= 0 or pool_size <= 0:
        raise ValueError(f"batch_size ({batch_size}) and pool_size ({pool_size}) must be > 0")
    per_sample = max(seconds_per_sample, 1e-9)
    whole_pool = max(batch_size, (pool_size // batch_size) * batch_size)
    wanted = math.ceil(repeat_s / per_sample / batch_size) * batch_size
    samples = min(max(batch_size, wanted), whole_pool)
    pass_s = samples * per_sample
    repeats = int(cell_s // pass_s) if pass_s > 0 else max_repeats
    if pass_s * min_repeats <= cell_s * 1.5:
        repeats = max(repeats, min_repeats)
    return Plan(samples=samples, repeats=max(1, min(max_repeats, repeats)))


def samples_per_second(samples: int, pass_seconds: Sequence[float]) -> float:
    """Throughput of the median pass."""
    if not pass_seconds:
        raise ValueError("no pass was timed")
    median = statistics.median(pass_seconds)
    return samples / median if median > 0 else float("inf")


def spread(pass_seconds: Sequence[float]) -> float:
    """(slowest - fastest) / median of the passes: how noisy the cell was (0 for one pass)."""
    if len(pass_seconds) < 2:
        return 0.0
    median = statistics.median(pass_seconds)
    return (max(pass_seconds) - min(pass_seconds)) / median if median > 0 else 0.0


def cell_key(row: dict[str, Any]) -> tuple[str, int, int]:
    return (str(row["workload"]), int(row["batch_size"]), int(row["threads"]))


def index_rows(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str, int, int], dict[str, Any]]:
    """Rows by (workload, system, batch size, threads); a later row for the same cell wins."""
    return {(str(r["workload"]), str(r["system"]), int(r["batch_size"]), int(r["threads"])): r for r in rows}


@dataclass(frozen=True)
class Speedup:
    workload: str
    batch_size: int
    threads: int
    student: str
    baseline: str
    ratio: float  # student samples/s over baseline samples/s
    baseline_cell: str = ""  # for a speed-up over the baseline's best: the cell it was, e.g. "b8 t2"


def speedups(rows: Sequence[dict[str, Any]], students: Sequence[str], baselines: Sequence[str]) -> list[Speedup]:
    """Each student's throughput over each baseline's, cell by cell (only cells both measured)."""
    by = index_rows(rows)
    out: list[Speedup] = []
    cells = sorted({cell_key(r) for r in rows})
    for workload, batch, threads in cells:
        for student in students:
            s = by.get((workload, student, batch, threads))
            if s is None:
                continue
            for base in baselines:
                b = by.get((workload, base, batch, threads))
                if b is None or not b["samples_per_s"] > 0:
                    continue
                out.append(Speedup(workload, batch, threads, student, base,
                                   float(s["samples_per_s"]) / float(b["samples_per_s"])))
    return out


def best_rows(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (workload, system)'s fastest cell over its batch sizes and thread counts."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        key = (str(r["workload"]), str(r["system"]))
        if key not in best or float(r["samples_per_s"]) > float(best[key]["samples_per_s"]):
            best[key] = r
    return best


def speedups_over_best(rows: Sequence[dict[str, Any]], students: Sequence[str],
                       baselines: Sequence[str]) -> list[Speedup]:
    """Each student cell over each baseline's best cell of the same workload (whatever its batch size and
    threads): a teacher is judged at the setting that suits it, not at the student's."""
    best = best_rows(rows)
    out: list[Speedup] = []
    for r in sorted((r for r in rows if r["system"] in students), key=lambda r: (*cell_key(r), str(r["system"]))):
        workload, batch, threads = cell_key(r)
        for base in baselines:
            b = best.get((workload, base))
            if b is None or not b["samples_per_s"] > 0:
                continue
            out.append(Speedup(workload, batch, threads, str(r["system"]), base,
                               float(r["samples_per_s"]) / float(b["samples_per_s"]),
                               f"b{b['batch_size']} t{b['threads']}"))
    return out


@dataclass
class Goal:
    name: str
    met: bool | None  # None: not measured in this run
    detail: str
    worst: float | None = None
    cells: list[str] = field(default_factory=list)


def _verdict(name: str, values: list[tuple[str, float]], target: float, unit: str, missing: str,
             at_most: bool = False) -> Goal:
    """Met when the worst value is >= target (``at_most``: when the worst, i.e. largest, is <= target)."""
    if not values:
        return Goal(name, None, missing)
    worst_cell, worst = (max if at_most else min)(values, key=lambda kv: kv[1])
    met = worst <= target if at_most else worst >= target
    detail = f"worst {worst:,.2f}{unit} ({worst_cell}); target {'<=' if at_most else '>='} {target:,.2f}{unit}"
    return Goal(name, met, detail, worst, [f"{c}: {v:,.2f}{unit}" for c, v in values])


def check_goals(
    rows: Sequence[dict[str, Any]],
    students: Sequence[str],
    paper_student: str | None,
    large: Sequence[str],
    fasttext: str | None,
    gather_shares: dict[str, float],
    batch_size: int = 32,
    demo_student: str | None = None,
) -> list[Goal]:
    """The goals of issues 4 and 11, student cells at ``batch_size`` (the paper's 32) unless said:

    - per student: its speed-up over the RoBERTa-Large shape at that model's best setting (batch size and
      threads), both workloads: >= 2000x for the 1B student, >= 1000x for the others;
    - the 1B student >= 0.5x fastText on sentences (same batch size and threads);
    - the demo student >= 1.0x fastText, 1 thread, both workloads;
    - the 1B student's whole time <= 1.5x its pooling-only time, on reviews (compiled students);
    - the demo student's in-process batch-1 latency p50 <= 50 microseconds, sentences;
    - the gather >= 50% of the copy bandwidth (numpy-path students only; ``gather_shares`` maps
      "<student> <workload> ..." to gather bandwidth / copy bandwidth).
    """
    goals: list[Goal] = []
    for student in students or ["student"]:
        target = GOAL_PAPER_SPEEDUP_OVER_LARGE if student == paper_student else GOAL_SPEEDUP_OVER_LARGE
        ups = [u for u in speedups_over_best(rows, [student], large) if u.batch_size == batch_size]
        goals.append(_verdict(
            f"{student} >= {target:,.0f}x the RoBERTa-Large shape at its best setting (both workloads, "
            f"student batch {batch_size})",
            [(f"vs {u.baseline} {u.baseline_cell}, {u.workload}, {u.threads} thr", u.ratio) for u in ups],
            target, "x", "the RoBERTa-Large shape or the student was not measured",
        ))
    values: list[tuple[str, float]] = []
    if paper_student is not None and fasttext is not None:
        values = [(f"{u.workload}, {u.threads} thr", u.ratio) for u in speedups(rows, [paper_student], [fasttext])
                  if u.batch_size == batch_size and u.workload == "sentences"]
    goals.append(_verdict(
        f"paper-scale student >= {GOAL_FASTTEXT_RATIO}x fastText on sentences (batch {batch_size})",
        values, GOAL_FASTTEXT_RATIO, "", "the paper-scale student or fastText was not measured",
    ))
    values = []
    if demo_student is not None and fasttext is not None:
        values = [(f"{u.workload}, {u.threads} thr", u.ratio) for u in speedups(rows, [demo_student], [fasttext])
                  if u.batch_size == batch_size and u.threads == 1]
    goals.append(_verdict(
        f"demo student >= {GOAL_DEMO_FASTTEXT_RATIO}x fastText (both workloads, batch {batch_size}, 1 thread)",
        values, GOAL_DEMO_FASTTEXT_RATIO, "", "the demo student or fastText was not measured",
    ))
    values = [(f"{r['workload']} b{r['batch_size']} t{r['threads']}",
               float(r["pool_only_samples_per_s"]) / float(r["samples_per_s"]))
              for r in rows if r["system"] == paper_student and r.get("pool_only_samples_per_s")
              and r["workload"] == "reviews" and int(r["batch_size"]) == batch_size]
    goals.append(_verdict(
        f"paper-scale student's text -> probabilities time <= {GOAL_WHOLE_OVER_POOL}x its pooling-only time "
        f"(reviews, batch {batch_size})",
        values, GOAL_WHOLE_OVER_POOL, "x", "the compiled paper-scale student was not measured", at_most=True,
    ))
    values = [(f"{r['workload']} t{r['threads']}", float(r["latency_p50_us"])) for r in rows
              if r["system"] == demo_student and int(r["batch_size"]) == 1 and r["workload"] == "sentences"
              and r.get("latency_p50_us") is not None]
    goals.append(_verdict(
        f"demo student's in-process batch-1 latency p50 <= {GOAL_DEMO_LATENCY_US:.0f} us (sentences)",
        values, GOAL_DEMO_LATENCY_US, " us", "the demo student was not measured at batch 1", at_most=True,
    ))
    shares = [(k, v) for k, v in gather_shares.items() if "review" in k]
    if paper_student is not None:
        shares = [(k, v) for k, v in shares if k.startswith(paper_student)] or shares
    goals.append(_verdict(
        "gather >= 50% of memory copy bandwidth on full reviews (numpy-path students)",
        shares, GOAL_GATHER_SHARE, "", "no numpy-path student gather was measured on full reviews",
    ))
    return goals


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values``, linear between order statistics (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# --- report rendering ---------------------------------------------------------------------------------


def fmt_rate(value: float) -> str:
    """Samples/s with sensible precision: 0.72, 21.4, 1,234."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def throughput_table(rows: Sequence[dict[str, Any]], systems: Sequence[str], workload: str) -> str:
    """Markdown: one line per system, one column per (batch size, threads) cell."""
    cells = sorted({(int(r["batch_size"]), int(r["threads"])) for r in rows if r["workload"] == workload})
    by = index_rows(rows)
    head = "| system | " + " | ".join(f"b{b} t{t}" for b, t in cells) + " |"
    lines = [head, "|---" * (len(cells) + 1) + "|"]
    for system in systems:
        values = []
        for b, t in cells:
            row = by.get((workload, system, b, t))
            values.append(fmt_rate(float(row["samples_per_s"])) if row else "-")
        if any(v != "-" for v in values):
            lines.append(f"| {system} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def speedup_table(ups: Sequence[Speedup]) -> str:
    lines = ["| workload | batch | threads | student | over | speed-up |", "|---|---|---|---|---|---|"]
    for u in ups:
        ratio = f"{u.ratio:,.0f}" if u.ratio >= 100 else f"{u.ratio:.1f}" if u.ratio >= 10 else f"{u.ratio:.2f}"
        over = f"{u.baseline} (best: {u.baseline_cell})" if u.baseline_cell else u.baseline
        lines.append(f"| {u.workload} | {u.batch_size} | {u.threads} | {u.student} | {over} | {ratio}x |")
    return "\n".join(lines)


def goals_table(goals: Sequence[Goal]) -> str:
    lines = ["| goal | met | detail |", "|---|---|---|"]
    for g in goals:
        mark = "not measured" if g.met is None else ("yes" if g.met else "**no**")
        lines.append(f"| {g.name} | {mark} | {g.detail} |")
    return "\n".join(lines)
