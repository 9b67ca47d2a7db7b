"""Export a trained DAN as a student folder of the model repository (DESIGN.md section 3).

The format and its writer are ``sdcore.model_writer``; this module adds the torch side: the embedding
table as numpy row ranges and the head as ONNX. ``dtype`` is "float16" (default), "float32" or "int8"
(symmetric, one float32 scale per row, written beside each shard: sdcore/quantize.py).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from sdcore.featurizer import FeaturizerSettings
from sdcore.model_writer import write_student
from training.stages.student import DAN, Head


def export_head(head: Head, path: Path) -> None:
    """pooled [batch, dim] float32 -> logits [batch, labels], batch dynamic."""
    head = head.eval()
    dim = head.hidden.in_features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            head,
            (torch.zeros(2, dim),),
            str(path),
            input_names=["pooled"],
            output_names=["logits"],
            dynamic_axes={"pooled": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )


class _TensorRows:
    """A torch weight [rows, dim] read one row range at a time (no full numpy copy)."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight.detach()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.weight.shape)

    def rows(self, start: int, end: int) -> np.ndarray:
        return self.weight[start:end].numpy()


def export_student(
    model: DAN,
    *,
    name: str,
    labels: list[str],
    settings: FeaturizerSettings,
    vocab_dir: Path,
    out_dir: Path,
    dtype: Literal["float16", "float32", "int8"] = "float16",
    prune_top_k: int = 0,
    shard_rows: int = 262_144,
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    return write_student(
        out_dir, name=name, labels=labels, settings=settings, vocab_dir=vocab_dir,
        table=_TensorRows(model.embedding.weight), hidden_dim=model.head.hidden.out_features,
        write_head=lambda path: export_head(model.head, path), dtype=dtype, prune_top_k=prune_top_k,
        shard_rows=shard_rows, metrics=metrics, config=config,
    )
