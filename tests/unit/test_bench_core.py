"""The benchmark's pure parts: timing plans, medians, speed-ups, goals, memory arithmetic, the report."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.bench_core import (
    Plan,
    best_rows,
    check_goals,
    fmt_rate,
    percentile,
    plan_cell,
    samples_per_second,
    speedups,
    speedups_over_best,
    spread,
    throughput_table,
)
from loadtest.bench_memory import mapped_rss, touched_pages
from loadtest.bench_report import gather_table, latency_table, pool_only_table, render_markdown


def row(system: str, workload: str, batch: int, threads: int, sps: float, **extra: object) -> dict[str, object]:
    return {"system": system, "workload": workload, "batch_size": batch, "threads": threads,
            "samples_per_s": sps, **extra}


def test_plan_fast_system_gets_several_long_passes() -> None:
    plan = plan_cell(1e-4, 32, 4010, repeat_s=2.0, cell_s=6.0)
    assert plan == Plan(samples=4000, repeats=5)  # the whole pool in whole batches; 5 x 0.4 s fits


def test_plan_slow_system_gets_one_batch_once() -> None:
    plan = plan_cell(1.4, 32, 1500, repeat_s=2.0, cell_s=6.0)  # RoBERTa-Large on full reviews
    assert plan == Plan(samples=32, repeats=1)


def test_plan_medium_system_keeps_three_repeats() -> None:
    plan = plan_cell(0.9, 1, 1500, repeat_s=2.0, cell_s=6.0)  # 3 passes of 3 samples = 8.1 s <= 9 s
    assert plan == Plan(samples=3, repeats=3)


def test_plan_rejects_empty_pool() -> None:
    with pytest.raises(ValueError):
        plan_cell(1.0, 32, 0, 1.0, 1.0)


def test_median_throughput_and_spread() -> None:
    assert samples_per_second(100, [1.0, 2.0, 10.0]) == 50.0
    assert spread([1.0, 2.0, 3.0]) == 1.0
    assert spread([1.0]) == 0.0
    with pytest.raises(ValueError):
        samples_per_second(1, [])


def test_speedups_pair_matching_cells_only() -> None:
    rows = [row("student", "reviews", 32, 1, 1000.0), row("large", "reviews", 32, 1, 0.5),
            row("large", "reviews", 1, 1, 0.4), row("student", "sentences", 32, 2, 5000.0)]
    ups = speedups(rows, ["student"], ["large"])
    assert [(u.workload, u.batch_size, u.threads, u.ratio) for u in ups] == [("reviews", 32, 1, 2000.0)]


def test_speedups_over_best_take_each_teachers_fastest_cell() -> None:
    rows = [row("student", "reviews", 32, 1, 1000.0), row("student", "reviews", 1, 1, 500.0),
            row("large", "reviews", 32, 1, 0.5), row("large", "reviews", 1, 2, 0.8), row("large", "reviews", 8, 1, 0.6),
            row("large", "sentences", 1, 1, 9.0)]
    assert best_rows(rows)[("reviews", "large")]["batch_size"] == 1
    ups = speedups_over_best(rows, ["student"], ["large"])
    assert [(u.batch_size, u.threads, u.ratio, u.baseline_cell) for u in ups] == [
        (1, 1, 625.0, "b1 t2"), (32, 1, 1250.0, "b1 t2")]  # against b1 t2 (0.8/s), not the same cell


def test_goals() -> None:
    rows = [row("student-paper", w, 32, t, sps, **({"pool_only_samples_per_s": 1200.0} if w == "reviews" else {}))
            for w, sps in (("reviews", 700.0), ("sentences", 30000.0)) for t in (1, 2)]
    rows += [row("roberta", "reviews", b, t, 0.3 if b == 8 else 0.2) for b in (1, 8, 32) for t in (1, 2)]
    rows += [row("roberta", "sentences", b, t, 10.0 if b == 1 else 5.0) for b in (1, 8, 32) for t in (1, 2)]
    rows += [row("fasttext", w, b, t, 1200.0) for w in ("reviews", "sentences") for t in (1, 2) for b in (1, 32)]
    rows += [row("student-demo", w, 32, t, 1300.0 if w == "reviews" else 1100.0) for w in ("reviews", "sentences")
             for t in (1, 2)]
    rows += [row("student-demo", "sentences", 1, t, 20000.0, latency_p50_us=40.0 + t, latency_p99_us=90.0)
             for t in (1, 2)]
    shares = {"student-paper reviews b32 t1": 0.4, "student-paper sentences b32 t1": 0.1}
    paper_large, demo_large, paper_ft, demo_ft, whole, latency, gather = check_goals(
        rows, ["student-paper", "student-demo"], "student-paper", ["roberta"], "fasttext", shares,
        demo_student="student-demo")
    assert paper_large.met is True and paper_large.worst == pytest.approx(700 / 0.3)  # vs b8, the best on reviews
    assert "2,000x" in paper_large.name and "1,000x" in demo_large.name
    assert demo_large.met is False and demo_large.worst == pytest.approx(110.0)  # 1,100 / 10 on sentences
    assert paper_ft.met is True and paper_ft.worst == pytest.approx(30000 / 1200)  # sentences only
    assert demo_ft.met is False and demo_ft.worst == pytest.approx(1100 / 1200) and len(demo_ft.cells) == 2  # 1 thread
    assert whole.met is False and whole.worst == pytest.approx(1200 / 700)  # 1.71x > 1.5x
    assert latency.met is True and latency.worst == pytest.approx(42.0)
    assert gather.met is False and gather.cells == ["student-paper reviews b32 t1: 0.40"]  # reviews only


def test_goals_not_measured_without_baselines() -> None:
    goals = check_goals([row("s", "reviews", 32, 1, 1.0)], ["s"], None, [], None, {})
    assert [g.met for g in goals] == [None] * 6


def test_percentile_is_numpys_linear_one() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0, 7.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_and_pool_only_tables() -> None:
    rows = [row("s", "sentences", 1, 1, 25000.0, latency_p50_us=38.5, latency_p99_us=71.25, latency_calls=4000),
            row("s", "sentences", 32, 1, 50000.0, pool_only_samples_per_s=100000.0, rows_per_sample=40.5,
                pool_only_gb_per_s=2.5)]
    assert "| s | sentences | 1 | 4,000 | 38.5 | 71.2 | 40.0 |" in latency_table(rows)
    assert "| s | sentences | 32 | 1 | 50,000 | 100,000 | 2.00x | 40.5 | 2.50 |" in pool_only_table(rows)


def test_fmt_rate_and_table() -> None:
    assert [fmt_rate(v) for v in (0.724, 21.44, 1234.5)] == ["0.72", "21.4", "1,234"]
    rows = [row("a", "reviews", 1, 1, 3.0), row("a", "reviews", 32, 2, 4000.0)]
    table = throughput_table(rows, ["a", "b"], "reviews")
    assert table.splitlines()[0] == "| system | b1 t1 | b32 t2 |"
    assert table.splitlines()[2] == "| a | 3.00 | 4,000 |" and len(table.splitlines()) == 3  # b is not listed


def test_touched_pages_counts_pages_spanned_by_rows() -> None:
    # rows of 2,000 bytes after a 128-byte header: row 0 = bytes 128..2127 (page 0), row 2 = 4128..6127
    # (page 1), row 3 = 6128..8127 (pages 1), row 4 = 8128..10127 (pages 1 and 2).
    assert touched_pages(np.array([0], dtype=np.int64), 2000, 128) == 1
    assert touched_pages(np.array([2, 3], dtype=np.int64), 2000, 128) == 1
    assert touched_pages(np.array([4, 4, 0], dtype=np.int64), 2000, 128) == 3
    assert touched_pages(np.array([], dtype=np.int64), 2000, 128) == 0


def test_mapped_rss_sums_the_files_mappings() -> None:
    smaps = (
        "7f00-7f10 r--s 00000000 fd:01 12 /models/a/embeddings/shard-00000.npy\n"
        "Size:                 64 kB\nRss:                  16 kB\n"
        "7f10-7f20 r--s 00000000 fd:01 13 /models/a/embeddings/shard-00001.npy\n"
        "Rss:                   8 kB\n"
        "7f20-7f30 rw-p 00000000 00:00 0 \n"
        "Rss:                 100 kB\n"
    )
    assert mapped_rss(["/models/a/embeddings/shard-00000.npy"], smaps) == 16 * 1024
    assert mapped_rss(["/models/a/embeddings/shard-00000.npy", "/models/a/embeddings/shard-00001.npy"], smaps) \
        == 24 * 1024


def test_report_renders_every_section() -> None:
    rows = [row("student-demo", "reviews", 32, 1, 900.0, featurize_share=0.6, gather_share=0.2,
                gather_bytes_per_sample=300_000, gather_gb_per_s=1.5, take_gb_per_s=3.0),
            row("roberta", "reviews", 32, 1, 0.5)]
    report = {
        "command": "python scripts/bench.py", "machine": "m", "date": "d", "loadavg_start": [1.0, 1.0, 1.0],
        "loadavg_end": [1.0, 1.0, 1.0], "load_note": "quiet.", "copy_bytes_per_s": 6e9,
        "workloads": {"reviews": {"texts": 10, "mean_words": 745.0}},
        "systems": {"student-demo": {"kind": "student", "description": "the student"},
                    "roberta": {"kind": "hf-pytorch", "description": "random weights"}},
        "rows": rows,
        "memory": {"student-demo": {"rss_bytes_loaded": 2**30, "rss_bytes_end": 2**30, "peak_rss_bytes": 2**30,
                                    "table_bytes": 2**29, "table_shape": [200000, 256], "table_dtype": "float16",
                                    "rows_gathered": 1000, "touched_bytes": 4096 * 100, "mapped_rss_bytes": 2**20,
                                    "page_cache_resident_bytes": None}},
        "notes": ["n"],
    }
    goals = check_goals(rows, ["student-demo"], None, ["roberta"], None, {"student-demo reviews b32 t1": 0.25})
    text = render_markdown(report, goals)
    for needle in ("## Goals", "## Throughput, reviews",
                   "| reviews | 32 | 1 | student-demo | roberta (best: b32 t1) | 1,800x |",
                   "| 1.50 | 25% | 3.00 | 50% |", "512.0 MiB (200,000 x 256 float16)",
                   "| 0.4 MiB |", "| n/a |", "- n"):
        assert needle in text, needle
    assert "6.00 GB/s" in text
    assert gather_table(rows, 0.0).count("\n") == 2


def test_speedup_goal_is_judged_per_student() -> None:
    rows = [row("demo", w, 32, 1, 5000.0) for w in ("reviews", "sentences")]
    rows += [row("paper", w, 32, 1, 500.0) for w in ("reviews", "sentences")]
    rows += [row("roberta", w, 32, 1, 1.0) for w in ("reviews", "sentences")]
    demo, paper, *_ = check_goals(rows, ["demo", "paper"], "paper", ["roberta"], None, {})
    assert demo.met is True and demo.name.startswith("demo")
    assert paper.met is False and paper.worst == pytest.approx(500.0)

