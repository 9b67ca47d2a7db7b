"""The student of the paper: a deep averaging network (DAN) over n-gram embeddings.

embedding lookup -> mean pooling -> Linear -> ReLU -> Linear -> logits (DESIGN.md section 1.4).
The table is an ``EmbeddingBag`` with sparse gradients, so a step only touches the rows of its batch;
that is what makes a 1M x 1000 table trainable on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
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

    def pool(self, rows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.embedding(rows, offsets)

    def forward(self, rows: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(rows, offsets))

    def sparse_parameters(self) -> list[nn.Parameter]:
        return [self.embedding.weight]  # type: ignore[list-item]

    def dense_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


@dataclass
class Bags:
    """Texts as bags of rows: ``rows`` flat, ``offsets[i]`` where text i starts (EmbeddingBag inputs)."""

    rows: npt.NDArray[np.int64]
    offsets: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.offsets.size)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.rows), torch.from_numpy(self.offsets)


def featurize_bags(featurizer: NgramFeaturizer, texts: list[str]) -> Bags:
    occ = featurizer.occurrences(texts)
    return Bags(occ.rows.astype(np.int64), occ.offsets())


def select_bags(rows: np.ndarray, offsets: np.ndarray, index: npt.NDArray[np.int64]) -> Bags:
    """Bags of the texts ``index`` out of a flat store (``offsets`` has one more entry than texts)."""
    starts = offsets[index].astype(np.int64)
    lengths = offsets[index + 1].astype(np.int64) - starts
    new_offsets = np.concatenate(([0], np.cumsum(lengths)))[:-1].astype(np.int64)  # none for no text
    total = int(lengths.sum())
    # positions = start of each bag repeated, plus the rank inside the bag: no per-text loop.
    within = np.arange(total, dtype=np.int64) - np.repeat(new_offsets, lengths)
    positions = np.repeat(starts, lengths) + within
    return Bags(np.asarray(rows[positions], dtype=np.int64), new_offsets)


def drop_features(bags: Bags, rate: float, rng: np.random.Generator) -> Bags:
    """Feature dropout (paper: 0.1): each n-gram occurrence is dropped with probability ``rate``."""
    if rate <= 0.0 or bags.rows.size == 0:
        return bags
    keep = rng.random(bags.rows.size) >= rate
    lengths = np.diff(np.append(bags.offsets, bags.rows.size))
    owner = np.repeat(np.arange(len(bags)), lengths)
    kept = np.bincount(owner[keep], minlength=len(bags))
    return Bags(bags.rows[keep], np.concatenate(([0], np.cumsum(kept)[:-1])).astype(np.int64))


@torch.no_grad()
def predict_logits(model: DAN, bags: Bags, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    for lo in range(0, len(bags), batch_size):
        index = np.arange(lo, min(lo + batch_size, len(bags)), dtype=np.int64)
        offsets_full = np.append(bags.offsets, bags.rows.size)
        part = select_bags(bags.rows, offsets_full, index)
        out.append(model(*part.tensors()).numpy())
    return np.concatenate(out) if out else np.zeros((0, model.head.out.out_features), dtype=np.float32)
