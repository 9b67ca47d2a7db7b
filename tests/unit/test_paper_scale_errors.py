"""`sd paper-scale` runs the pipeline in a child process; a child that fails is one line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcore.errors import ProjectError
from training.studies.paper_scale import main


def test_a_failed_child_run_is_a_project_error_with_its_exit_code(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text(
        f'name = "broken"\nworkdir = "{tmp_path / "run"}"\n'
        f'[data]\nsource = "files"\ntrain = "{tmp_path / "missing-train.csv"}"\n'
        f'dev = "{tmp_path / "missing-dev.csv"}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ProjectError, match=r"the paper-scale run .* failed: exit code [1-9]") as failed:
        main(["--config", str(config), "--out", str(tmp_path / "report")])
    assert failed.value.hint and "rerun to resume" in failed.value.hint
    assert not (tmp_path / "report.md").exists()
