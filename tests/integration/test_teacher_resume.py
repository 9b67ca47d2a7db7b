"""The teacher's fine-tuning resumes by epoch: a run cut short after an epoch goes on from there and ends
with the teacher an uninterrupted run gives; a state for other settings is not resumed; patience stops
when dev stops improving."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.integration.conftest import tiny_teacher_config
from training.config import RunConfig
from training.data.task_data import TaskData
from training.run_status import run_status
from training.stages import teacher as teacher_stage
from training.stages.teacher import finetune_teacher
from training.stages.teacher_model import METRICS_FILE, TEACHER_DIR, load_classifier
from training.stages.teacher_resume import RESUME_DIR, STATE

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]
EPOCHS = 3


class Interrupted(Exception):
    """Stands for the session closing in the middle of an epoch."""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData, mr_corpus_small: list[str]) -> RunConfig:
    config = tiny_teacher_config("bert", tmp_path_factory.mktemp("resume"), mr_small, mr_corpus_small[:200])
    return config.model_copy(update={"teacher": config.teacher.model_copy(update={"epochs": EPOCHS})})


def _copy(config: RunConfig, dest: Path, **teacher: Any) -> RunConfig:
    """The base run's data (its data step done), in a folder of its own, no teacher yet."""
    shutil.copytree(config.run_dir / "data", dest / "run" / "data")
    return config.model_copy(update={"workdir": str(dest / "run"), "models_dir": str(dest / "models"),
                                     "teacher": config.teacher.model_copy(update=teacher)})


def _metrics(config: RunConfig) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((config.run_dir / TEACHER_DIR / METRICS_FILE).read_text())
    return data


def _weights(config: RunConfig) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_classifier(config.run_dir / TEACHER_DIR / "model")[1].state_dict().items()}


def _interrupt_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    real = teacher_stage._train_epoch
    calls = {"n": 0}

    def train_epoch(*args: Any, **kwargs: Any) -> float:
        calls["n"] += 1
        if calls["n"] == epoch:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(teacher_stage, "_train_epoch", train_epoch)


def test_a_run_cut_short_resumes_after_its_last_epoch_and_ends_as_an_uninterrupted_one(
        base_run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _copy(base_run, tmp_path / "whole")
    finetune_teacher(whole)
    assert not (whole.run_dir / RESUME_DIR).exists()  # cleared once the teacher folder is in place

    cut = _copy(base_run, tmp_path / "cut")
    _interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        finetune_teacher(cut)
    monkeypatch.undo()
    assert not (cut.run_dir / TEACHER_DIR).exists()  # nothing half-made in the teacher folder
    saved = torch.load(cut.run_dir / RESUME_DIR / STATE, weights_only=False)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    assert [p.name for p in (cut.run_dir / RESUME_DIR).glob("best-e*.pt")] == ["best-e001.pt"]
    teacher_row = next(r for r in run_status(cut) if r.step == "teacher")  # what `sd status` shows meanwhile
    assert teacher_row.state == "part done"
    assert f"1 of up to {EPOCHS} epochs (dev acc: {saved['history'][0]['dev_acc']:.4f}" in teacher_row.detail
    assert "resumes after epoch 1" in teacher_row.detail

    finetune_teacher(cut)
    resumed, reference = _metrics(cut), _metrics(whole)
    assert resumed["resumed_after_epoch"] == 1 and reference["resumed_after_epoch"] == 0
    assert resumed["epochs"][0] == saved["history"][0]  # epoch 1 was not trained again
    assert [e["dev_acc"] for e in resumed["epochs"]] == [e["dev_acc"] for e in reference["epochs"]]
    assert [e["train_loss"] for e in resumed["epochs"]] == pytest.approx(
        [e["train_loss"] for e in reference["epochs"]], rel=1e-5)
    assert (resumed["best_epoch"], resumed["dev_acc"], resumed["test_acc"]) == (
        reference["best_epoch"], reference["dev_acc"], reference["test_acc"])
    a, b = _weights(cut), _weights(whole)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4)
    assert not (cut.run_dir / RESUME_DIR).exists()
    teacher_row = next(r for r in run_status(cut) if r.step == "teacher")
    assert (teacher_row.state, teacher_row.detail.split(",")[0]) == ("done", f"{EPOCHS} epoch(s)")


def test_a_state_made_for_other_settings_is_not_resumed(base_run: RunConfig, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = _copy(base_run, tmp_path / "run")
    _interrupt_at_epoch(monkeypatch, 2)
    with pytest.raises(Interrupted):
        finetune_teacher(first)
    monkeypatch.undo()
    other = first.model_copy(update={"teacher": first.teacher.model_copy(update={"lr": first.teacher.lr / 2})})
    finetune_teacher(other)
    found = _metrics(other)
    assert found["resumed_after_epoch"] == 0 and len(found["epochs"]) == EPOCHS


def test_patience_stops_when_dev_accuracy_stops_improving(base_run: RunConfig, tmp_path: Path) -> None:
    # A learning rate too small to move dev accuracy: epoch 1 stays the best, so patience 1 stops
    # after epoch 2 of 3.
    config = _copy(base_run, tmp_path / "run", lr=1e-12, patience=1)
    finetune_teacher(config)
    found = _metrics(config)
    assert [e["epoch"] for e in found["epochs"]] == [1, 2] and found["best_epoch"] == 1
