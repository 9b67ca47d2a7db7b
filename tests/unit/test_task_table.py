"""The cross-task accuracy table and the corpus-size curve, built from accuracy reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from training.stages.run_folder import StepInputMissing
from training.studies.task_table import render_table, task_entry, write_corpus_curve, write_task_table

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def reports(tmp_path: Path) -> dict[str, Path]:
    """Two accuracy reports as the evaluate step writes them (the committed MR demo report, twice: one
    with a larger corpus, as a corpus-size study would give)."""
    source = json.loads((REPO / "reports" / "accuracy-mr-demo.json").read_text(encoding="utf-8"))
    small = tmp_path / "accuracy-small.json"
    shutil.copy(REPO / "reports" / "accuracy-mr-demo.json", small)
    source["meta"]["corpus_texts"] *= 3
    source["dan_kd_ft"]["test_acc"] = 0.8
    large = tmp_path / "accuracy-large.json"
    large.write_text(json.dumps(source), encoding="utf-8")
    return {"small": small.with_suffix(""), "large": large.with_suffix("")}


def test_task_table(reports: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "accuracy"
    table = write_task_table(reports, out, "test")
    small = table["tasks"]["small"]
    source = json.loads(reports["small"].with_suffix(".json").read_text(encoding="utf-8"))
    assert small["retention_test"] == round(source["dan_kd_ft"]["test_acc"] / source["teacher"]["test_acc"], 4)
    assert small["retention_dev"] == round(source["dan_kd_ft"]["dev_acc"] / source["teacher"]["dev_acc"], 4)
    assert small["test_size"] == source["meta"]["n_test"]
    assert {"teacher", "dan_scratch", "dan_kd", "dan_kd_ft", "fasttext"} <= set(small)
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == table
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "small dev | small test | large dev | large test" in markdown and "Deviations from the paper" in markdown
    kd_ft_row = next(line for line in render_table(table["tasks"]).splitlines() if line.startswith("| DAN KD+FT"))
    assert f"{source['dan_kd_ft']['test_acc']:.4f}" in kd_ft_row and "0.8000" in kd_ft_row


def test_corpus_curve_orders_points_and_draws_a_png(reports: dict[str, Path], tmp_path: Path) -> None:
    curve = write_corpus_curve("mr", [reports["large"], reports["small"]], tmp_path / "curve", "test")
    sizes = [p["corpus_texts"] for p in curve["points"]]
    assert sizes == sorted(sizes) and sizes[1] == 3 * sizes[0]
    assert curve["points"][1]["retention_test"] == task_entry(
        json.loads(reports["large"].with_suffix(".json").read_text(encoding="utf-8"))
    )["retention_test"]
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_task_table_names_a_missing_report(tmp_path: Path) -> None:
    with pytest.raises(StepInputMissing, match="made by the evaluate step"):
        write_task_table({"rt": tmp_path / "nope"}, tmp_path / "out", "test")


def test_goal_lines_follow_the_figures(reports: dict[str, Path], tmp_path: Path) -> None:
    from training.studies.task_table import goal_lines

    tasks = write_task_table(reports, tmp_path / "accuracy", "test")["tasks"]
    small, large = goal_lines(tasks)
    retention = tasks["small"]["retention_test"]
    assert f"retention test {retention:.1%} ({'met' if retention >= 0.97 else 'not met'})" in small
    gain = 100 * (0.8 - tasks["large"]["fasttext"]["test_acc"])
    assert f"over fastText {gain:+.1f} points ({'met' if gain >= 5 else 'not met'})" in large


def test_a_run_without_baselines_gets_dashes_and_its_teacher_named(reports: dict[str, Path], tmp_path: Path) -> None:
    source = json.loads(reports["small"].with_suffix(".json").read_text(encoding="utf-8"))
    for key in ("dan_scratch", "fasttext"):
        del source[key]
    source["meta"]["teacher_base_model"] = "all-mpnet-base-v2"
    bare = tmp_path / "accuracy-bare.json"
    bare.write_text(json.dumps(source), encoding="utf-8")
    table = write_task_table({"bare": bare.with_suffix("")}, tmp_path / "accuracy", "test")
    lines = render_table(table["tasks"]).splitlines()
    assert next(line for line in lines if line.startswith("| DAN from scratch")) == "| DAN from scratch | - | - |"
    assert next(line for line in lines if line.startswith("| KD+FT - best")).endswith("|  | - |")
    base_row = next(line for line in lines if line.startswith("| teacher base"))
    assert base_row == "| teacher base | all-mpnet-base-v2 |  |"


def test_the_teachers_epochs_come_from_a_report_that_records_them(reports: dict[str, Path], tmp_path: Path) -> None:
    source = json.loads(reports["small"].with_suffix(".json").read_text(encoding="utf-8"))
    source["meta"]["teacher_training"] = {"epochs": [{"epoch": 1, "dev_acc": 0.88, "seconds": 1882.0},
                                                     {"epoch": 2, "dev_acc": 0.87, "seconds": 1890.0}],
                                          "best_epoch": 1, "train_seconds": 3772.0, "train_texts_per_s": 5.53}
    timed = tmp_path / "accuracy-timed.json"
    timed.write_text(json.dumps(source), encoding="utf-8")
    table = write_task_table({"timed": timed.with_suffix(""), "old": reports["small"]}, tmp_path / "out", "test")
    facts = table["tasks"]["timed"]["facts"]
    assert (facts["teacher_epochs"], facts["teacher_best_epoch"], facts["teacher_train_texts_per_s"]) == (2, 1, 5.53)
    assert "teacher_epochs" not in table["tasks"]["old"]["facts"]
    row = next(line for line in render_table(table["tasks"]).splitlines() if line.startswith("| teacher epochs"))
    assert row == "| teacher epochs (best kept) | 2 (epoch 1) |  | - |  |"
