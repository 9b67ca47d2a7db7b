"""reports/bench.{md,json,png} from the results of one ``make bench`` run.

``render_markdown`` is pure (a report dict in, text out) and unit-tested; ``write_chart`` draws
samples/s per system on a log axis, one panel per workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest.bench_core import (
    Goal,
    fmt_rate,
    goals_table,
    speedup_table,
    speedups,
    speedups_over_best,
    throughput_table,
)

GIB = 2**30
MIB = 2**20


def _size(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / GIB:.2f} GiB" if value >= GIB else f"{value / MIB:.1f} MiB"


def memory_table(memory: dict[str, dict[str, Any]]) -> str:
    lines = ["| system | RSS loaded | RSS end | peak RSS | table | rows gathered | table pages touched | "
             "mapped (smaps Rss) | in page cache (mincore) |", "|---" * 9 + "|"]
    for system, m in memory.items():
        has_table = "table_bytes" in m
        rows = f"{m['rows_gathered']:,} of {m['table_shape'][0]:,}" if has_table else ""
        lines.append(
            f"| {system} | {_size(m.get('rss_bytes_loaded'))} | {_size(m.get('rss_bytes_end'))} | "
            f"{_size(m.get('peak_rss_bytes'))} | "
            + (f"{_size(m['table_bytes'])} ({m['table_shape'][0]:,} x {m['table_shape'][1]} {m['table_dtype']}) | "
               f"{rows} | {_size(m['touched_bytes'])} | {_size(m['mapped_rss_bytes'])} | "
               f"{_size(m['page_cache_resident_bytes'])} |" if has_table else "| | | | |")
        )
    return "\n".join(lines)


def gather_table(rows: Sequence[dict[str, Any]], copy_bytes_per_s: float) -> str:
    lines = ["| student | workload | batch | threads | featurize share | gather share | gathered bytes/sample | "
             "gather GB/s | of copy bandwidth | numpy take, same rows GB/s | gather / take |", "|---" * 11 + "|"]
    for r in rows:
        if r.get("gather_gb_per_s") is None:
            continue
        share = r["gather_gb_per_s"] * 1e9 / copy_bytes_per_s if copy_bytes_per_s else 0.0
        take = r.get("take_gb_per_s")
        lines.append(
            f"| {r['system']} | {r['workload']} | {r['batch_size']} | {r['threads']} | "
            f"{r['featurize_share']:.0%} | {r['gather_share']:.0%} | {r['gather_bytes_per_sample']:,} | "
            f"{r['gather_gb_per_s']:.2f} | {share:.0%} | "
            + (f"{take:.2f} | {r['gather_gb_per_s'] / take:.0%} |" if take else "- | - |")
        )
    return "\n".join(lines)


def latency_table(rows: Sequence[dict[str, Any]]) -> str:
    """Batch-1 cells: each call timed on its own, in the system's process (no HTTP)."""
    lines = ["| system | workload | threads | calls | p50 us | p99 us | mean us (1 / throughput) |", "|---" * 7 + "|"]
    for r in rows:
        if int(r["batch_size"]) != 1 or r.get("latency_p50_us") is None:
            continue
        lines.append(f"| {r['system']} | {r['workload']} | {r['threads']} | {r['latency_calls']:,} | "
                     f"{r['latency_p50_us']:,.1f} | {r['latency_p99_us']:,.1f} | {1e6 / r['samples_per_s']:,.1f} |")
    return "\n".join(lines)


