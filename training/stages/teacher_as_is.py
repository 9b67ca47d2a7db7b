"""``teacher.finetune = false``: an already fine-tuned classifier used as it is (training/stages/teacher.py
calls this instead of fine-tuning).

Its own head and ``id2label``: the data step already put ``labels.json`` in the checkpoint's order
(``training.stages.teacher_checkpoint``), which is checked again here; a checkpoint without a trained head is
refused (transformers would initialise one at random). Nothing is trained; the dev and test accuracy
are measured and recorded in ``metrics.json`` as for a fine-tuned teacher (``epochs`` empty,
``best_epoch`` 0, ``finetuned`` false).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from training.config import RunConfig
from training.data.task_data import LabeledSet
from training.progress import note
from training.stages.teacher_checkpoint import TeacherError, label_mismatch
from training.stages.teacher_model import (
    accuracy,
    base_model_name,
    fast_tokenizer,
    label_names,
    max_input_tokens,
    predict_logits,
    save_teacher,
    use_offline_hub,
)


def load_finetuned(path: Path, data_labels: list[str]) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """A fine-tuned classifier as it is: its own head and ``id2label``, which must name ``data_labels``
    in the same order (the data step put them in the checkpoint's order); never a new head."""
    use_offline_hub()
    labels = label_names(AutoConfig.from_pretrained(path, local_files_only=True))
    error = label_mismatch(labels, data_labels, str(path))
    if error is not None:
        raise error
    if labels != data_labels:
        raise TeacherError(f"{path}: the checkpoint's label order {labels} is not labels.json's {data_labels}",
                           hint="run the data step again (`sd run --step data`)")
    tokenizer = fast_tokenizer(path)
    model, info = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True,
                                                                     output_loading_info=True)
    missing = sorted(info["missing_keys"])
    if missing:  # transformers would initialise these at random: a head that was never trained
        raise TeacherError(
            f"{path}: not a fine-tuned classifier: {', '.join(missing[:4])} missing from the checkpoint",
            hint="teacher.finetune = false uses a trained head as it is; set teacher.finetune = true to train one",
        )
    return tokenizer, model


def use_as_is(config: RunConfig, base: Path, out: Path, key: dict[str, Any], started: float, labels: list[str],
              dev: LabeledSet, test: LabeledSet) -> None:
    """``teacher.finetune = false``: no training; dev and test accuracy recorded as for a fine-tuned one."""
    tokenizer, model = load_finetuned(base, labels)
    max_length = min(config.teacher.max_length, max_input_tokens(model.config))
    batch_size = config.teacher.batch_size
    dev_acc = accuracy(predict_logits(model, tokenizer, dev.texts, batch_size, max_length), dev.labels)
    test_acc = accuracy(predict_logits(model, tokenizer, test.texts, batch_size, max_length), test.labels)
    note(f"teacher used as is (teacher.finetune = false): dev acc {dev_acc:.4f}")
    metrics = {
        "config": key,
        "base_model": base_model_name(config.teacher.base_model),
        "finetuned": False,
        "labels": labels,
        "max_length": max_length,
        "train_texts": 0,
        "epochs": [],
        "best_epoch": 0,
        "dev_acc": dev_acc,
        "test_acc": test_acc,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    save_teacher(out, model, tokenizer, metrics, key)
