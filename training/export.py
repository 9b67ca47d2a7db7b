"""Export a trained DAN as a student folder of the model repository (DESIGN.md section 3).

The folder is assembled in a temporary sibling and renamed into place (atomic). Shards are written one
row range at a time, so exporting a 1B-parameter table never holds a second copy of it in memory.
``dtype`` is "float16" (default), "float32" or "int8" (symmetric, one float32 scale per row, written
beside each shard as ``embeddings/scale-NNNNN.npy``: sdcore/quantize.py). Optional pruning keeps the K
most frequent n-grams (rows are numbered by corpus frequency), as the paper's pruning ablation does
after training.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdcore.quantize import quantize_rows
from service.featurizer import FeaturizerSettings, keys_of_ngram_strings
from service.model_format import (
    HEAD_FILE,
    SHARD_DTYPES,
    FeaturizerSpec,
    ShardEntry,
    StudentManifest,
    atomic_model_dir,
    file_entry,
    now_iso,
    read_ngrams,
    scale_name,
    shard_name,
    write_manifest,
    write_vocabulary,
)
from training.student import DAN, Head


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


def write_pruned_vocabulary(vocab_dir: Path, out: Path, keep: int) -> list[str]:
    """Vocabulary files for the first ``keep`` rows of ``vocab_dir`` (its rows are frequency-ordered)."""
    ngrams = read_ngrams(vocab_dir)[:keep]
    words = sorted({w for g in ngrams for w in g.split(" ")})
    word_ids = {w: i for i, w in enumerate(words)}
    keys = keys_of_ngram_strings(ngrams, word_ids)
    return write_vocabulary(out, words, keys, np.arange(len(ngrams), dtype=np.int64), ngrams)


def export_student(
    model: DAN,
    *,
    name: str,
    labels: list[str],
    settings: FeaturizerSettings,
    vocab_dir: Path,
    out_dir: Path,
    dtype: str = "float16",
    prune_top_k: int = 0,
    shard_rows: int = 262_144,
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    if dtype not in SHARD_DTYPES:
        raise ValueError(f"export dtype must be one of {SHARD_DTYPES}, got {dtype!r}")
    weight = model.embedding.weight.detach()
    vocab_size = int(weight.shape[0])
    keep = min(prune_top_k, vocab_size) if prune_top_k > 0 else vocab_size
    np_dtype = np.dtype(dtype)
    with atomic_model_dir(out_dir) as tmp:
        vocab_files = write_pruned_vocabulary(vocab_dir, tmp, keep)
        (tmp / "embeddings").mkdir()
        shards: list[ShardEntry] = []
        for index, start in enumerate(range(0, keep, shard_rows)):
            end = min(start + shard_rows, keep)
            relative = shard_name(index)
            block = weight[start:end].numpy()
            scale = None
            if dtype == "int8":
                codes, scales = quantize_rows(block)
                np.save(tmp / relative, codes)
                np.save(tmp / scale_name(index), scales)
                scale = file_entry(tmp, scale_name(index))
            else:
                np.save(tmp / relative, block.astype(np_dtype))
            entry = file_entry(tmp, relative)
            shards.append(ShardEntry(**entry.model_dump(), row_start=start, row_end=end, scale=scale))
        export_head(model.head, tmp / HEAD_FILE)
        manifest = StudentManifest(
            name=name,
            labels=labels,
            featurizer=FeaturizerSpec(**settings.to_dict()),
            vocab_size=keep,
            embedding_dim=int(weight.shape[1]),
            hidden_dim=model.head.hidden.out_features,
            shard_dtype=dtype,  # type: ignore[arg-type]
            shards=shards,
            vocab_files=[file_entry(tmp, f) for f in vocab_files],
            head=file_entry(tmp, HEAD_FILE),
            metrics=metrics or {},
            config=config or {},
            created_at=now_iso(),
        )
        write_manifest(tmp, manifest)
    return out_dir
