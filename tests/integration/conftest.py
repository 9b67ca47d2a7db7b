"""Integration fixtures: tiny real teachers (BERT- and RoBERTa-family), trained and exported.

A tiny teacher (hidden 32, 2 layers, a tokenizer built from the MR texts) goes through the real
stages: ``prepare_data`` (source "files"), ``finetune_teacher`` and ``export_teacher``. It is built
once per session and family; treat its folders as read-only (copy them to change or damage them).
The service's own fixtures live in tests/integration/serving/conftest.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest

from training.config import DataConfig, LabelingConfig, RunConfig, TeacherConfig
from training.data.task_data import LabeledSet, TaskData
from training.stages.data_stage import prepare_data
from training.stages.teacher import finetune_teacher
from training.stages.teacher_export import export_teacher
from training.testing.tiny_models import make_tiny_checkpoint

Family = Literal["bert", "roberta"]
TINY_MAX_POSITIONS = 128  # below teacher.max_length (512), so fine-tuning and the export must cap it
# Tiny random transformers sit on a loss plateau for about 3 epochs before they learn; with 6 the
# teacher's logits vary between texts (an ONNX == PyTorch check on constant logits proves nothing)
# and the best dev epoch is not always the last (model selection is exercised).
EPOCHS = 6
LR = 1e-3
BATCH_SIZE = 8


def _write_labeled(path: Path, data: LabeledSet, names: list[str]) -> str:
    with path.open("w", encoding="utf-8") as f:
        for text, label in zip(data.texts, data.labels, strict=True):
            f.write(json.dumps({"text": text, "label": names[label]}) + "\n")
    return str(path)


def tiny_teacher_config(family: Family, root: Path, task: TaskData, corpus: list[str]) -> RunConfig:
    """A run whose data stage is done and whose teacher base is a fresh tiny checkpoint of ``family``."""
    inputs = root / "inputs"
    inputs.mkdir(parents=True)
    corpus_file = inputs / "corpus.txt"
    corpus_file.write_text("".join(t + "\n" for t in corpus), encoding="utf-8")
    names = task.label_names
    base = make_tiny_checkpoint(
        family,
        root / "base",
        [*task.train.texts, *corpus],
        num_labels=len(names),
        max_positions=TINY_MAX_POSITIONS,
        vocab_size=2000,
    )
    config = RunConfig(
        name=f"tiny-{family}",
        workdir=str(root / "run"),
        models_dir=str(root / "models"),
        data=DataConfig(
            source="files",
            train=_write_labeled(inputs / "train.jsonl", task.train, names),
            dev=_write_labeled(inputs / "dev.jsonl", task.dev, names),
            test=_write_labeled(inputs / "test.jsonl", task.test, names),
            corpus=[str(corpus_file)],
        ),
        teacher=TeacherConfig(
            base_model=str(base), max_length=512, epochs=EPOCHS, batch_size=BATCH_SIZE, lr=LR, threads=1
        ),
        labeling=LabelingConfig(batch_size=32, shard_size=128, backend="onnx"),
    )
    prepare_data(config)
    return config


@pytest.fixture(scope="session")
def tiny_teacher_run(
    tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData, mr_corpus_small: list[str]
) -> Callable[[Family], RunConfig]:
    """``tiny_teacher_run(family)`` -> the run config of a tiny teacher fine-tuned on the small MR task
    (400 / 100 / 100) and exported (``config.teacher_dir``); built once per family and session."""
    built: dict[str, RunConfig] = {}

    def build(family: Family) -> RunConfig:
        if family not in built:
            config = tiny_teacher_config(
                family, tmp_path_factory.mktemp(f"teacher-{family}"), mr_small, mr_corpus_small[:400]
            )
            finetune_teacher(config)
            export_teacher(config)
            built[family] = config
        return built[family]

    return build


@pytest.fixture(scope="session")
def tiny_teacher_dir(tiny_teacher_run: Callable[[Family], RunConfig]) -> Path:
    """An exported tiny BERT-family teacher folder (``models/<name>-teacher``)."""
    return tiny_teacher_run("bert").teacher_dir
