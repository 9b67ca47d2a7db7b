"""What an explanation costs per text, beside a plain prediction (``/v1/explain`` vs ``/v1/classify``).

    sd bench-explain --student models/mr-demo --texts 256     # the probe alone: reports/bench-explain.*

``sd bench`` runs the same probe on the demo student (in its own process) and adds its table to
reports/bench.md. Per workload and batch size: ms per text of ``StudentRuntime.predict`` (kernel pooling +
head) and of ``service.runtimes.explain.explain`` (its own featurization with token offsets, one gather of each
text's distinct rows, one head call over the text and every leave-one-out vector, top 10 shaped), on one
thread, the median of several passes over the same texts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtest.bench_prepare import load_workloads
from sdcore.machine import loadavg, machine
from service.runtimes.contract import RuntimeOptions
from service.runtimes.explain import explain, text_ngrams
from service.runtimes.student import StudentRuntime

REPO = Path(__file__).resolve().parents[1]


def per_text_ms(work: Callable[[list[str]], object], texts: list[str], batch_size: int, repeat_s: float,
                passes: int = 3) -> float:
    """Median over ``passes`` (at least; more while under ``repeat_s``) of ms per text, batches of ``batch_size``."""
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    work(batches[0])  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < passes or time.perf_counter() - started < repeat_s:
        t0 = time.perf_counter()
        for batch in batches:
            work(batch)
        times.append((time.perf_counter() - t0) * 1e3 / len(texts))
    return statistics.median(times)


def explain_cost(student: Path, workloads: dict[str, list[str]], batch_sizes: Sequence[int] = (1, 32),
                 threads: int = 1, repeat_s: float = 2.0, top_n: int = 10) -> list[dict[str, Any]]:
    """One row per (workload, batch size): predict and explain ms per text, their ratio, n-grams per text."""
    runtime = StudentRuntime.load(student, RuntimeOptions(threads=threads, verify_checksums=False))
    rows = []
    for name, texts in workloads.items():
        distinct = statistics.mean(text_ngrams(t, runtime.featurizer).rows.size for t in texts)
        for batch_size in batch_sizes:
            predict_ms = per_text_ms(runtime.predict, texts, batch_size, repeat_s)
            explain_ms = per_text_ms(lambda b: explain(runtime, b, top_n), texts, batch_size, repeat_s)
            rows.append({
                "workload": name, "texts": len(texts), "batch_size": batch_size, "threads": threads,
                "distinct_ngrams_per_text": distinct, "predict_ms_per_text": predict_ms,
                "explain_ms_per_text": explain_ms, "explain_over_predict": explain_ms / predict_ms,
            })
    return rows


def render(rows: list[dict[str, Any]], student: str) -> str:
    lines = [
        f"## Explanation cost ({student})",
        "",
        "`POST /v1/explain` against `/v1/classify`, in the runtime (no HTTP): ms per text, one thread, median "
        "pass. An explanation leaves each distinct in-vocabulary n-gram out once, all in one head call.",
        "",
        "| workload | batch | distinct n-grams / text | predict ms/text | explain ms/text | explain / predict |",
        "|---|---|---|---|---|---|",
        *[f"| {r['workload']} | {r['batch_size']} | {r['distinct_ngrams_per_text']:.1f} | "
          f"{r['predict_ms_per_text']:.3f} | {r['explain_ms_per_text']:.3f} | {r['explain_over_predict']:.1f}x |"
          for r in rows],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", type=Path, default=REPO / "models/mr-demo")
    p.add_argument("--workloads", nargs="+", default=["sentences", "reviews"], choices=["sentences", "reviews"])
    p.add_argument("--texts", type=int, default=256, help="texts per workload")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat-s", type=float, default=2.0)
    p.add_argument("--data-cache", type=Path, default=REPO / ".cache/data")
    p.add_argument("--out", type=Path, default=REPO / "reports/bench-explain")
    args = p.parse_args(argv)
    workloads = {k: v for k, v in load_workloads(args.data_cache, limit=args.texts).items() if k in args.workloads}
    load_start = loadavg()
    rows = explain_cost(args.student, workloads, args.batch_sizes, args.threads, args.repeat_s)
    command = "sd bench-explain " + " ".join(sys.argv[1:] if argv is None else argv)
    header = (f"# Explanation cost\n\nCommand: `{command}`  \nMachine: {machine()}  \n"
              f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}  \nLoad average at start {load_start}, "
              f"at end {loadavg()}\n\n")
    markdown = header + render(rows, args.student.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n",
                                             encoding="utf-8")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
