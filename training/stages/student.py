"""The student of the paper: a deep averaging network (DAN) over n-gram embeddings.

embedding lookup -> mean pooling -> Linear -> ReLU -> Linear -> logits (DESIGN.md section 1.4).
The table is an ``EmbeddingBag`` with sparse gradients, so a step only touches the rows of its batch;
that is what makes a 1M x 1000 table trainable on a CPU. With subwords (featurizer spec v2) the mean is
weighted: a bag carries each row's weight (1, or 1/m for one of a word's m subwords) and pools to the
weighted sum over its weights' total (sdcore/spec.py, step 13).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from sdcore.featurizer import NgramFeaturizer


class Head(nn.Module):
    """Pooled vector -> logits. Exported alone to ONNX as ``head.onnx``."""

    def __init__(self, embedding_dim: int, hidden_dim: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = nn.Linear(embedding_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.dropout(pooled))))


class DAN(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embedding_dim, mode="mean", sparse=True)
        # fairseq's embedding init (the authors' code base): N(0, dim**-0.5).
        nn.init.normal_(self.embedding.weight, mean=0.0, std=embedding_dim**-0.5)
        self.head = Head(embedding_dim, hidden_dim, num_labels, dropout)

    def pool(self, rows: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of each bag's rows; with ``weights`` (already divided by each bag's total), their sum."""
        if weights is None:
            return self.embedding(rows, offsets)
        return F.embedding_bag(rows, self.embedding.weight, offsets, mode="sum", sparse=True,
                               per_sample_weights=weights)

    def forward(self, rows: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pool(rows, offsets, weights))

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.weight]  # type: ignore[list-item]

    def dense_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


@dataclass
class Bags:
    """Texts as bags of rows: ``rows`` flat, ``offsets[i]`` where text i starts (EmbeddingBag inputs)."""

    rows: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32] | None = None  # spec v2: each row's weight in its bag's mean

    def __len__(self) -> int:
        return int(self.offsets.size)

    def owners(self) -> npt.NDArray[np.int64]:
        """The bag of each row."""
        lengths = np.diff(np.append(self.offsets, self.rows.size))
        return np.repeat(np.arange(len(self), dtype=np.int64), lengths)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The model's inputs: rows and offsets, and for weighted bags the weights over each bag's total."""
        rows, offsets = torch.from_numpy(self.rows), torch.from_numpy(self.offsets)
        if self.weights is None:
            return rows, offsets
        owner = self.owners()
        total = np.bincount(owner, weights=self.weights, minlength=len(self))
        share = (self.weights / np.maximum(total, 1e-30)[owner]).astype(np.float32)
        return rows, offsets, torch.from_numpy(share)


def featurize_bags(featurizer: NgramFeaturizer, texts: list[str]) -> Bags:
    occ = featurizer.occurrences(texts)
    return Bags(occ.rows.astype(np.int64), occ.offsets(), occ.weights)


def select_bags(rows: np.ndarray, offsets: np.ndarray, index: npt.NDArray[np.int64],
                weights: np.ndarray | None = None) -> Bags:
    """Bags of the texts ``index`` out of a flat store (``offsets`` has one more entry than texts; ``weights``
    beside ``rows`` for a weighted store)."""
    starts = offsets[index].astype(np.int64)
    lengths = offsets[index + 1].astype(np.int64) - starts
    new_offsets = np.concatenate(([0], np.cumsum(lengths)))[:-1].astype(np.int64)  # none for no text
    total = int(lengths.sum())
    # positions = start of each bag repeated, plus the rank inside the bag: no per-text loop.
    within = np.arange(total, dtype=np.int64) - np.repeat(new_offsets, lengths)
    positions = np.repeat(starts, lengths) + within
    picked = None if weights is None else np.asarray(weights[positions], dtype=np.float32)
    return Bags(np.asarray(rows[positions], dtype=np.int64), new_offsets, picked)


def drop_features(bags: Bags, rate: float, rng: np.random.Generator) -> Bags:
    """Feature dropout (paper: 0.1): each n-gram occurrence is dropped with probability ``rate``."""
    if rate <= 0.0 or bags.rows.size == 0:
        return bags
    keep = rng.random(bags.rows.size) >= rate
    owner = bags.owners()
    kept = np.bincount(owner[keep], minlength=len(bags))
    return Bags(bags.rows[keep], np.concatenate(([0], np.cumsum(kept)[:-1])).astype(np.int64),
                None if bags.weights is None else bags.weights[keep])


@torch.no_grad()
def predict_logits(model: DAN, bags: Bags, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for lo in range(0, len(bags), batch_size):
        index = np.arange(lo, min(lo + batch_size, len(bags)), dtype=np.int64)
        offsets_full = np.append(bags.offsets, bags.rows.size)
        part = select_bags(bags.rows, offsets_full, index, bags.weights)
        out.append(model(*part.tensors()).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head.out.out_features), dtype=np.float32)
