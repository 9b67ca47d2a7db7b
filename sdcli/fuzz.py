"""`make fuzz`: schemathesis against the service's own OpenAPI, on a real server process on loopback.

Runs two configurations one after the other: ``student`` (a student only: the teacher, compare and
cascade routes must answer their documented 404, not a 5xx) and ``student+teacher``. Each starts
``python -m service`` on a free port (on the given models, or on tiny ones built here in seconds: a
student with ``training.testing.quick``, a teacher by the real fine-tune and export stages for one epoch), with
the student in a model repository so the /v2/repository routes are exercised, waits for /readyz, runs
``st run`` bounded by examples per operation and a time budget, stops the server with SIGTERM and
checks it exits 0. A run fails on any 5xx (``not_a_server_error``) and on answers that break the
schema's promises (status codes, content types, response schemas); JUnit reports land in
``runs/fuzz/<configuration>/`` (git-ignored).

    sd fuzz                                   # both configurations, about 3 minutes each
    sd fuzz --short                           # both, about a minute each (CI: make fuzz-short)
    sd fuzz --config student --student models/mr-demo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.ops.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CONFIGS = ("student", "student+teacher")


def balanced(texts: list[str], labels: list[int], per_label: int) -> tuple[list[str], list[int]]:
    """The first ``per_label`` texts of each label (the MR file lists every positive first)."""
    taken: dict[int, int] = {}
    out_texts, out_labels = [], []
    for text, label in zip(texts, labels, strict=True):
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            out_texts.append(text)
            out_labels.append(label)
    return out_texts, out_labels


def build_tiny_student(folder: Path) -> Path:
    """A tiny real student on MR training sentences, in a model repository as version 1 of "fuzz-tiny"
    (needs the training extras and the MR data: ``make data``)."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the fuzz log
    from training.data.task_data import fetch_mr, load_mr
    from training.testing import quick

    cache = ROOT / ".cache" / "data"
    fetch_mr(cache)
    task = load_mr(cache)
    texts, labels = balanced(task.train.texts, task.train.labels, 400)
    return quick.make_tiny_student(folder / "repository" / "fuzz-tiny" / "1", texts, labels, task.label_names)


def build_tiny_teacher(folder: Path) -> Path:
    """A tiny BERT teacher (hidden 32, 2 layers) through the real stages: data, one epoch of fine-tuning,
    ONNX export. Its accuracy does not matter here; that it is a real exported teacher does."""
    from training.config import DataConfig, LabelingConfig, RunConfig, TeacherConfig
    from training.data.task_data import load_mr
    from training.stages.data_stage import prepare_data
    from training.stages.teacher import finetune_teacher
    from training.stages.teacher_export import export_teacher
    from training.testing.tiny_models import make_tiny_checkpoint

    task = load_mr(ROOT / ".cache" / "data")
    inputs = folder / "teacher-inputs"
    inputs.mkdir(parents=True)
    files = {}
    for split, data in (("train", task.train), ("dev", task.dev), ("test", task.test)):
        path = inputs / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for text, label in zip(*balanced(data.texts, data.labels, 100), strict=True):
                f.write(json.dumps({"text": text, "label": task.label_names[label]}) + "\n")
        files[split] = str(path)
    corpus = inputs / "corpus.txt"
    corpus.write_text("".join(t + "\n" for t in task.train.texts[:200]), encoding="utf-8")
    base = make_tiny_checkpoint("bert", folder / "teacher-base", task.train.texts[:400],
                                num_labels=len(task.label_names), max_positions=128, vocab_size=2000)
    config = RunConfig(
        name="fuzz-tiny", workdir=str(folder / "teacher-run"), models_dir=str(folder / "models"),
        data=DataConfig(source="files", corpus=[str(corpus)], train=files["train"], dev=files["dev"],
                        test=files["test"]),
        teacher=TeacherConfig(base_model=str(base), max_length=64, epochs=1, batch_size=16, lr=1e-3, threads=1),
        labeling=LabelingConfig(batch_size=32, shard_size=128, backend="onnx"),
    )
    prepare_data(config)
    finetune_teacher(config)
    export_teacher(config)
    return config.teacher_dir


