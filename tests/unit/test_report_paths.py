"""Reports record paths inside the repository relative to it, so they read the same on any machine."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadtest.run import service_arguments
from sdcore import machine
from sdcore.machine import REPO, shown_path


def test_paths_inside_the_repository_are_shown_relative_and_others_as_given(tmp_path: Path) -> None:
    assert shown_path(REPO / "models" / "mr-demo") == "models/mr-demo"
    assert shown_path(str(REPO / ".cache" / "bench" / "fasttext-mr.bin")) == ".cache/bench/fasttext-mr.bin"
    assert shown_path(tmp_path / "student") == str(tmp_path / "student")


def test_a_link_inside_the_repository_is_shown_as_named_not_as_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "runs").mkdir(parents=True)
    elsewhere.mkdir()
    (repo / "runs" / "mr-demo").symlink_to(elsewhere)
    monkeypatch.setattr(machine, "REPO", repo)
    assert machine.shown_path(repo / "runs" / "mr-demo" / "teacher") == "runs/mr-demo/teacher"


def test_the_load_test_runs_the_real_paths_and_reports_them_relative() -> None:
    args = argparse.Namespace(student=REPO / "models" / "mr-demo", teacher=REPO / "models" / "mr-demo-teacher",
                              workers=1, threads=1)
    assert service_arguments(args)[:4] == ["--student", str(args.student), "--teacher", str(args.teacher)]
    assert service_arguments(args, shown_path)[:4] == ["--student", "models/mr-demo", "--teacher",
                                                       "models/mr-demo-teacher"]
