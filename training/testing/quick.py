"""Tiny real models in seconds, built with the real pipeline code: for tests, demos and benchmarks.

``make_tiny_student`` counts a vocabulary, trains a small DAN on labeled texts (cross-entropy) and
exports it with the real exporter, so a test of the service exercises the same files a full run makes.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sdcore.featurizer import FeaturizerSettings
from training.stages.distill import BagSource, TrainSpec, train_student
from training.stages.export import export_student
from training.stages.student import DAN, featurize_bags
from training.stages.vocab import build_vocab_from_chunks, load_vocab_featurizer


def make_tiny_student(
    out_dir: Path,
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    *,
    seed: int = 0,
    vocab_size: int = 2000,
    embedding_dim: int = 16,
    hidden_dim: int = 16,
    epochs: int = 8,
    dtype: Literal["float16", "float32"] = "float16",
    prune_top_k: int = 0,
    shard_rows: int = 512,
    settings: FeaturizerSettings | None = None,
) -> Path:
    """Train and export a small student on ``texts``; return ``out_dir``."""
    settings = settings or FeaturizerSettings()
    texts = list(texts)
    target = np.asarray(labels, dtype=np.int64)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="tiny-student-") as work:
        work_dir = Path(work)
        vocab = build_vocab_from_chunks(
            lambda: [texts], settings, vocab_size, work_dir / "vocab", partitions=2, memory_mb=16
        )
        featurizer = load_vocab_featurizer(work_dir / "vocab", settings)
        bags = featurize_bags(featurizer, texts)
        model = DAN(settings.table_rows(len(vocab.ngrams)), embedding_dim, hidden_dim, len(label_names), dropout=0.0)
        spec = TrainSpec(mode="scratch", epochs=epochs, batch_size=16, lr=2e-2, feature_dropout=0.0, seed=seed)
        train_student(model, spec, BagSource.from_bags(bags, target), bags, target, work_dir / "ckpt", "tiny")
        export_student(
            model,
            name=out_dir.name,
            labels=list(label_names),
            settings=settings,
            vocab_dir=work_dir / "vocab",
            out_dir=out_dir,
            dtype=dtype,
            prune_top_k=prune_top_k,
            shard_rows=shard_rows,
            metrics={"note": "tiny model for tests"},
            config={"tiny": True, "seed": seed, "vocab_size": vocab_size, "embedding_dim": embedding_dim},
        )
    return out_dir


def copy_model(src: Path, dst: Path) -> Path:
    """A private copy of a model folder (tests damage copies, never the shared fixture)."""
    shutil.copytree(src, dst)
    return dst
