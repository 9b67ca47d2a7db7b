"""Train and export the paper-scale student (configs/mr-paper.toml) and record what it cost.

Runs ``python -m training run`` as a child process and writes ``reports/paper-scale.json`` and
``reports/paper-scale.md``: parameters, dev/test accuracy, wall seconds of the run, and the peak RSS of
the run (the child's ru_maxrss), with the command, machine and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from sdcore.errors import ProjectError
from sdcore.model_format import load_student_manifest
from training.config import load_config
from training.stages.run_log import RunLog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/mr-paper.toml")
    parser.add_argument("--out", default="reports/paper-scale")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    command = [sys.executable, "-m", "training", "run", "--config", args.config]  # its own process: its own peak RSS
    code = subprocess.run(command).returncode
    if code:
        # A negative code is the signal that ended the run; SIGKILL here is most often the OOM killer.
        why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise ProjectError(f"the paper-scale run ({' '.join(command[2:])}) failed: {why}",
                           hint="it peaks near 15 GiB of RSS: run it alone; finished steps are kept, rerun to resume")
    # Each step's cost is the longest time it took in any invocation recorded in run.json (a rerun that
    # skips a finished step records a near-zero time); peak RSS is the highest any step reached.
    history = RunLog(config.run_dir).as_dict()["history"]
    step_wall: dict[str, float] = {}
    for entry in history:
        if "stopped_by" in entry:  # cut short and resumed: not the step's whole time
            continue
        step_wall[entry["step"]] = max(step_wall.get(entry["step"], 0.0), entry["wall_s"])
    wall = sum(step_wall.values())
    peak_gib = max(entry["peak_rss_gib"] for entry in history)

    manifest = load_student_manifest(config.student_dir)
    labels = len(manifest.labels)
    dense = manifest.embedding_dim * manifest.hidden_dim + manifest.hidden_dim + manifest.hidden_dim * labels + labels
    sparse = manifest.table_rows * manifest.embedding_dim
    accuracy = json.loads(Path(config.evaluate.report or f"reports/accuracy-{config.name}").with_suffix(".json")
                          .read_text())
    final = accuracy[accuracy["final_student"]]
    shard_bytes = sum(s.bytes for s in manifest.shards)
    report = {
        "parameters": sparse + dense,
        "sparse_parameters": sparse,
        "dense_parameters": dense,
        "vocab_size": manifest.vocab_size,
        "embedding_dim": manifest.embedding_dim,
        "dev_acc": final["dev_acc"],
        "test_acc": final["test_acc"],
        "test_ci95": final["test_ci95"],
        "teacher_test_acc": accuracy["teacher"]["test_acc"],
        "exported_test_acc": accuracy["exported_student"]["test_acc"],
        "exported_shard_gib": round(shard_bytes / 2**30, 3),
        "wall_s": round(wall, 1),
        "wall_s_by_step": step_wall,
        "peak_rss_gib": round(peak_gib, 2),
        "command": " ".join(["sd", "paper-scale", "--config", args.config]),
        "note": (
            "wall_s: sum over this run's steps (vocab to evaluate) of each step's longest recorded time; "
            "data, teacher and labels are reused from the demo run and not included; peak_rss_gib: "
            "highest ru_maxrss of any step's process"
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    rows = "\n".join(f"| {k} | {v} |" for k, v in report.items())
    out.with_suffix(".md").write_text(f"# Paper-scale student\n\n| what | value |\n|---|---|\n{rows}\n")
    print(out.with_suffix(".md").read_text())
    return 0
