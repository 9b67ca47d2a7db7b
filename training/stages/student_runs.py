"""A run's students as the steps and the evaluation share them: the labeled sets as bags of vocabulary
rows, a fresh DAN of the run's shape, a trained stage loaded back from its checkpoint.

Both ``training.pipeline`` (which trains and exports) and ``training.stages.evaluate`` (which scores) import
this module; neither imports the other.
"""

from __future__ import annotations

import numpy as np
import torch

from training.config import RunConfig
from training.stages.distill import accuracy
from training.stages.student import DAN, Bags, featurize_bags
from training.stages.vocab import load_vocab_featurizer


def labeled_bags(config: RunConfig, split: str) -> tuple[Bags, np.ndarray]:
    """One labeled split featurized with the run's vocabulary, and its labels."""
    from training.data.task_data import load_split

    folder = config.run_folder
    folder.require("data")
    data = load_split(config.run_dir, split)
    featurizer = load_vocab_featurizer(folder.require("vocab"), config.vocab.featurizer_settings())
    return featurize_bags(featurizer, data.texts), np.asarray(data.labels, dtype=np.int64)


def new_student(config: RunConfig) -> DAN:
    """A DAN of the run's shape, seeded by the run's seed (the same initial weights every time)."""
    from training.data.task_data import load_label_names

    rows = config.vocab.featurizer_settings().table_rows(config.run_folder.vocab_size())  # + v2's subword buckets
    torch.manual_seed(config.seed)
    s = config.student
    return DAN(rows, s.embedding_dim, s.hidden_dim, len(load_label_names(config.run_dir)), s.dropout)


def final_stage(config: RunConfig) -> str:
    """The stage that is exported: KD+FT when fine-tuning is on, else KD."""
    return "ft" if config.finetune.enabled else "kd"


def has_stage(config: RunConfig, stage: str) -> bool:
    return config.run_folder.checkpoint(stage).is_file()


def load_stage(config: RunConfig, stage: str) -> DAN:
    """The best dev epoch of a trained stage, in eval mode."""
    config.run_folder.require(stage)
    model = new_student(config)
    model.load_state_dict(torch.load(config.run_folder.checkpoint(stage), weights_only=True))
    return model.eval()


def stage_accuracies(config: RunConfig, model: DAN) -> dict[str, float]:
    out = {}
    for split in ("dev", "test"):
        bags, labels = labeled_bags(config, split)
        out[f"{split}_acc"] = accuracy(model, bags, labels)
    return out
