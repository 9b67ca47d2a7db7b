"""Where a student's time goes: py-spy samples of ``StudentRuntime.predict`` on one workload.

    sd bench-profile --student models/mr-paper --workload reviews --batch-size 32
    sd bench-profile --student models/mr-demo --workload sentences --batch-size 1

Runs the student in a child process under ``py-spy record --format raw`` (py-spy must be installed:
``pip install py-spy``) for ``--seconds``, then sums the samples by function, inclusive (a function and
what it calls) and by the stage of the pipeline it belongs to (tokenize, word ids, n-gram keys, key
lookup, sort by row, gather, pooling product, head), and writes ``<out>`` (default
``reports/bench.profile-<student>-<workload>-b<batch>.txt``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Stage of a sample = the first of these found in its stack, innermost first.
STAGES = [
    ("Tokenizer.__call__", "tokenize (lowercase + regex findall)"),
    ("word_codes", "word ids (dict lookups)"),
    ("lower_bound", "key lookup"),
    ("mix_keys", "n-gram keys"),
    ("batch_ngram_columns", "n-gram windows"),
    ("occurrences_from_ids", "featurizer numpy (other)"),
    ("gather", "gather (onnxruntime)"),
    ("argsort", "sort by row"),
    ("_mul_multivector", "pooling product (scipy)"),
    ("matmul", "pooling product (scipy)"),
    ("mean_pool", "pooling (other)"),
    ("logits", "head (onnxruntime)"),
    ("softmax", "softmax"),
]


def run_workload(student: str, workload: str, batch_size: int, seconds: float, threads: int) -> None:
    from loadtest.bench_prepare import load_workloads
    from service.runtimes.contract import RuntimeOptions
    from service.runtimes.student import StudentRuntime

    texts = load_workloads(REPO / ".cache/data")[workload]
    runtime = StudentRuntime.load(student, RuntimeOptions(threads=threads, verify_checksums=False))
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        start = done * batch_size % len(texts)
        runtime.predict(texts[start : start + batch_size] or texts[:batch_size])
        done += 1
    print(f"{done * batch_size / seconds:,.1f} texts/s under the profiler", flush=True)


def summarize(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """(samples by stage, samples by function inclusive, total samples) from py-spy's collapsed stacks,
    counting only samples inside ``StudentRuntime.predict``."""
    stages: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if "StudentRuntime.predict" not in stack or not count_text.isdigit():
            continue  # start-up (imports, loading) is not the pipeline
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] for f in stack.split(";")]
        for name in set(frames):
            functions[name] += count
        innermost = list(reversed(frames))
        stage = next((label for key, label in STAGES if any(key in f for f in innermost)), "other (Python glue)")
        stages[stage] += count
    return stages, functions, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default=str(REPO / "models/mr-paper"))
    p.add_argument("--workload", choices=["sentences", "reviews"], default="reviews")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--out", type=Path)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run_workload(args.student, args.workload, args.batch_size, args.seconds, args.threads)
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    name = Path(args.student).name
    out = args.out or REPO / f"reports/bench.profile-{name}-{args.workload}-b{args.batch_size}.txt"
    raw_file = out.with_suffix(".raw")
    child = [sys.executable, __file__, "--child", "--student", args.student, "--workload", args.workload,
             "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--seconds", str(args.seconds)]
    done = subprocess.run([py_spy, "record", "--format", "raw", "--rate", str(args.rate), "--nonblocking",
                           "-o", str(raw_file), "--", *child], capture_output=True, text=True, check=False)
    rate_line = next((line for line in done.stdout.splitlines() if "texts/s" in line), "")
    if done.returncode != 0 or not raw_file.is_file():
        print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
        return 1
    stages, functions, total = summarize(raw_file.read_text())
    raw_file.unlink()
    lines = [f"# py-spy profile: {name}, {args.workload}, batch {args.batch_size}, {args.threads} thread(s)",
             f"# {rate_line.strip()}; {total} samples inside predict at {args.rate}/s; command: "
             "sd bench-profile "
             + " ".join(sys.argv[1:] if argv is None else argv), "", "## by stage (share of samples)"]
    lines += [f"{n / total:7.1%}  {stage}" for stage, n in stages.most_common()]
    lines += ["", "## by function, inclusive (top 25)"]
    lines += [f"{n / total:7.1%}  {fn}" for fn, n in functions.most_common(25)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
