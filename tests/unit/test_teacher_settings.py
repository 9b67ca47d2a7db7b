"""Adding ``teacher.finetune`` must not make finished teachers and exports look stale (their fingerprints
and manifests were written before the key existed)."""

from __future__ import annotations

from training.config import RunConfig, TeacherConfig
from training.stages.teacher import teacher_settings
from training.stages.teacher_export import same_teacher_settings


def test_finetune_enters_the_teachers_key_only_when_false() -> None:
    default = teacher_settings(RunConfig(name="x"))
    assert "finetune" not in default
    as_is = teacher_settings(RunConfig(name="x", teacher=TeacherConfig(base_model="ckpt", finetune=False)))
    assert as_is["finetune"] is False


def test_an_export_recorded_before_the_key_still_matches_at_its_default() -> None:
    current = RunConfig(name="x").to_dict()["teacher"]
    older = {k: v for k, v in current.items() if k not in ("finetune", "train_texts")}
    assert same_teacher_settings(older, current)
    assert same_teacher_settings(current, current)
    as_is = RunConfig(name="x", teacher=TeacherConfig(base_model="ckpt", finetune=False)).to_dict()["teacher"]
    assert not same_teacher_settings({**older, "base_model": "ckpt"}, as_is)  # finetune false is a change
    assert not same_teacher_settings({**older, "lr": 1.0}, current)
    assert not same_teacher_settings({**current, "gone": 1}, current)
    assert not same_teacher_settings(None, current)
