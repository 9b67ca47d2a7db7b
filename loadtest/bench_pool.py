"""The student's pooling alone, by chunk size: how ``POOL_CHUNK_ROWS`` was chosen (reports/bench-notes.md).

    sd bench-pool                                   # models/mr-paper, 32 reviews a batch
    sd bench-pool --student models/mr-demo --workload sentences --threads 2

Featurizes a prefix of the workload once, pools every batch once untimed (the table rows are then
mapped), then times ``mean_pool`` over all batches for each chunk size, best of ``--repeats`` passes,
with the gather (``EmbeddingTable.gather_into``) timed inside it. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from loadtest.bench_memory import copy_bandwidth
from loadtest.bench_prepare import load_workloads
from service.runtimes.contract import RuntimeOptions
from service.runtimes.student import StudentRuntime, mean_pool

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", type=Path, default=REPO / "models/mr-paper")
    p.add_argument("--workload", choices=["sentences", "reviews"], default="reviews")
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--chunks", type=int, nargs="+", default=[256, 1024, 4096, 1 << 20])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-cache", type=Path, default=REPO / ".cache/data")
    args = p.parse_args(argv)

    spent = [0.0]

    def observe(stage: str, seconds: float, rows: npt.NDArray[np.int64] | None) -> None:
        if stage == "gather":
            spent[0] += seconds

    options = RuntimeOptions(threads=args.threads, verify_checksums=False, observer=observe)
    runtime = StudentRuntime.load(args.student, options)
    table = runtime.table
    texts = load_workloads(args.data_cache)[args.workload][: args.texts]
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    occurrences = [runtime.featurizer.occurrences(b) for b in batches]
    row_bytes = table.dim * table.shards[0].dtype.itemsize
    gathered = sum(np.unique(o.rows).size for o in occurrences) * row_bytes
    for occ in occurrences:
        mean_pool(occ, table)

    copy = copy_bandwidth()
    print(f"{args.student.name}, {args.workload}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{len(batches)} batches; copy bandwidth {copy / 1e9:.2f} GB/s")
    print("| chunk rows | pool ms/batch | gather ms/batch | gather GB/s | of copy |")
    print("|---|---|---|---|---|")
    for chunk in args.chunks:
        best_total, best_gather = float("inf"), float("inf")
        for _ in range(args.repeats):
            spent[0] = 0.0
            started = time.perf_counter()
            for occ in occurrences:
                mean_pool(occ, table, chunk_rows=chunk)
            total = time.perf_counter() - started
            if total < best_total:
                best_total, best_gather = total, spent[0]
        n = len(batches)
        label = "all (one block)" if chunk >= 1 << 20 else f"{chunk:,}"
        print(f"| {label} | {1e3 * best_total / n:.2f} | {1e3 * best_gather / n:.2f} | "
              f"{gathered / best_gather / 1e9:.2f} | {gathered / best_gather / copy:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
