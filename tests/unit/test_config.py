"""The run config's schema: unknown keys, bad values and bad types are refused with the key named;
the shipped configs load; ``render_toml`` writes a full config that loads back to the same one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training.config import ConfigError, RunConfig, config_from_dict, load_config, render_toml

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"labeling": {"backend": "tensorrt"}}, "labeling.backend: Input should be 'onnx' or 'torch', got 'tensorrt'"),
        ({"export": {"dtype": "int4"}}, "export.dtype: Input should be 'float16', 'float32' or 'int8', got 'int4'"),
        ({"distill": {"epochs": -3}}, "distill.epochs: Input should be greater than 0"),
        ({"distill": {"lr": -1.0}}, "distill.lr: Input should be greater than 0"),
        ({"vocab": {"size": True}}, "vocab.size: Input should be a valid integer"),
        ({"vocab": {"size": "5"}}, "vocab.size: Input should be a valid integer"),
        ({"vocab": {"sise": 5}}, "vocab.sise: unknown key"),
        ({"teacher": {"lr": True}}, "teacher.lr: Input should be a valid number"),
        ({"student": {"dropout": 1.0}}, "student.dropout: Input should be less than 1"),
        ({"data": {"source": "sst2"}}, "data.source"),
        ({"data": {"transfer": ["wiki"]}}, "data.transfer"),
        ({"data": {"mr_reviews": True}}, "data.mr_reviews: removed; use data.transfer"),
        ({"labeling": {"max_length": 512}}, "labeling.max_length: removed; the teacher's one length"),
        ({"labeling": {"max_tokens": -1}}, "labeling.max_tokens: Input should be greater than or equal to 0"),
        ({"distill": {"corpus_texts": -1}}, "distill.corpus_texts"),
        ({"vocab": {"ngram_min": 3, "ngram_max": 2}}, "vocab: n-gram range"),
        ({"data": {"source": "files"}}, "data.source = 'files' needs data.train and data.dev"),
        ({"name": ""}, "name: String should have at least 1 character"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(section: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"name": "x", **section}, "my.toml")
    assert str(refused.value).startswith("my.toml: ")
    assert fragment in str(refused.value)


def test_ints_are_taken_for_floats_and_arrays_for_pairs() -> None:
    config = config_from_dict({"name": "x", "distill": {"lr": 1, "betas": [0.9, 0.99]}, "vocab": {"memory_mb": 64}})
    assert config.distill.lr == 1.0 and config.distill.betas == (0.9, 0.99) and config.vocab.memory_mb == 64.0


def test_the_new_task_keys_are_known() -> None:
    config = config_from_dict({"name": "x", "data": {"source": "trec", "transfer": ["imdb-sentences"]},
                               "distill": {"corpus_texts": 1000}, "labeling": {"max_tokens": 0}})
    assert config.data.transfer == ["imdb-sentences"] and config.distill.corpus_texts == 1000


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.toml")))
def test_the_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert config.name == name.removesuffix(".toml")


def test_a_missing_config_file_names_it() -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config("nope.toml")


def test_the_filled_config_loads_back_to_the_same_config(tmp_path: Path) -> None:
    config = load_config(REPO / "configs" / "mr-demo.toml")
    path = tmp_path / "full.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    again = load_config(path)
    assert again.model_dump(exclude={"source_path"}) == config.model_dump(exclude={"source_path"})
    assert "# transfer = (unset)" in render_toml(RunConfig(name="x"))
    assert RunConfig(name="x").to_dict()["distill"]["betas"] == (0.9, 0.98)


def test_the_schemas_choices_are_the_built_in_tasks_and_corpora() -> None:
    from typing import get_args

    from training.config import DataConfig
    from training.data.tasks import TASKS

    assert set(get_args(DataConfig.model_fields["source"].annotation)) == {*TASKS, "files"}


def test_a_teacher_budget_leaves_older_teachers_valid_and_changes_the_key_when_set(tmp_path: Path) -> None:
    from training.stages.teacher import teacher_settings

    base = {"name": "x", "workdir": str(tmp_path)}
    default = config_from_dict(base)
    budgeted = config_from_dict({**base, "teacher": {"train_texts": 3000}})
    assert "train_texts" not in teacher_settings(default)  # the default: the same key as before the option
    assert teacher_settings(budgeted)["train_texts"] == 3000
    with pytest.raises(ConfigError, match=r"teacher\.train_texts"):
        config_from_dict({**base, "teacher": {"train_texts": -1}})
