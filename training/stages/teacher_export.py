"""Export the fine-tuned teacher into the model repository (format v1, sdcore/model_format.py).

``models/<name>-teacher/`` gets ``model.onnx`` (float32; inputs ``input_ids``, ``attention_mask`` and
``token_type_ids`` when the tokenizer produces them; output ``logits``; batch and sequence axes
dynamic), ``tokenizer/`` and ``manifest.json``. The serving side runs it with onnxruntime and the
``tokenizers`` library only.

ONNX path (torch 2.13): ``torch.onnx.export(..., dynamo=True)`` (the default; torch.export + onnxscript)
exports BERT and RoBERTa classifiers of transformers 5 with dynamic shapes. The legacy TorchScript
exporter (``dynamo=False``) also still works but warns that it will be removed, so it is not used.
The export is checked before it is published: the exported folder, loaded by the serving runtime,
must give the PyTorch logits (within ``EXPORT_ATOL``) on real texts of several lengths.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sdcore.atomic import atomic_dir
from sdcore.model_format import (
    TEACHER_ONNX,
    TEACHER_TOKENIZER_DIR,
    ModelFormatError,
    TeacherManifest,
    load_teacher_manifest,
    verify_teacher,
)
from sdcore.model_writer import file_entry, now_iso, write_manifest
from service.runtimes.contract import RuntimeOptions
from service.runtimes.teacher import TeacherRuntime
from training.config import RunConfig, TeacherConfig
from training.data.task_data import load_label_names, load_split
from training.stages.teacher_checkpoint import TeacherError
from training.stages.teacher_model import (
    MODEL_SUBDIR,
    TEACHER_DIR,
    base_model_name,
    label_names,
    load_classifier,
    max_input_tokens,
    predict_logits,
    torch_threads,
)

EXPORT_ATOL = 1e-4
OPSET = 18
CHECK_TEXTS = 48


class _LogitsOnly(torch.nn.Module):
    """The classifier with positional tensor inputs and one tensor output, as the exporter wants."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        logits: torch.Tensor = self.model(**inputs).logits
        return logits