def pool_only_table(rows: Sequence[dict[str, Any]]) -> str:
    """Compiled students: the whole text -> probabilities rate against pooling alone on the same texts."""
    lines = ["| student | workload | batch | threads | samples/s | pooling only, samples/s | whole / pooling time | "
             "rows/sample | pooling GB/s |", "|---" * 9 + "|"]
    for r in rows:
        if not r.get("pool_only_samples_per_s"):
            continue
        lines.append(f"| {r['system']} | {r['workload']} | {r['batch_size']} | {r['threads']} | "
                     f"{fmt_rate(float(r['samples_per_s']))} | {fmt_rate(float(r['pool_only_samples_per_s']))} | "
                     f"{float(r['pool_only_samples_per_s']) / float(r['samples_per_s']):.2f}x | "
                     f"{r['rows_per_sample']:,} | {r['pool_only_gb_per_s']:.2f} |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any], goals: Sequence[Goal]) -> str:
    rows = report["rows"]
    systems = list(report["systems"])
    students = [s for s in systems if report["systems"][s]["kind"] == "student"]
    others = [s for s in systems if s not in students]
    workloads = list(report["workloads"])
    out = [
        "# Benchmark: text in -> probabilities out",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}  ",
        f"Date: {report['date']}  ",
        f"Load average (1, 5, 15 min) at start {report['loadavg_start']}, at end {report['loadavg_end']}; "
        f"{report['load_note']}",
        "",
        "Every figure includes tokenization / featurization: a system gets raw texts and returns label "
        "probabilities. Each cell is warmed up, then timed as several passes over the same texts; the "
        "median pass is reported (slow cells: fewer texts, one pass; see `repeats` and `samples` in "
        "bench.json). Threads = intra-op threads of onnxruntime / torch, and the compiled student's threads "
        "over the texts of a batch (it splits only batches of more than 4,096 characters a thread); a "
        "numpy-path student's featurizer is single-threaded numpy (its float16 gather and its head run in "
        "onnxruntime with the threads), and fastText's predict is single-threaded whatever the setting. "
        "Teachers are timed at batch 1, 8 and 32, and speed-ups over them are taken against their best cell.",
        "",
        "## Workloads",
        "",
        "| workload | texts | mean words |",
        "|---|---|---|",
        *[f"| {w} | {v['texts']:,} | {v['mean_words']:.1f} |" for w, v in report["workloads"].items()],
        "",
        "## Systems",
        "",
        "| system | what |",
        "|---|---|",
        *[f"| {s} | {v['description']} |" for s, v in report["systems"].items()],
        "",
        "## Goals",
        "",
        goals_table(goals),
        "",
    ]
    for w in workloads:
        out += [f"## Throughput, {w} (samples/s)", "", throughput_table(rows, systems, w), ""]
    baselines = [s for s in others if report["systems"][s]["kind"] != "fasttext"]
    ups = speedups_over_best(rows, students, baselines)
    out += ["## Student speed-up over each teacher at the teacher's best setting", "",
            "Each student cell over the teacher's fastest cell of the same workload, whatever its batch size "
            "(1, 8, 32) and threads (named in the table).", "", speedup_table(ups), ""]
    fasttext = [s for s in others if report["systems"][s]["kind"] == "fasttext"]
    if fasttext:
        out += ["## Student throughput relative to fastText (1.0 = as fast)", "",
                speedup_table(speedups(rows, students, fasttext)).replace("speed-up", "ratio"), ""]
    out += ["## Batch-1 latency, in-process (per call)", "",
            "Every batch-1 call of the timed passes, timed on its own: text in -> probabilities out, no HTTP.", "",
            latency_table(rows), ""]
    if any(r.get("pool_only_samples_per_s") for r in rows):
        out += ["## Compiled student: whole time against pooling alone", "",
                "After each cell, the same texts' rows are found first (untimed) and the kernel's pooling step "
                "alone (`NgramKernel.pool_rows`: the gather, the float16 conversion and the mean) is timed on "
                "them, best of 3 passes. Whole / pooling = how much tokenizing, hashing, lookup, head and "
                "Python add to the gather.", "", pool_only_table(rows), ""]
    copy = float(report.get("copy_bytes_per_s") or 0.0)
    out += [
        "## Gather bandwidth (numpy-path students)",
        "",
        f"Memory copy bandwidth of this machine, same run (numpy copy of a 256 MiB array, bytes read per "
        f"second, median of 5): {copy / 1e9:.2f} GB/s. Gather bandwidth = bytes of the distinct rows a "
        "batch gathers (in the table's dtype) / time inside `EmbeddingTable.gather_into` (onnxruntime's "
        "Gather + Cast to float32, on the runtime's threads). Numpy take, same rows = the same row chunks, "
        "in the same order, read again after the cell by numpy's take on one thread, float16 out with no "
        "conversion, best of 3 passes: what this machine gives for those scattered reads alone, which a "
        "sequential copy does not show (the gather also converts and writes twice the bytes).",
        "",
        gather_table(rows, copy),
        "",
        "## Memory",
        "",
        "RSS of each system's own process (loaded = after loading, end = after all its cells). For a "
        "student: the table's size on disk; pages the gathers touched (exact, from the rows gathered and the "
        "shard layout); the shard mappings' Rss in /proc/self/smaps (kernel fault-around maps 64 KiB around "
        "each read fault, so it exceeds the touched set); and the shards' pages in the page cache (mincore).",
        "",
        memory_table(report["memory"]),
        "",
    ]
    for note in report.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out).rstrip() + "\n"


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    systems = list(report["systems"])
    workloads = list(report["workloads"])
    cells = sorted({(int(r["batch_size"]), int(r["threads"])) for r in rows})
    fig, axes = plt.subplots(1, len(workloads), figsize=(7 * len(workloads), 0.55 * len(systems) * len(cells) + 2),
                             squeeze=False)
    by = {(r["workload"], r["system"], int(r["batch_size"]), int(r["threads"])): r for r in rows}
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for ax, workload in zip(axes[0], workloads, strict=True):
        labels, positions = [], []
        y = 0.0
        for system in systems:
            for i, (b, t) in enumerate(cells):
                row = by.get((workload, system, b, t))
                if row is None:
                    continue
                value = float(row["samples_per_s"])
                ax.barh(y, value, color=colors[i % len(colors)], label=f"batch {b}, {t} thr" if system == systems[0]
                        else None)
                ax.text(value, y, " " + fmt_rate(value), va="center", fontsize=7)
                y += 1
            labels.append(system)
            positions.append(y - len(cells) / 2 - 0.5)
            y += 0.8
        ax.set_xscale("log")
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        ax.set_xlabel("samples/s (log scale), tokenization included")
        ax.set_title(f"{workload} (mean {report['workloads'][workload]['mean_words']:.0f} words)")
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(f"Text in -> probabilities out, {report['machine_short']}, {report['date']}")
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.98))  # leave room for the title above the panels
    fig.savefig(path, dpi=110)
    plt.close(fig)
