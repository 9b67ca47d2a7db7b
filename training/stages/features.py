"""The transfer corpus as bags of vocabulary rows, streamed to disk once and memory-mapped for training.

Files under ``run_dir/features/``: ``rows.bin`` (int32 rows of every text, concatenated, appended chunk
by chunk), ``offsets.npy`` (int64, one more entry than texts), and the step's done marker
(``training.stages.run_folder``) with the texts, occurrences and mean coverage. The shared featurizer is
used, so these rows are exactly what the served student computes for the same text.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdcore.featurizer import NgramFeaturizer
from training.progress import progress
from training.stages.run_folder import write_done


@dataclass
class FeatureStore:
    rows: np.ndarray  # int32 memmap
    offsets: np.ndarray  # int64, texts + 1
    weights: np.ndarray | None = None  # float32 memmap beside rows: spec v2's row weights (None for v1)

    def __len__(self) -> int:
        return int(self.offsets.size - 1)


def featurize_corpus(
    featurizer: NgramFeaturizer, chunks: Iterable[Sequence[str]], out_dir: Path, key: str, total: int | None = None
) -> FeatureStore:
    """Featurize the corpus into ``out_dir`` (assembled beside it, renamed into place); ``key`` is the
    fingerprint its done marker records."""
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    offsets = [np.zeros(1, dtype=np.int64)]
    written = 0
    coverage_sum = 0.0
    texts_seen = 0
    weighted = featurizer.settings.subwords
    with (tmp / "rows.bin").open("wb") as fh, (tmp / "weights.bin").open("wb") as wh, \
            progress(total=total, desc="featurize corpus", unit="text") as bar:
        for texts in chunks:
            occ = featurizer.occurrences(list(texts))
            occ.rows.astype(np.int32).tofile(fh)
            if weighted and occ.weights is not None:
                occ.weights.astype(np.float32).tofile(wh)
            offsets.append(written + np.cumsum(occ.found))
            written += int(occ.rows.size)
            coverage_sum += float(occ.coverage.sum())
            texts_seen += len(texts)
            bar.update(len(texts))
    if not weighted:
        (tmp / "weights.bin").unlink()
    np.save(tmp / "offsets.npy", np.concatenate(offsets))
    write_done(tmp, key, {"texts": texts_seen, "occurrences": written,
                          "mean_coverage": coverage_sum / max(texts_seen, 1)})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return open_features(out_dir)


def open_features(folder: Path) -> FeatureStore:
    offsets = np.load(folder / "offsets.npy")
    count = int(offsets[-1])
    rows = (
        np.memmap(folder / "rows.bin", dtype=np.int32, mode="r", shape=(count,))
        if count
        else np.zeros(0, dtype=np.int32)
    )
    weights = None
    if (folder / "weights.bin").is_file():
        weights = (np.memmap(folder / "weights.bin", dtype=np.float32, mode="r", shape=(count,)) if count
                   else np.zeros(0, dtype=np.float32))
    return FeatureStore(rows, offsets, weights)
