"""``teacher.finetune = false``: an already fine-tuned classifier used as it is (issue 12, item 1).

The checkpoint is the tiny BERT teacher of the session (fine-tuned on the small MR task, labels
["negative", "positive"]) saved again with its head rows swapped and ``id2label`` {0: "positive",
1: "negative"}: the same classifier, its labels in an order that differs from sorted order. Used as it
is, it must keep that order everywhere (labels.json, the split ids, the export, the logit columns),
score exactly what the original scored on dev and test, and never get a new head.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import AutoModel

from service.runtimes.contract import RuntimeOptions
from service.runtimes.teacher import TeacherRuntime
from training.config import ConfigError, RunConfig, TeacherConfig, config_from_dict
from training.data.task_data import load_label_names, load_split
from training.stages.data_stage import prepare_data
from training.stages.label_shards import load_teacher_logits
from training.stages.labeling import label_corpus
from training.stages.teacher import finetune_teacher
from training.stages.teacher_checkpoint import TeacherError
from training.stages.teacher_export import export_teacher
from training.stages.teacher_model import METRICS_FILE, TEACHER_DIR, load_classifier

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]
SWAPPED = ["positive", "negative"]


def _save_swapped(model_dir: Path, out: Path, names: list[str]) -> Path:
    """The classifier of ``model_dir`` with its two logit rows swapped and labelled ``names``."""
    tokenizer, model = load_classifier(model_dir)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight.flip(0))
        model.classifier.bias.copy_(model.classifier.bias.flip(0))
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {n: i for i, n in enumerate(names)}
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _as_is_config(source: RunConfig, root: Path, checkpoint: Path) -> RunConfig:
    teacher = TeacherConfig(base_model=str(checkpoint), finetune=False, max_length=512, batch_size=8, threads=1)
    return source.model_copy(update={"name": "as-is", "workdir": str(root / "run"), "models_dir": str(root / "models"),
                                     "teacher": teacher})


def _metrics(config: RunConfig) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((config.run_dir / TEACHER_DIR / METRICS_FILE).read_text())
    return found


@pytest.fixture(scope="module")
def fine_tuned(tiny_teacher_run: Callable[[str], RunConfig]) -> RunConfig:
    return tiny_teacher_run("bert")


@pytest.fixture(scope="module")
def as_is(fine_tuned: RunConfig, tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """A run whose teacher is the swapped checkpoint, used as is: data, teacher and export done."""
    root = tmp_path_factory.mktemp("as-is")
    checkpoint = _save_swapped(fine_tuned.run_dir / TEACHER_DIR / "model", root / "checkpoint", SWAPPED)
    config = _as_is_config(fine_tuned, root, checkpoint)
    prepare_data(config)
    finetune_teacher(config)
    export_teacher(config)
    return config


def test_the_data_takes_the_checkpoints_label_order_matched_by_name(fine_tuned: RunConfig, as_is: RunConfig) -> None:
    assert load_label_names(fine_tuned.run_dir) == ["negative", "positive"]  # sorted, as a new head gets
    assert load_label_names(as_is.run_dir) == SWAPPED
    for split in ("train", "dev", "test"):
        before, after = load_split(fine_tuned.run_dir, split), load_split(as_is.run_dir, split)
        assert after.texts == before.texts
        named_before = [["negative", "positive"][i] for i in before.labels]
        assert [SWAPPED[i] for i in after.labels] == named_before  # each text keeps its label's name


def test_it_is_not_trained_and_scores_what_the_original_scored(fine_tuned: RunConfig, as_is: RunConfig) -> None:
    found, original = _metrics(as_is), _metrics(fine_tuned)
    assert found["finetuned"] is False and found["epochs"] == [] and found["train_texts"] == 0
    # The same classifier under swapped names: mapped by position, the accuracy would be 1 - acc.
    assert found["dev_acc"] == pytest.approx(original["dev_acc"])
    assert found["test_acc"] == pytest.approx(original["test_acc"])
    assert found["dev_acc"] > 0.55  # a teacher that learned, so 1 - acc would be told apart
    _, model = load_classifier(as_is.run_dir / TEACHER_DIR / "model")
    assert model.config.id2label == dict(enumerate(SWAPPED))  # the checkpoint's own, not overwritten


def test_the_export_keeps_the_order_and_its_logits_are_the_originals_swapped(
    fine_tuned: RunConfig, as_is: RunConfig
) -> None:
    runtime = TeacherRuntime.load(as_is.teacher_dir, RuntimeOptions(threads=1))
    original = TeacherRuntime.load(fine_tuned.teacher_dir, RuntimeOptions(threads=1))
    assert runtime.labels == SWAPPED and original.labels == ["negative", "positive"]
    assert runtime.manifest.metrics["dev_acc"] == pytest.approx(_metrics(fine_tuned)["dev_acc"])
    assert runtime.manifest.metrics["finetuned"] is False
    texts = load_split(as_is.run_dir, "dev").texts[:20]
    np.testing.assert_allclose(runtime.logits(texts), original.logits(texts)[:, ::-1], rtol=0, atol=1e-4)


def test_labeling_writes_logit_columns_in_the_checkpoints_order(fine_tuned: RunConfig, as_is: RunConfig) -> None:
    label_corpus(as_is)
    logits = load_teacher_logits(as_is.run_dir)
    train = load_split(as_is.run_dir, "train")  # the corpus starts with the training texts, in order
    agree = np.mean(logits[: len(train)].argmax(1) == np.asarray(train.labels))
    assert agree > 0.6  # the teacher's column i means labels.json's label i


def test_differing_label_names_are_one_error_listing_both(fine_tuned: RunConfig, tmp_path: Path) -> None:
    checkpoint = _save_swapped(fine_tuned.run_dir / TEACHER_DIR / "model", tmp_path / "ckpt", ["pos", "negative"])
    config = _as_is_config(fine_tuned, tmp_path, checkpoint)
    with pytest.raises(TeacherError) as caught:
        prepare_data(config)
    line = caught.value.one_line()
    assert "\n" not in line
    assert "['pos', 'negative']" in line and "['negative', 'positive']" in line
    assert "only in the checkpoint: ['pos']" in line and "only in the data: ['positive']" in line


def test_a_checkpoint_without_a_trained_head_is_refused_not_initialised(
    fine_tuned: RunConfig, tmp_path: Path
) -> None:
    tokenizer, _ = load_classifier(fine_tuned.run_dir / TEACHER_DIR / "model")
    encoder = AutoModel.from_pretrained(fine_tuned.run_dir / TEACHER_DIR / "model")  # the encoder, no head
    encoder.config.id2label = {0: "negative", 1: "positive"}
    encoder.save_pretrained(tmp_path / "encoder")
    tokenizer.save_pretrained(tmp_path / "encoder")
    config = _as_is_config(fine_tuned, tmp_path, tmp_path / "encoder")
    prepare_data(config)
    with pytest.raises(TeacherError, match=r"not a fine-tuned classifier: classifier\.bias, classifier\.weight"):
        finetune_teacher(config)
    assert not (config.run_dir / TEACHER_DIR / METRICS_FILE).exists()


def test_finetune_false_needs_a_base_model() -> None:
    with pytest.raises(ConfigError, match=r"teacher\.finetune = false needs teacher\.base_model"):
        config_from_dict({"name": "x", "teacher": {"finetune": False}})
