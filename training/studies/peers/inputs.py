"""The one input file every peer reads: the run's splits, its teacher-labeled corpus and its base encoder.

``kd`` is what distillation saw, as hard labels: the teacher's argmax over the transfer corpus (the same
prefix the run's KD read, ``distill.corpus_texts``) followed by the gold training set. Dev and test
carry their labels because fastText, like the DAN, selects its setting on dev; test labels are for
scoring only and no peer reads them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sdcore.atomic import atomic_write_bytes
from training.config import RunConfig
from training.data.task_data import iter_corpus, load_label_names, load_split
from training.stages.label_shards import load_teacher_logits
from training.stages.teacher_checkpoint import resolve_base_model

INPUT_FILE = "input.json"


def peer_inputs(config: RunConfig, max_kd_texts: int = 0) -> dict[str, Any]:
    """The peers' inputs of a run whose data, teacher and label steps are done. ``max_kd_texts`` > 0 keeps
    the first that many corpus texts (a budget; the report says so)."""
    run_dir = config.run_dir
    limit = config.distill.corpus_texts
    if max_kd_texts:
        limit = min(limit, max_kd_texts) if limit else max_kd_texts
    corpus = [text for chunk in iter_corpus(run_dir, 8192, limit) for text in chunk]
    logits = load_teacher_logits(run_dir)[: len(corpus)]
    train, dev, test = (load_split(run_dir, name) for name in ("train", "dev", "test"))
    teacher_labels = [int(i) for i in logits.argmax(axis=1)]
    base = resolve_base_model(config.teacher.base_model, Path(config.data.cache_dir))
    return {
        "run": config.name,
        "labels": load_label_names(run_dir),
        "base": str(base.resolve()),
        "seed": config.seed,
        "featurizer": asdict(config.vocab.featurizer_settings()),  # fastText reads the DAN's tokenization
        "train": {"texts": train.texts, "labels": train.labels},
        "kd": {"texts": [*corpus, *train.texts], "labels": [*teacher_labels, *train.labels],
               "corpus_texts": len(corpus)},
        "dev": {"texts": dev.texts, "labels": dev.labels},
        "test": {"texts": test.texts, "labels": test.labels},
    }


def write_peer_inputs(config: RunConfig, out_dir: Path, max_kd_texts: int = 0) -> tuple[Path, str]:
    """``out_dir/input.json`` and the digest of its bytes (a peer's result is reused for the same digest)."""
    data = json.dumps(peer_inputs(config, max_kd_texts), ensure_ascii=False, sort_keys=True).encode("utf-8")
    path = out_dir / INPUT_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path, hashlib.sha256(data).hexdigest()
