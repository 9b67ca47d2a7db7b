"""How fast a teacher base fine-tunes and labels on this machine, before committing hours to a run.

``measure_teacher_speed`` loads a base (a name from training/data/teacher_bases.py or a local folder) with a
fresh classifier head, runs a few real AdamW steps on a task's training texts at a given truncation
length (the first step is excluded: it allocates the optimizer state), then labels the same texts in
PyTorch with the length-sorted batching the pipeline uses. The figures are texts per second, with the
mean token count of the texts as truncated, so a run's time can be planned (epochs x train texts /
rate; corpus texts / rate). Results are appended to ``reports/teacher-speed.{md,json}``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdcore.atomic import atomic_write_bytes, atomic_write_json
from training.data.tasks import TASKS
from training.stages.teacher_checkpoint import resolve_base_model
from training.stages.teacher_model import load_classifier, max_input_tokens, predict_logits


def measure_teacher_speed(
    base_model: str, task: str, max_length: int, texts: int, batch_size: int, train_steps: int, cache_dir: Path
) -> dict[str, Any]:
    data = TASKS[task].load(cache_dir).train
    sample, labels = data.texts[:texts], data.labels[:texts]
    folder = resolve_base_model(base_model, cache_dir)
    tokenizer, model = load_classifier(folder, num_labels=max(labels) + 1, ignore_mismatched_sizes=True)
    length = min(max_length, max_input_tokens(model.config))
    tokens = [len(ids) for ids in tokenizer(sample, truncation=True, max_length=length)["input_ids"]]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    timed, seconds = 0, 0.0
    for step in range(train_steps + 1):
        idx = [(step * batch_size + i) % len(sample) for i in range(batch_size)]
        batch = tokenizer([sample[i] for i in idx], truncation=True, max_length=length, padding=True,
                          return_tensors="pt")
        started = time.perf_counter()
        loss = model(**batch, labels=torch.tensor([labels[i] for i in idx])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step > 0:  # the first step allocates the optimizer state
            seconds += time.perf_counter() - started
            timed += len(idx)
    started = time.perf_counter()
    predict_logits(model, tokenizer, sample, batch_size, length)
    infer_seconds = time.perf_counter() - started
    return {
        "base_model": base_model or "all-MiniLM-L6-v2",
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "task": task,
        "max_length": length,
        "texts": len(sample),
        "mean_tokens": round(float(np.mean(tokens)), 1),
        "batch_size": batch_size,
        "train_texts_per_s": round(timed / seconds, 2),
        "infer_texts_per_s": round(len(sample) / infer_seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def append_report(row: dict[str, Any], command: str, out: Path = Path("reports/teacher-speed")) -> list[dict[str, Any]]:
    path = out.with_suffix(".json")
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    rows.append({**row, "command": command})
    atomic_write_json(path, rows)
    lines = [
        "# Teacher speed on this machine (PyTorch, CPU)",
        "",
        "Fine-tuning: AdamW steps on the task's training texts, first step excluded. Labeling: the same texts,",
        "length-sorted batches. Texts per second; the load average says how idle the machine was.",
        "",
        "| base | params (M) | task | max len | mean tokens | batch | train texts/s | label texts/s | load | date "
        "| command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['base_model']} | {r['parameters_m']} | {r['task']} | {r['max_length']} | {r['mean_tokens']} "
          f"| {r['batch_size']} | {r['train_texts_per_s']} | {r['infer_texts_per_s']} | {r['load_average'][0]} "
          f"| {r['date']} | `{r['command']}` |" for r in rows),
        "",
    ]
    atomic_write_bytes(out.with_suffix(".md"), "\n".join(lines).encode("utf-8"))
    return rows
