"""Labeling throughput of engine = "ray" with 1 and 2 workers on this machine, beside the local step.

    sd scale-out-bench                      # defaults below
    sd scale-out-bench --texts 2000 --shard-size 100 --workers 1 2 --repeat 2

The corpus is the first ``--texts`` lines of the 1,500 full MR reviews (DESIGN.md section 5), written
as a bench run's ``data/corpus.txt``; the teacher is an exported teacher folder (default
``models/mr-demo-teacher``, the MiniLM-L6 teacher of configs/mr-demo.toml). Each Ray measurement gets
a fresh local cluster (training/scale/local_cluster.py) of one 1-CPU node per worker, so a worker is a
teacher actor with one onnxruntime thread; the local rows run the same teacher in this process with 1
and 2 threads. Every measurement labels the whole corpus from an empty labels folder and reports:
- step s / step texts/s: the whole step, start-up included (connecting, shipping the teacher, actors
  loading it);
- labeling texts/s: from the first ready actor to the last shard written (Ray rows only);
- per worker texts/s: texts over the time each actor spent inside the teacher.
Writes ``--out`` (default reports/scale-out.md) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sdcore.machine import cpu_model, shown_path
from training.config import LabelingConfig, RayConfig, RunConfig, TeacherConfig
from training.data.task_data import mr_review_lines
from training.scale.labeling import label_corpus_ray
from training.scale.local_cluster import LocalCluster
from training.stages.label_shards import LABELS_DIR
from training.stages.labeling import label_corpus
from training.stages.run_folder import DONE

REPO = Path(__file__).resolve().parents[2]


def bench_config(root: Path, teacher_dir: Path, texts: list[str], shard_size: int) -> RunConfig:
    """A run folder holding only what the label step reads: data/corpus.txt and data/labels.json."""
    manifest = json.loads((teacher_dir / "manifest.json").read_text())
    if not teacher_dir.name.endswith("-teacher"):
        raise SystemExit(f"{teacher_dir}: an exported teacher folder is named <run name>-teacher")
    data = root / "run" / "data"
    data.mkdir(parents=True)
    (data / "corpus.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    (data / "labels.json").write_text(json.dumps(manifest["labels"]), encoding="utf-8")
    exported = manifest.get("config", {}).get("labeling", {})
    max_length = int(manifest.get("config", {}).get("teacher", {}).get("max_length", manifest["max_length"]))
    return RunConfig(
        name=teacher_dir.name.removesuffix("-teacher"),
        workdir=str(root / "run"),
        models_dir=str(teacher_dir.parent),
        labeling=LabelingConfig(
            batch_size=int(exported.get("batch_size", 64)),
            shard_size=shard_size,
            backend="onnx",
        ),
        teacher=TeacherConfig(max_length=max_length),  # must match the export
    )


def measure_local(config: RunConfig, threads: int) -> dict[str, Any]:
    shutil.rmtree(config.run_dir / LABELS_DIR, ignore_errors=True)
    local = config.model_copy(update=dict(teacher=config.teacher.model_copy(update=dict(threads=threads))))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    label_corpus(local)
    seconds = time.perf_counter() - started
    done = json.loads((config.run_dir / LABELS_DIR / DONE).read_text())
    return {"engine": "local", "workers": 1, "threads": threads, "step_s": seconds,
            "step_rate": done["texts"] / seconds, "labeling_rate": None, "worker_rates": [], "load1": load}


def measure_ray(config: RunConfig, workers: int) -> dict[str, Any]:
    shutil.rmtree(config.run_dir / LABELS_DIR, ignore_errors=True)
    with LocalCluster(nodes=workers, cpus_per_node=1, object_store_mb=300) as cluster:
        on_ray = config.model_copy(update=dict(engine="ray", ray=RayConfig(address=cluster.address)))
        load = os.getloadavg()[0]
        started = time.perf_counter()
        label_corpus_ray(on_ray)
        seconds = time.perf_counter() - started
    done = json.loads((config.run_dir / LABELS_DIR / DONE).read_text())
    summary = done["ray"]
    rates = [w["texts_per_s"] for w in summary["workers"] if w["texts_per_s"]]
    return {"engine": "ray", "workers": workers, "threads": 1, "step_s": seconds,
            "step_rate": done["texts"] / seconds, "labeling_rate": summary["labeling_texts_per_s"],
            "worker_rates": rates, "load1": load}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return statistics.median(values) if values else None


def render(rows: list[dict[str, Any]], args: argparse.Namespace, texts: int, teacher: str, measured_at: str,
           command: str) -> str:
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["engine"], row["workers"], row["threads"]), []).append(row)
    table = [
        "| engine | workers | threads each | step s | step texts/s | labeling texts/s | labeling texts/s, each run "
        "| per worker texts/s, each run | load (1 min), each run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians: dict[tuple[str, int, int], float | None] = {}
    for key, group in groups.items():
        medians[key] = _median(group, "labeling_rate") if key[0] == "ray" else _median(group, "step_rate")
        rate_key = "labeling_rate" if key[0] == "ray" else "step_rate"
        each_run = ", ".join(f"{g[rate_key]:.0f}" for g in group if g[rate_key] is not None)
        per_worker = "; ".join("+".join(f"{r:.0f}" for r in g["worker_rates"]) for g in group if g["worker_rates"])
        per_worker = per_worker or "-"
        loads = ", ".join(f"{g['load1']:.1f}" for g in group)
        table.append(f"| {key[0]} | {key[1]} | {key[2]} | {_fmt(_median(group, 'step_s'))} | "
                     f"{_fmt(_median(group, 'step_rate'))} | {_fmt(_median(group, 'labeling_rate'))} | "
                     f"{each_run} | {per_worker} | {loads} |")
    one, two = medians.get(("ray", 1, 1)), medians.get(("ray", 2, 1))
    speedup = f"{two / one:.2f}x" if one and two else "n/a"
    two_runs = groups.get(("ray", 2, 1), [])
    both = sum(1 for r in two_runs if len(r["worker_rates"]) == 2)
    ray_step = _median(groups.get(("ray", 1, 1), []), "step_s")
    local_step = _median(groups.get(("local", 1, 1), []), "step_s")
    overhead = f"{ray_step / local_step:.2f}x" if ray_step and local_step else "n/a"
    # Runs are interleaved, so the i-th 1-worker and 2-worker runs were measured a minute apart.
    pairs = zip(groups.get(("ray", 1, 1), []), groups.get(("ray", 2, 1), []), strict=False)
    per_repeat = ", ".join(f"{b['labeling_rate'] / a['labeling_rate']:.2f}x" for a, b in pairs
                           if a["labeling_rate"] and b["labeling_rate"]) or "n/a"
    return "\n".join([
        "# Scale-out: teacher labeling on Ray, 1 and 2 workers",
        "",
        f"Measured {measured_at} on {os.cpu_count()} CPU cores ({cpu_model()}), "
        f"Python {platform.python_version()}, Ray {_ray_version()}, a machine shared with other jobs "
        "(the load column is the 1-minute load average when each run started).",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Teacher: `{teacher}` (exported ONNX). Corpus: the first {texts} lines of the MR full reviews, "
        f"{args.shard_size} texts a shard. Each row is the median of {args.repeat} run(s), interleaved "
        "(ray 1, ray 2, local 1, local 2, then again); the \"each run\" columns list every run (for a local "
        f"row its step rate). Raw rows: `{args.out.with_suffix('.json').name}`. "
        "A Ray worker is a 1-CPU teacher actor (one onnxruntime thread) on its "
        "own 1-CPU node of a local cluster; the local rows are the ordinary `label` step in one process.",
        "",
        *table,
        "",
        "- step s / step texts/s: the whole step, start-up included (connecting, shipping the teacher, actors "
        "loading it); labeling texts/s: from the first ready actor to the last shard written; per worker: "
        "texts over the seconds each actor spent in the teacher (worker rates of one run joined by +).",
        f"- Labeling rate, 2 Ray workers over 1: {speedup} (medians); repeat by repeat: {per_repeat}. "
        f"2-worker runs in which both workers labeled shards: {both} of {len(two_runs)}.",
        f"- Step time, Ray with 1 worker over the local step with 1 thread: {overhead} (medians; the Ray step "
        "includes connecting, shipping the teacher and starting the actor).",
        f"- This machine has {os.cpu_count()} cores shared with other jobs (load column): 2 workers compete with "
        "each other, with the driver and the raylets, and with every other process here, so a second worker "
        "gains only the CPU time nobody else is using (compare the per-worker rates of 1 and 2 workers). On a "
        "cluster each worker brings its own cores or GPU; that gain is not measured here.",
    ]) + "\n"


def _ray_version() -> str:
    import ray

    return str(ray.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=REPO / "models" / "mr-demo-teacher")
    parser.add_argument("--texts", type=int, default=2000, help="corpus lines to label")
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-local", action="store_true", help="skip the local rows")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "data", help="the MR data cache")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "scale-out.md")
    args = parser.parse_args(argv)
    if not (args.teacher / "manifest.json").is_file():
        parser.error(f"{args.teacher}: no exported teacher (make train, or --teacher DIR)")
    texts = mr_review_lines(args.cache)[: args.texts]
    measured_at = time.strftime("%Y-%m-%d %H:%M %Z")
    command = " ".join(["sd scale-out-bench", *sys.argv[1:]])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scale-out-bench-") as tmp:
        config = bench_config(Path(tmp), args.teacher.resolve(), texts, args.shard_size)
        for _ in range(args.repeat):  # interleaved, so a change in the machine's load hits every row alike
            for workers in args.workers:
                rows.append(measure_ray(config, workers))
                print(rows[-1], flush=True)
            if not args.no_local:
                for threads in (1, 2):
                    rows.append(measure_local(config, threads))
                    print(rows[-1], flush=True)
    report = render(rows, args, len(texts), shown_path(args.teacher), measured_at, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    raw = {"command": command, "measured_at": measured_at, "texts": len(texts), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
