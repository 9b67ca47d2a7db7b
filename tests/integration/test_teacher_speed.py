"""The teacher-speed probe on a tiny real checkpoint: real AdamW steps and real labeling, timed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data.task_data import TaskData
from training.studies.teacher_speed import append_report, measure_teacher_speed
from training.testing.tiny_models import make_tiny_checkpoint


@pytest.mark.slow
def test_measure_and_report(tmp_path: Path, mr_cache: Path, mr_small: TaskData) -> None:
    base = make_tiny_checkpoint("bert", tmp_path / "base", mr_small.train.texts, max_positions=64)
    row = measure_teacher_speed(str(base), "mr", 512, texts=24, batch_size=8, train_steps=2, cache_dir=mr_cache)
    assert row["max_length"] == 64  # capped at what the checkpoint's positions take
    assert row["texts"] == 24 and 1 < row["mean_tokens"] <= 64
    assert row["train_texts_per_s"] > 0 and row["infer_texts_per_s"] > 0
    out = tmp_path / "speed"
    append_report(row, "first", out)
    rows = append_report(row, "second", out)
    assert [r["command"] for r in rows] == ["first", "second"]
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == rows
    assert out.with_suffix(".md").read_text(encoding="utf-8").count(str(base)) == 2
