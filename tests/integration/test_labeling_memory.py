"""The labeling-memory probe on a real exported (tiny) teacher: fresh processes, real peaks, the budget
honoured."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.task_data import TaskData
from training.studies.labeling_memory import machine_facts, measure, write_report


@pytest.mark.slow
def test_budget_bounds_the_largest_batch_and_report(tiny_teacher_dir: Path, mr_small: TaskData, tmp_path: Path) -> None:
    texts = mr_small.train.texts[:48]
    free = measure(tiny_teacher_dir, texts, batch_size=16, max_tokens=0, max_length=128, threads=1)
    budget = measure(tiny_teacher_dir, texts, batch_size=16, max_tokens=256, max_length=128, threads=1)
    no_arena = measure(tiny_teacher_dir, texts, batch_size=16, max_tokens=0, max_length=128, arena=False, threads=1)
    assert free["largest_batch_tokens"] > 256 >= budget["largest_batch_tokens"]
    for row in (free, budget, no_arena):
        assert row["texts"] == 48 and row["peak_rss_gib"] >= row["loaded_rss_gib"] > 0 and row["seconds"] > 0
    out = tmp_path / "memory"
    write_report([free, budget, no_arena], {**machine_facts(), "command": "test", "teacher": "tiny", "task": "mr"}, out)
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| 48 | 16 | 256 | on |" in table and "| off |" in table
