"""``make bench``: text in -> probabilities out, for the students, the teachers and the baselines.

    sd bench                    # every system found, full settings
    sd bench --quick            # small budgets, 200 texts a workload
    sd bench --systems student-demo fasttext --threads 1

Systems (each measured in its own fresh process, one after the other, on the same texts):
- ``student-demo``, ``student-paper``: the exported students (``--student-demo``, ``--student-paper``;
  skipped when the folder is missing) as the service runs them: the compiled kernel (sdcore.kernel), then
  the ONNX head;
- ``student-subwords``: the demo student with hashed subword rows for unknown words (featurizer spec v2;
  ``--student-subwords``, trained by ``sd run -c configs/mr-demo-subwords.toml``);
- ``student-demo-int8``, ``student-paper-int8``: the same students re-exported with an int8 table
  (``sd int8-report -c configs/<run>.toml`` writes ``models/<name>-int8``);
- ``student-demo-numpy``, ``student-paper-numpy``: the same folders on the numpy reference path (shared
  featurizer + ``mean_pool``; with the gather probe); ``student-paper-numpy`` only when asked for;
- ``minilm-onnx``: the exported teacher in ``TeacherRuntime``; ``minilm-pytorch``: the fine-tuned teacher
  checkpoint (``runs/mr-demo/teacher/model``) in PyTorch eager mode;
- ``roberta-large-pytorch``, ``roberta-large-onnx``: a RoBERTa-Large-shaped classifier with random
  weights (speed only), built once under ``--cache``;
- ``fasttext``: fastText trained on the MR training split, built once under ``--cache``.

Writes ``<out>.json`` (rows: workload, system, batch_size, threads, samples_per_s, ...), ``<out>.md``
and ``<out>.png``; prints each cell as it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from loadtest.bench_core import check_goals
from loadtest.bench_explain import explain_cost
from loadtest.bench_explain import render as render_explain
from loadtest.bench_loaders import SystemSpec
from loadtest.bench_memory import copy_bandwidth
from loadtest.bench_prepare import load_workloads, prepare_baselines
from loadtest.bench_report import render_markdown, write_chart
from loadtest.bench_systems import TimingSettings, run_system
from sdcore.machine import load_note, loadavg, machine, shown_path

REPO = Path(__file__).resolve().parents[1]

ALL_SYSTEMS = ("student-demo", "student-subwords", "student-paper", "student-demo-int8",
               "student-paper-int8", "student-demo-numpy",
               "student-paper-numpy", "fasttext", "minilm-onnx", "minilm-pytorch", "roberta-large-onnx",
               "roberta-large-pytorch", "fasttext-kd", "model2vec")
# The paper-scale student on the numpy path adds minutes and says what reports/bench.md of 2026-11-24 said.
DEFAULT_SYSTEMS = tuple(s for s in ALL_SYSTEMS if s != "student-paper-numpy")


def _in_child(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh spawned process (its own RSS, its own thread pools)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def system_specs(args: argparse.Namespace, built: dict[str, str]) -> list[SystemSpec]:
    def describe_student(path: Path, backend: str) -> str:
        m = json.loads((path / "manifest.json").read_text())
        how = ("featurize + pool in the compiled kernel (sdcore), head in onnxruntime" if backend == "kernel" else
               "numpy reference path: featurizer in numpy, gather and head in onnxruntime")
        f = m["featurizer"]
        table = (f"{m['vocab_size']:,} n-grams + {f['subword_buckets']:,} subword buckets ({f.get('spec')}, "
                 f"{f['subword_min']}-{f['subword_max']} chars of {f['subword_scope']} words)"
                 if f.get("subword_buckets") else f"{m['vocab_size']:,}")
        return (f"student {m['name']}: {table} x {m['embedding_dim']} {m['shard_dtype']} n-gram table "
                f"(memory-mapped), {m['hidden_dim']}-unit ONNX head; {how}")

    specs: list[SystemSpec] = []
    students = (("student-demo", args.student_demo, "kernel"), ("student-subwords", args.student_subwords, "kernel"),
                ("student-paper", args.student_paper, "kernel"),
                ("student-demo-int8", args.student_demo_int8, "kernel"),
                ("student-paper-int8", args.student_paper_int8, "kernel"),
                ("student-demo-numpy", args.student_demo, "numpy"),
                ("student-paper-numpy", args.student_paper, "numpy"))
    for key, path, backend in students:
        if key in args.systems and (Path(path) / "manifest.json").is_file():
            specs.append(SystemSpec(key, "student", str(path), describe_student(Path(path), backend), backend=backend))
    if "fasttext" in args.systems and "fasttext" in built:
        info = Path(built["fasttext"]).with_suffix(".json")
        extra = json.loads(info.read_text()) if info.is_file() else {}
        specs.append(SystemSpec("fasttext", "fasttext", built["fasttext"],
                                f"fastText 0.9.3 supervised, trained on MR train ({extra.get('params')}, "
                                f"dev acc {extra.get('dev_acc')}); list predict"))
    if "minilm-onnx" in args.systems and (Path(args.teacher) / "manifest.json").is_file():
        specs.append(SystemSpec("minilm-onnx", "teacher-onnx", str(args.teacher),
                                "MiniLM-L6 teacher (22.7M params), exported ONNX in TeacherRuntime, max 512 tokens"))
    if "minilm-pytorch" in args.systems and (Path(args.teacher_checkpoint) / "config.json").is_file():
        specs.append(SystemSpec("minilm-pytorch", "hf-pytorch", str(args.teacher_checkpoint),
                                "MiniLM-L6 teacher checkpoint, PyTorch eager (transformers), max 512 tokens"))
    peers = Path(args.peers)  # sd peers -c configs/mr-demo.toml trains them (reports/peers-mr-demo.md)
    fasttext_kd = peers / "fasttext_kd" / "model" / "model.bin"
    if "fasttext-kd" in args.systems and fasttext_kd.is_file():
        result = peers / "fasttext_kd" / "fasttext_kd.json"
        chosen = json.loads(result.read_text()).get("settings", {}).get("chosen") if result.is_file() else None
        specs.append(SystemSpec("fasttext-kd", "fasttext", str(fasttext_kd),
                                f"fastText 0.9.3 on the teacher's labels over the transfer corpus + MR train "
                                f"({chosen}); list predict"))
    model2vec = peers / "model2vec_kd" / "model"
    if "model2vec" in args.systems and (model2vec / "config.json").is_file():
        specs.append(SystemSpec("model2vec", "model2vec", str(model2vec),
                                "Model2Vec 0.10 distilled from the MiniLM-L6 base, classifier on the teacher's "
                                "labels; its numpy StaticModelPipeline"))
    for key, kind in (("roberta-large-onnx", "teacher-onnx"), ("roberta-large-pytorch", "hf-pytorch")):
        if key in args.systems and key in built:
            engine = "ONNX in TeacherRuntime" if kind == "teacher-onnx" else "PyTorch eager (transformers)"
            specs.append(SystemSpec(key, kind, built[key],  # type: ignore[arg-type]
                                    f"RoBERTa-Large shape (24 x 1024, 355M params), RANDOM weights: speed only; "
                                    f"{engine}, max 512 tokens"))
    return specs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student-demo", type=Path, default=REPO / "models/mr-demo")
    p.add_argument("--student-subwords", type=Path, default=REPO / "models/mr-demo-subwords")
    p.add_argument("--student-paper", type=Path, default=REPO / "models/mr-paper")
    p.add_argument("--student-demo-int8", type=Path, default=REPO / "models/mr-demo-int8")
    p.add_argument("--student-paper-int8", type=Path, default=REPO / "models/mr-paper-int8")
    p.add_argument("--teacher", type=Path, default=REPO / "models/mr-demo-teacher")
    p.add_argument("--teacher-checkpoint", type=Path, default=REPO / "runs/mr-demo/teacher/model")
    p.add_argument("--peers", type=Path, default=REPO / "runs/mr-demo/peers",
                   help="the peers study's folder of the run (sd peers): fasttext-kd and model2vec come from it")
    p.add_argument("--systems", nargs="+", default=list(DEFAULT_SYSTEMS), choices=ALL_SYSTEMS)
    p.add_argument("--workloads", nargs="+", default=["sentences", "reviews"], choices=["sentences", "reviews"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--teacher-batch-sizes", nargs="+", type=int, default=[1, 8, 32],
                   help="batch sizes of the teachers (speed-ups are taken against each teacher's best cell)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeat-s", type=float, default=2.0, help="aim of one timed pass (s)")
    p.add_argument("--cell-s", type=float, default=6.0, help="aim of all passes of one cell (s)")
    p.add_argument("--texts", type=int, default=0, help="keep only this many texts per workload (0 = all)")
    p.add_argument("--quick", action="store_true", help="small budgets and 200 texts: to try the script")
    p.add_argument("--cache", type=Path, default=REPO / ".cache/bench")
    p.add_argument("--data-cache", type=Path, default=REPO / ".cache/data")
    p.add_argument("--out", type=Path, default=REPO / "reports/bench")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat_s, args.cell_s, args.texts = 0.3, 0.9, args.texts or 200
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "sd bench" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(
        sys.argv[1:] if argv is None else argv))
    start_load = loadavg()
    start_note = load_note()
    workloads = {k: v for k, v in load_workloads(args.data_cache, limit=args.texts).items() if k in args.workloads}
    print(f"workloads: {', '.join(f'{k} {len(v)} texts' for k, v in workloads.items())}; load {start_load}")
    built = _in_child(prepare_baselines, list(args.systems), args.cache, args.data_cache)
    specs = system_specs(args, built)
    settings = TimingSettings(tuple(args.batch_sizes), tuple(args.threads), tuple(args.teacher_batch_sizes),
                              args.repeat_s, args.cell_s)
    copies = [copy_bandwidth()]
    rows: list[dict[str, Any]] = []
    memory: dict[str, dict[str, Any]] = {}
    facts: dict[str, dict[str, Any]] = {}
    for spec in specs:
        print(f"{spec.key}: {spec.description}", flush=True)
        result = _in_child(run_system, spec, workloads, settings)
        rows += result["rows"]
        memory[spec.key] = result["memory"]
        facts[spec.key] = result["facts"]
        copies += [v for k, v in result["facts"].items() if k.startswith("copy_bytes_per_s")]
    copies.append(copy_bandwidth())
    copy = statistics.median(copies)

    students = [s.key for s in specs if s.kind == "student"]
    shares = {f"{r['system']} {r['workload']} b{r['batch_size']} t{r['threads']}": r["gather_gb_per_s"] * 1e9 / copy
              for r in rows if r.get("gather_gb_per_s") and r["batch_size"] == 32}
    paper = "student-paper" if "student-paper" in students else None
    demo = "student-demo" if "student-demo" in students else None
    goals = check_goals(rows, students, paper, [s.key for s in specs if s.key.startswith("roberta-large")],
                        "fasttext" if any(s.key == "fasttext" for s in specs) else None, shares, demo_student=demo)
    end_load = loadavg()
    notes = []
    missing = sorted(set(args.systems) - {s.key for s in specs})
    if missing:
        notes.append(f"Not measured (model not found): {', '.join(missing)}.")
    report: dict[str, Any] = {
        "command": command,
        "machine": machine(),
        "machine_short": f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_start": start_load,
        "loadavg_end": end_load,
        "load_note": f"at start, {start_note}",
        "settings": vars(settings) | {"texts_limit": args.texts},
        "workloads": {k: {"texts": len(v), "mean_words": statistics.mean(len(t.split()) for t in v)}
                      for k, v in workloads.items()},
        "systems": {s.key: {"kind": s.kind, "path": shown_path(s.path), "description": s.description}
                    for s in specs},
        "copy_bytes_per_s": copy,
        "copy_bytes_per_s_all": copies,
        "rows": rows,
        "memory": memory,
        "facts": facts,
        "goals": [vars(g) for g in goals],
        "notes": notes,
    }
    markdown = render_markdown(report, goals)
    if demo is not None:  # what an explanation costs on the demo student (loadtest/bench_explain.py)
        explain_workloads = {k: v[:256] for k, v in workloads.items()}
        report["explain"] = _in_child(explain_cost, Path(args.student_demo), explain_workloads, (1, 32), 1,
                                      args.repeat_s)
        markdown += "\n" + render_explain(report["explain"], args.student_demo.name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(markdown, encoding="utf-8")
    write_chart(report, args.out.with_suffix(".png"))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
