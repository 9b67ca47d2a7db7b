"""Peak memory of labeling, by batching rule and corpus size: why a labeling run peaks where it does.

Each measurement runs in a fresh process (``multiprocessing`` spawn), so its peak RSS (VmHWM) is that
configuration's alone: it loads the exported teacher, labels the first N texts of a task at the given
truncation length, and reports the peak, the time and the largest padded batch it ran. Compared:
``batch_size`` alone (every batch ``batch_size`` texts, whatever their length) against the same with a
token budget (``labeling.max_tokens``: at most that many padded tokens a batch). A transformer's
activations grow with texts x length (attention with texts x length^2), and onnxruntime's CPU arena
keeps the largest block it ever allocated; ``arena=False`` shows how much of the peak is the arena.
Results go to ``reports/labeling-memory.{md,json}``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

from sdcore.atomic import atomic_write_bytes, atomic_write_json


def _measure(teacher_dir: str, texts: list[str], batch_size: int, max_tokens: int, max_length: int,
             arena: bool, threads: int, queue: Any) -> None:
    import onnxruntime as ort

    from sdcore.process_memory import peak_rss_bytes
    from service.runtimes.contract import RuntimeOptions
    from service.runtimes.teacher import TeacherRuntime, token_budget_batches

    runtime = TeacherRuntime.load(teacher_dir, RuntimeOptions(threads=threads))
    runtime.tokenizer.enable_truncation(max_length)  # the ONNX graph takes any length up to its positions
    if not arena:
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = False
        options.intra_op_num_threads = threads
        runtime.session = ort.InferenceSession(str(Path(teacher_dir) / "model.onnx"), sess_options=options,
                                               providers=["CPUExecutionProvider"])
    lengths = sorted(len(e.ids) for e in runtime.encode(texts))
    batches = token_budget_batches(lengths, batch_size, max_tokens)
    largest = max((b.stop - b.start) * lengths[b.stop - 1] for b in batches)
    before = peak_rss_bytes()
    started = time.perf_counter()
    runtime.logits(texts, batch_size, max_tokens=max_tokens)
    queue.put({"seconds": round(time.perf_counter() - started, 2), "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3),
               "loaded_rss_gib": round(before / 2**30, 3), "largest_batch_tokens": int(largest)})


def measure(teacher_dir: Path, texts: list[str], batch_size: int, max_tokens: int, max_length: int,
            arena: bool = True, threads: int = 2) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure, args=(str(teacher_dir), texts, batch_size, max_tokens, max_length,
                                                   arena, threads, queue))
    child.start()
    result: dict[str, Any] = queue.get()
    child.join()
    return {"texts": len(texts), "batch_size": batch_size, "max_tokens": max_tokens, "max_length": max_length,
            "arena": arena, **result, "texts_per_s": round(len(texts) / result["seconds"], 1)}


def write_report(rows: list[dict[str, Any]], facts: dict[str, Any], out: Path) -> None:
    atomic_write_json(out.with_suffix(".json"), {"rows": rows, "meta": facts})
    lines = [
        "# Peak memory of labeling",
        "",
        f"Command: `{facts['command']}`  ",
        f"Teacher: `{facts['teacher']}`; texts: the first N training texts of `{facts['task']}`, truncated at "
        f"{rows[0]['max_length']} tokens. Machine: {facts['machine']}; date {facts['date']}; load average at "
        f"start {facts['load_average']}.",
        "",
        "Peak RSS (VmHWM) of a fresh process that loads the teacher and labels the texts; 'loaded' is its "
        "RSS before labeling.",
        "",
        "| texts | batch size | token budget | arena | largest batch (padded tokens) | loaded GiB | peak GiB "
        "| seconds | texts/s |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['texts']} | {r['batch_size']} | {r['max_tokens'] or 'none'} | {'on' if r['arena'] else 'off'} "
          f"| {r['largest_batch_tokens']:,} | {r['loaded_rss_gib']} | {r['peak_rss_gib']} | {r['seconds']} "
          f"| {r['texts_per_s']} |" for r in rows),
        "",
    ]
    atomic_write_bytes(out.with_suffix(".md"), "\n".join(lines).encode("utf-8"))


def machine_facts() -> dict[str, Any]:
    import platform

    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%dT%H:%M"),
            "load_average": round(os.getloadavg()[0], 2)}