def fuzz_one(name: str, models: list[str], args: argparse.Namespace, st: str, work: Path) -> int:
    """One configuration: start the server on ``models`` (flags), fuzz it, stop it; 0 when all passed."""
    # Small limits so the fuzzer reaches them; a short timeout so nothing hangs the run.
    server_args = [*models, "--max-texts-per-request", "16", "--max-chars-per-text", "2000",
                   "--max-body-bytes", "65536", "--request-timeout-s", "10", "--log-level", "warning",
                   "--threads", "1"]
    log_path = work / f"server-{name.replace('+', '-')}.log"
    report_dir = args.report_dir / name.replace("+", "-")
    server = ServerProcess(server_args, log=log_path, cwd=ROOT)
    print(f"== {name}\n$", " ".join(server.command), f"(log: {log_path})", flush=True)
    code = 1
    try:
        server.wait_ready(timeout_s=120)
        url = server.url
        started = time.monotonic()
        fuzz = [st, "run", f"{url}/openapi.json", "--checks", args.checks, "--max-examples",
                str(args.max_examples), "--max-time", str(args.max_time), "--seed", str(args.seed),
                # One worker: with two, hypothesis (describing a filter lambda with ast.parse) now
                # and then crashed with CPython 3.11.7's "AST constructor recursion depth
                # mismatch": a tool error, no finding about the service.
                "--workers", "1", "--generation-database", "none", "--request-timeout", "30",
                "--report", "junit", "--report-dir", str(report_dir), "--no-color"]
        print("$", " ".join(fuzz), flush=True)
        # Run from the scratch folder: schemathesis keeps a cache in ./.schemathesis.
        code = subprocess.run(fuzz, cwd=work).returncode
        print(f"{name}: schemathesis exit code {code} after {time.monotonic() - started:.0f} s", flush=True)
    finally:
        server_code = server.stop(timeout_s=60)
    errors = [line for line in log_path.read_text(errors="replace").splitlines() if "ERROR" in line]
    print(f"{name}: server exit code {server_code}; {len(errors)} ERROR lines in its log", flush=True)
    for line in errors[:20]:
        print("  ", line)
    return code or (1 if server_code != 0 else 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=[*CONFIGS, "both"], default="both", help="which server set-up(s)")
    parser.add_argument("--student", type=Path, help="student folder (default: a tiny one built now)")
    parser.add_argument("--teacher", type=Path, help="teacher folder (default: a tiny one built now)")
    parser.add_argument("--short", action="store_true",
                        help="a quick pass for CI: fewer examples and about a minute per configuration")
    parser.add_argument("--max-examples", type=int, help="test cases per operation and phase (60; short: 8)")
    parser.add_argument("--max-time", type=int, help="time budget of each configuration's run, s (180; short: 45)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--checks", default=CHECKS)
    parser.add_argument("--report-dir", type=Path, default=ROOT / "runs" / "fuzz", help="JUnit reports here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (models, server logs)")
    args = parser.parse_args(argv)
    args.report_dir = args.report_dir.resolve()
    args.max_examples = args.max_examples or (8 if args.short else 60)
    args.max_time = args.max_time or (45 if args.short else 180)

    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        raise SystemExit("schemathesis is not installed: .venv/bin/pip install schemathesis")
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    configs = CONFIGS if args.config == "both" else (args.config,)
    student_flags = ["--student", str(args.student)] if args.student else [
        "--model-repository", str(build_tiny_student(work).parents[1])]
    teacher: Path | None = args.teacher
    if "student+teacher" in configs and teacher is None:
        teacher = build_tiny_teacher(work)
    results = {}
    for name in configs:
        models = student_flags + (["--teacher", str(teacher)] if name == "student+teacher" and teacher else [])
        results[name] = fuzz_one(name, models, args, st, work)
    print("fuzz:", ", ".join(f"{name} {'passed' if code == 0 else 'FAILED'}" for name, code in results.items()),
          flush=True)
    result = max(results.values())
    if result == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # kept on failure: the server logs are in it
    else:
        print(f"scratch folder kept: {work}", flush=True)
    return result


