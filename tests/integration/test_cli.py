"""``sd`` through typer's CliRunner: the project's errors are one line with the fix and a non-zero
exit, never a traceback; ``init-config`` writes a config that loads; a stale teacher is redone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdcli.app import app
from training.config import load_config
from training.stages.data_stage import prepare_data
from training.stages.run_folder import fingerprint, write_done
from training.stages.teacher import _config_key, teacher_is_done
from training.stages.teacher_model import MODEL_SUBDIR

runner = CliRunner()


def one_line_error(args: list[str], code: int) -> str:
    """Run ``sd args``; check it failed with ``code``, one line on stderr and no traceback anywhere."""
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # stdout has the step headers
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def write_files_config(tmp_path: Path, train: str, extra: str = "") -> Path:
    (tmp_path / "train.jsonl").write_text(train, encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text('{"text": "a fine film", "label": "pos"}\n', encoding="utf-8")
    config = tmp_path / "run.toml"
    config.write_text(
        f'name = "cli"\nworkdir = "{tmp_path / "run"}"\nmodels_dir = "{tmp_path / "models"}"\n'
        f'[data]\nsource = "files"\ntrain = "{tmp_path / "train.jsonl"}"\ndev = "{tmp_path / "dev.jsonl"}"\n'
        + extra,
        encoding="utf-8",
    )
    return config


GOOD_TRAIN = "".join(json.dumps({"text": f"text number {i}", "label": ["pos", "neg"][i % 2]}) + "\n" for i in range(8))


def test_a_bad_data_file_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    config = write_files_config(tmp_path, GOOD_TRAIN + "{not json\n")
    line = one_line_error(["run", "-c", str(config), "--step", "data"], 1)
    assert "train.jsonl, line 9: bad JSON" in line


def test_a_step_before_its_input_names_the_step_to_run_first(tmp_path: Path) -> None:
    config = write_files_config(tmp_path, GOOD_TRAIN)
    line = one_line_error(["run", "-c", str(config), "--step", "features"], 1)
    assert "vocab" in line and "(run `sd run vocab` first)" in line
    line = one_line_error(["run", "-c", str(config), "--step", "teacher"], 1)
    assert "(run `sd run data` first)" in line


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("[vocab]\nsise = 5\n", "vocab.sise: unknown key"),
        ("[vocab]\nsize = true\n", "vocab.size: Input should be a valid integer"),
        ('[labeling]\nbackend = "tensorrt"\n', "labeling.backend"),
        ("[distill]\nepochs = -3\n", "distill.epochs: Input should be greater than 0"),
    ],
)
def test_a_bad_config_key_or_type_is_one_line_naming_the_key(tmp_path: Path, extra: str, fragment: str) -> None:
    config = write_files_config(tmp_path, GOOD_TRAIN, extra)
    line = one_line_error(["run", "-c", str(config)], 2)
    assert str(config) in line and fragment in line


def test_from_after_until_is_an_error(tmp_path: Path) -> None:
    config = write_files_config(tmp_path, GOOD_TRAIN)
    line = one_line_error(["run", "-c", str(config), "--from", "export", "--until", "vocab"], 2)
    assert "--from export comes after --until vocab" in line


def test_a_missing_model_folder_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(["serve", "--student", str(tmp_path / "nonexistent")], 1)
    assert "nonexistent: model folder does not exist" in line


def test_init_config_writes_every_default_and_loads(tmp_path: Path) -> None:
    out = tmp_path / "full.toml"
    result = runner.invoke(app, ["init-config", str(out), "--name", "fresh"])
    assert result.exit_code == 0, result.output
    config = load_config(out)
    assert config.name == "fresh" and config.vocab.size == 200_000 and "[distill]" in out.read_text()


def test_editing_the_training_data_makes_the_teacher_stale(tmp_path: Path) -> None:
    path = write_files_config(tmp_path, GOOD_TRAIN)
    config = load_config(path)
    prepare_data(config)
    # A teacher folder as the teacher step leaves it, for this data (no training needed to check reuse).
    teacher = config.run_folder.teacher
    (teacher / MODEL_SUBDIR).mkdir(parents=True)
    (teacher / MODEL_SUBDIR / "config.json").write_text("{}")
    write_done(teacher, fingerprint(_config_key(config)))
    assert teacher_is_done(config)
    # the same texts with one label changed: the data step is redone, and the old teacher is stale
    (tmp_path / "train.jsonl").write_text(GOOD_TRAIN.replace('"neg"', '"pos"', 1), encoding="utf-8")
    prepare_data(config)
    assert not teacher_is_done(config)


def test_status_shows_the_steps_of_a_run_and_a_bad_config_is_one_line(tmp_path: Path) -> None:
    config = write_files_config(tmp_path, GOOD_TRAIN)
    result = runner.invoke(app, ["status", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "| teacher | not started |" in result.output and "goes on from data" in result.output
    assert runner.invoke(app, ["run", "-c", str(config), "--step", "data"]).exit_code == 0
    result = runner.invoke(app, ["status", "-c", str(config)])
    assert "| data | done |" in result.output and "goes on from teacher" in result.output
    assert "| scratch |" in result.output
    line = one_line_error(["status", "-c", str(tmp_path / "missing.toml")], 2)
    assert "missing.toml" in line
