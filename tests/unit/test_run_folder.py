"""The run-folder contract: one done marker with a fingerprint, written last; a missing input names
the step to run first; step ranges in pipeline order."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.pipeline import StepError, select_steps
from training.stages.run_folder import (
    RunFolder,
    StepInputMissing,
    clear_done,
    fingerprint,
    is_done,
    read_done,
    write_done,
)


def test_a_step_is_done_only_for_the_same_fingerprint(tmp_path: Path) -> None:
    key = fingerprint({"size": 5}, [1, 2])
    assert not is_done(tmp_path, key)
    write_done(tmp_path, key, {"size": 5})
    assert is_done(tmp_path, key) and not is_done(tmp_path, fingerprint({"size": 6}, [1, 2]))
    assert read_done(tmp_path) == {"fingerprint": key, "size": 5}
    clear_done(tmp_path)
    assert read_done(tmp_path) is None


def test_a_missing_input_names_the_step_that_makes_it(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", tmp_path / "models", "x")
    with pytest.raises(StepInputMissing) as missing:
        folder.require("vocab")
    assert missing.value.step == "vocab" and missing.value.hint == "run `sd run vocab` first"
    assert "vocab/done.json: missing" in str(missing.value)
    with pytest.raises(StepInputMissing, match=r"manifest\.json"):
        folder.require("export")
    write_done(folder.student, "k", stage="kd")
    assert folder.require("kd") == folder.student
    with pytest.raises(StepInputMissing, match=r"ft-done\.json"):
        folder.require("ft")


def test_step_ranges_follow_the_pipeline_order() -> None:
    assert select_steps("vocab", "kd") == ["vocab", "features", "table-init", "kd"]
    assert select_steps(until="data") == ["data"]
    with pytest.raises(StepError, match="comes after"):
        select_steps("export", "vocab")
    with pytest.raises(StepError, match="unknown step 'trian'"):
        select_steps("trian")


def test_a_late_key_is_left_out_of_a_fingerprint_only_at_its_default() -> None:
    from training.stages.run_folder import without_late_defaults

    before = {"epochs": 3, "lr": 5e-5}  # a section as finished runs recorded it
    late = {"train_texts": 0, "finetune": True}
    at_default = without_late_defaults({**before, "train_texts": 0, "finetune": True}, late)
    assert at_default == before and fingerprint(at_default) == fingerprint(before)
    changed = without_late_defaults({**before, "train_texts": 2000, "finetune": True}, late)
    assert changed == {**before, "train_texts": 2000} and fingerprint(changed) != fingerprint(before)
    assert without_late_defaults({**before, "finetune": False}, late) == {**before, "finetune": False}
