"""Coverage, the share of a text's word n-grams found in the vocabulary: one definition for the numpy
featurizer (``NgramOccurrences``) and the kernel (``Pooled``), for spec v1 and v2 alike (sdcore/spec.py)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def coverage_of(found: IntArray, total: IntArray, subwords: IntArray | None = None) -> npt.NDArray[np.float64]:
    """Word n-grams found over all word n-grams, per text (0.0 for a text with none); spec v2's subword
    rows (``subwords`` of the ``found`` rows) are not n-grams of the text and are left out."""
    words = found if subwords is None else found - subwords
    all_grams = total.astype(np.float64)
    return np.divide(words, all_grams, out=np.zeros_like(all_grams), where=total > 0)
