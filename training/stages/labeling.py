"""Step 2 of Sparse Distillation: the teacher labels every text of the transfer corpus with its logits.

The paper stores the teacher's logits as float32 arrays (DESIGN.md section 1). The corpus is streamed
in shards, which ``training.stages.label_shards.ShardBook`` keeps (resume, digests, stale shards, the done
marker); this module is the local executor: it maps each missing shard's texts to logits in this
process.

Backends: ``"onnx"`` runs the exported teacher (``config.teacher_dir``) through the serving runtime;
``"torch"`` runs ``<run_dir>/teacher/model``. Both batch texts of similar token length together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdcore.model_format import TEACHER_ONNX, sha256_of
from service.runtimes.contract import RuntimeOptions
from service.runtimes.teacher import TeacherRuntime
from training.config import RunConfig
from training.progress import progress
from training.stages.label_shards import LabelingError, ShardBook

Progress = Callable[[int], object]


@dataclass
class _Teacher:
    labels: list[str]
    identity: dict[str, Any]  # what the logits depend on; a change invalidates existing shards
    logits: Callable[[list[str], Progress], np.ndarray]


def onnx_teacher(config: RunConfig) -> _Teacher:
    runtime = TeacherRuntime.load(config.teacher_dir, RuntimeOptions(threads=config.teacher.threads or None))
    exported_with = runtime.manifest.config.get("teacher", {}).get("max_length")
    if exported_with is not None and exported_with != config.teacher.max_length:
        raise LabelingError(
            f"{config.teacher_dir}: exported for teacher.max_length {exported_with}, the config says "
            f"{config.teacher.max_length}; export the teacher again (run the teacher-export step)"
        )
    onnx = next(e for e in runtime.manifest.files if e.path == TEACHER_ONNX)
    batch_size, max_tokens = config.labeling.batch_size, config.labeling.max_tokens
    return _Teacher(
        labels=runtime.labels,
        identity={"backend": "onnx", "model_sha256": onnx.sha256, "max_length": runtime.max_length},
        logits=lambda texts, progress: runtime.logits(texts, batch_size, progress, max_tokens),
    )


def _torch_teacher(config: RunConfig) -> _Teacher:
    from training.stages.teacher_model import (
        MODEL_SUBDIR,
        TEACHER_DIR,
        label_names,
        load_classifier,
        max_input_tokens,
        predict_logits,
        torch_threads,
    )

    folder = config.run_dir / TEACHER_DIR / MODEL_SUBDIR
    weights = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    if not weights:
        raise LabelingError(f"{folder}: no model weights; fine-tune the teacher first")
    tokenizer, model = load_classifier(folder)
    max_length = min(config.teacher.max_length, max_input_tokens(model.config))
    batch_size = config.labeling.batch_size
    labels = label_names(model.config)

    def logits(texts: list[str], progress: Progress) -> np.ndarray:
        with torch_threads(config.teacher.threads):
            return predict_logits(model, tokenizer, texts, batch_size, max_length, progress,
                                  config.labeling.max_tokens)

    return _Teacher(
        labels=labels,
        identity={
            "backend": "torch",
            "weights_sha256": {p.name: sha256_of(p) for p in weights},
            "max_length": max_length,
        },
        logits=logits,
    )


def label_corpus(config: RunConfig) -> Path:
    """Label the whole transfer corpus with the teacher's logits; returns ``<run_dir>/labels``.

    Shards already on disk for the same texts (and the same teacher) are kept, so a rerun after an
    interruption only labels what is missing.
    """
    started = time.perf_counter()
    teacher = onnx_teacher(config) if config.labeling.backend == "onnx" else _torch_teacher(config)
    book = ShardBook(config.run_dir, teacher.labels, teacher.identity, config.labeling.shard_size)
    book.open()
    computed = labeled = 0
    with progress(total=book.total, desc="label corpus", unit=" texts") as bar:
        for shard in book.shards():
            if book.is_complete(shard):
                bar.skip(len(shard.texts))
                continue
            book.write(shard, teacher.logits(shard.texts, bar.update))
            computed += 1
            labeled += len(shard.texts)
    seconds = time.perf_counter() - started
    return book.finish(computed_shards=computed, texts_labeled=labeled, seconds=round(seconds, 2),
                       texts_per_second=round(labeled / seconds, 1) if seconds > 0 else None)
