"""`make fuzz`: schemathesis against the service's own OpenAPI, on a real server process on loopback.

Starts ``python -m service`` on a free port (on the given models, or on a tiny student built here in
seconds with ``training.quick``), waits for /readyz, runs ``st run`` bounded by examples per operation
and a time budget, stops the server with SIGTERM and checks it exits 0. The run fails on any 5xx
(``not_a_server_error``) and on answers that break the schema's promises (status codes, content types,
response schemas); a JUnit report lands in ``runs/fuzz/`` (git-ignored).

    sd fuzz                      # tiny student (+ tiny teacher once quick has one)
    sd fuzz --student models/mr-demo --teacher models/mr-demo-teacher
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from service.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def build_tiny_models(folder: Path, with_teacher: bool) -> tuple[Path, Path | None]:
    """A tiny real student (and teacher, when training.quick can make one) on MR training sentences;
    needs the training extras."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the fuzz log
    from training import quick
    from training.data import load_mr

    task = load_mr(ROOT / ".cache" / "data")
    texts, labels = task.train.texts[:800], task.train.labels[:800]
    student = quick.make_tiny_student(folder / "fuzz-tiny", texts, labels, task.label_names)
    make_teacher = getattr(quick, "make_tiny_teacher", None)
    if not with_teacher or make_teacher is None:
        print("no teacher: the teacher routes are fuzzed for their 404 only", flush=True)
        return student, None
    return student, Path(make_teacher(folder / "fuzz-tiny-teacher", texts, labels, task.label_names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, help="student folder (default: a tiny one built now)")
    parser.add_argument("--teacher", type=Path, help="teacher folder (optional)")
    parser.add_argument("--max-examples", type=int, default=60, help="test cases per operation and phase")
    parser.add_argument("--max-time", type=int, default=180, help="time budget of the whole run, seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--checks", default=CHECKS)
    parser.add_argument("--report-dir", type=Path, default=ROOT / "runs" / "fuzz", help="JUnit report here")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (models, server log)")
    args = parser.parse_args(argv)
    args.report_dir = args.report_dir.resolve()

    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        raise SystemExit("schemathesis is not installed: .venv/bin/pip install schemathesis")
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    student, teacher = args.student, args.teacher
    if student is None:
        student, built_teacher = build_tiny_models(work, with_teacher=teacher is None)
        teacher = teacher or built_teacher
    # Small limits so the fuzzer reaches them; a short timeout so nothing hangs the run.
    server_args = ["--student", str(student), "--max-texts-per-request", "16", "--max-chars-per-text", "2000",
                   "--max-body-bytes", "65536", "--request-timeout-s", "10", "--log-level", "warning"]
    if teacher:
        server_args += ["--teacher", str(teacher)]
    log_path = work / "server.log"
    server = ServerProcess(server_args, log=log_path, cwd=ROOT)
    print("$", " ".join(server.command), f"(log: {log_path})", flush=True)
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
                "--report", "junit", "--report-dir", str(args.report_dir), "--no-color"]
        print("$", " ".join(fuzz), flush=True)
        # Run from the scratch folder: schemathesis keeps a cache in ./.schemathesis.
        code = subprocess.run(fuzz, cwd=work).returncode
        print(f"schemathesis exit code {code} after {time.monotonic() - started:.0f} s", flush=True)
    finally:
        server_code = server.stop(timeout_s=60)
    errors = [line for line in log_path.read_text(errors="replace").splitlines() if "ERROR" in line]
    print(f"server exit code {server_code}; {len(errors)} ERROR lines in its log", flush=True)
    for line in errors[:20]:
        print("  ", line)
    result = code or (1 if server_code != 0 else 0)
    if result == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # kept on failure: the server log is in it
    else:
        print(f"scratch folder kept: {work}", flush=True)
    return result