def input_names(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The ONNX inputs: exactly what the tokenizer feeds the model in PyTorch."""
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in tokenizer.model_input_names:
        names.append("token_type_ids")
    return names


def export_onnx(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    names: list[str],
    path: Path,
    example_text: str,
) -> None:
    """Export on a padded batch of two texts of different lengths (an example axis of size 1 would be
    specialised to 1) and write one self-contained float32 file."""
    model.eval()
    example = tokenizer([example_text, "a"], padding=True, truncation=True, max_length=64, return_tensors="pt")
    args = tuple(example[n] for n in names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    # The exporter prints its steps, warns about unused axis names and logs that torchvision is
    # missing; none of it is actionable, and a failure still raises.
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LogitsOnly(model),
                args,
                str(path),
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=tuple({0: batch, 1: sequence} for _ in names),
                opset_version=OPSET,
                dynamo=True,
                external_data=False,  # one file, as the manifest lists; fine below protobuf's 2 GB
            )
    finally:
        onnx_logger.setLevel(level)


def save_serving_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path, max_length: int) -> None:
    """Save the tokenizer and record truncation and the pad token in tokenizer.json itself, so the
    serving runtime (``tokenizers`` only, no transformers) needs nothing else to batch."""
    tokenizer.save_pretrained(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise TeacherError(f"{folder}: the tokenizer did not save a tokenizer.json")
    if tokenizer.pad_token_id is None:
        raise TeacherError(f"{folder}: the tokenizer has no pad token")
    fast = Tokenizer.from_file(str(path))
    fast.enable_truncation(max_length)
    fast.enable_padding(pad_id=int(tokenizer.pad_token_id), pad_token=str(tokenizer.pad_token))
    fast.save(str(path))


def _check_texts(config: RunConfig) -> list[str]:
    """Dev texts with the longest ones first, so the check covers long and short inputs."""
    texts = load_split(config.run_dir, "dev").texts
    by_length = sorted(texts, key=len, reverse=True)
    return by_length[: CHECK_TEXTS // 2] + texts[: CHECK_TEXTS // 2]


def _check_export(
    root: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int
) -> float:
    runtime = TeacherRuntime.load(root, RuntimeOptions(threads=torch.get_num_threads()))
    expected = predict_logits(model, tokenizer, texts, 16, max_length)
    got = runtime.logits(texts, batch_size=16)
    diff = float(np.abs(got - expected).max()) if texts else 0.0
    if not diff <= EXPORT_ATOL:
        raise TeacherError(
            f"{root / TEACHER_ONNX}: ONNX logits differ from PyTorch by {diff:.2e} "
            f"(> {EXPORT_ATOL}); refusing to publish the export"
        )
    return diff


def _manifest_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in ("dev_acc", "test_acc", "best_epoch", "epochs", "finetuned") if k in metrics}


def _already_exported(config: RunConfig, metrics: dict[str, Any]) -> bool:
    """The same fine-tuned teacher (same metrics, same settings) is exported and intact: skip."""
    try:
        manifest = load_teacher_manifest(config.teacher_dir)
        verify_teacher(config.teacher_dir, manifest)
    except ModelFormatError:
        return False
    current = config.to_dict()
    return bool(
        manifest.metrics == _manifest_metrics(metrics)
        and same_teacher_settings(manifest.config.get("teacher"), current["teacher"])
        and all(manifest.config.get(k) == current[k] for k in ("labeling", "seed"))
    )


def same_teacher_settings(recorded: Any, current: dict[str, Any]) -> bool:
    """The recorded [teacher] table is the current one; a key added since it was written (e.g.
    ``finetune``) counts as the same when the current value is its default, so an older export is
    not redone for nothing."""
    if not isinstance(recorded, dict) or not set(recorded) <= set(current):
        return False
    defaults = TeacherConfig().model_dump()
    return all(recorded.get(k, defaults.get(k)) == v for k, v in current.items())


def export_teacher(config: RunConfig) -> Path:
    """Export ``<run_dir>/teacher/model`` to ``config.teacher_dir``; returns that folder."""
    source = config.run_dir / TEACHER_DIR / MODEL_SUBDIR
    if not (source / "config.json").is_file():
        raise TeacherError(f"{source}: no fine-tuned teacher; run the teacher step first")
    metrics = config.run_folder.teacher_metrics()
    if _already_exported(config, metrics):
        return config.teacher_dir
    tokenizer, model = load_classifier(source)
    labels = load_label_names(config.run_dir)
    # The saved model's own id2label (a checkpoint used as is keeps the one it came with), not a copy of
    # labels.json: a mismatch here means the logit columns would be read under the wrong names.
    if label_names(model.config) != labels:
        raise TeacherError(f"{source}: the model's labels {label_names(model.config)} are not labels.json's {labels}")
    # One length per teacher: the one it was fine-tuned and evaluated at (and labels the corpus at).
    max_length = min(config.teacher.max_length, max_input_tokens(model.config))
    names = input_names(tokenizer)
    texts = _check_texts(config)
    final = config.teacher_dir
    with torch_threads(config.teacher.threads), atomic_dir(final) as tmp:
        export_onnx(model, tokenizer, names, tmp / TEACHER_ONNX, max(texts, key=len))
        save_serving_tokenizer(tokenizer, tmp / TEACHER_TOKENIZER_DIR, max_length)
        tokenizer_files = (tmp / TEACHER_TOKENIZER_DIR).rglob("*")
        files = [TEACHER_ONNX, *sorted(p.relative_to(tmp).as_posix() for p in tokenizer_files if p.is_file())]
        manifest = TeacherManifest(
            name=final.name,
            labels=labels,
            max_length=max_length,
            input_names=names,
            base_model=base_model_name(config.teacher.base_model),
            files=[file_entry(tmp, f) for f in files],
            metrics=_manifest_metrics(metrics),
            config=json.loads(json.dumps(config.to_dict())),
            created_at=now_iso(),
        )
        write_manifest(tmp, manifest)
        _check_export(tmp, model, tokenizer, texts, max_length)
    return final
