"""The router's slice of the transfer corpus: texts the teacher labeled that distillation never sees.

The cascade router (``training.stages.router``, ``sdcore.router``) learns where the student disagrees with the
teacher. Dev (a few hundred texts) is too small for that, but the transfer corpus already carries the
teacher's logits for tens of thousands of texts: a slice of it, kept out of KD, is a large sample of
exactly the disagreement the router must predict.

The slice is a pure function of the corpus file and two settings (``distill.router_holdout``, the
share, and ``distill.router_holdout_max``, the cap), so the KD step and the cascade step compute it
alike and it needs no file of its own:

- a text is in it when a salted sha1 of its *normalized* form (``training.data.tasks.normalized``) falls
  below the share; the salt keeps it independent of the split hashes (``hash_split``), and the
  normalized form sends every copy of a snippet (other casing or punctuation) to the same side;
- never a training text, nor a copy of one (they are the labeled set FT trains on), nor a dev or test
  text (the data stage drops those already; checked again here);
- above the cap, the texts with the smallest hashes are kept (still deterministic);
- with word-window augmentation (``data.augment_windows``), the windows (the corpus's last texts) are
  never in it: they are fragments, not texts a user sends; and every window of a slice text is left
  out of KD too, as it would show the student the slice text's own words.

The vocabulary is still counted over the whole corpus: it uses no teacher label, and counting it again
would change the features of every other text. The slice's coverage is therefore a little higher than
that of truly new text; the router's check on dev and test (which the vocabulary never saw) shows it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from training.config import RunConfig
from training.data.tasks import normalized

SALT = "sd-router-holdout/1:"
IntArray = npt.NDArray[np.int64]


def holdout_key(text: str) -> float:
    """The text's place in [0, 1): the salted sha1 of its normalized form, as a fraction."""
    digest = hashlib.sha1((SALT + normalized(text)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class CorpusSplit:
    """Corpus row indices (ascending): the router's slice, and the rows KD trains on."""

    holdout: IntArray
    kd: IntArray
    windows_dropped: int  # augmentation windows of slice texts, in neither

    @property
    def total(self) -> int:
        return int(self.holdout.size + self.kd.size + self.windows_dropped)


def split_corpus(texts: list[str], fraction: float, cap: int, excluded: set[str],
                 window_min_words: int = 0, originals: int | None = None) -> CorpusSplit:
    """The slice of ``texts`` (see the module docstring). ``excluded``: normalized texts never in it
    (training, dev and test texts); only the first ``originals`` texts can be in it (None: all);
    ``window_min_words`` > 0 also drops from KD the texts that are contiguous word windows of at least
    that many words of a slice text."""
    candidates: list[tuple[float, int]] = []
    if fraction > 0 and cap > 0:
        for i, text in enumerate(texts[:originals]):
            key = holdout_key(text)
            if key < fraction and normalized(text) and normalized(text) not in excluded:
                candidates.append((key, i))
    candidates.sort()
    holdout = np.array(sorted(i for _, i in candidates[:cap]), dtype=np.int64)
    in_holdout = np.zeros(len(texts), dtype=bool)
    in_holdout[holdout] = True
    if window_min_words > 0 and holdout.size:
        spans = _word_windows({texts[i] for i in holdout}, window_min_words)
        dropped = np.array([not in_holdout[i] and t in spans for i, t in enumerate(texts)], dtype=bool)
    else:
        dropped = np.zeros(len(texts), dtype=bool)
    kd = np.flatnonzero(~in_holdout & ~dropped).astype(np.int64)
    return CorpusSplit(holdout, kd, int(dropped.sum()))


def _word_windows(texts: set[str], min_words: int) -> set[str]:
    """Every contiguous run of at least ``min_words`` words of each text, shorter than the text (as
    ``training.stages.data_stage.word_windows`` cuts them)."""
    out: set[str] = set()
    for text in texts:
        words = text.split(" ")
        for length in range(min_words, len(words)):
            out.update(" ".join(words[s : s + length]) for s in range(len(words) - length + 1))
    return out


def corpus_split(config: RunConfig) -> CorpusSplit:
    """The run's split of the corpus texts it trains on (the first ``distill.corpus_texts`` when set)."""
    from training.data.task_data import iter_corpus, load_split

    texts = [t for chunk in iter_corpus(config.run_dir, 50_000, config.distill.corpus_texts) for t in chunk]
    excluded = {normalized(t) for split in ("train", "dev", "test") for t in load_split(config.run_dir, split).texts}
    d = config.distill
    windows = config.data.augment_min_words if config.data.augment_windows > 0 else 0
    return split_corpus(texts, d.router_holdout, d.router_holdout_max, excluded, windows, _originals(config))


def _originals(config: RunConfig) -> int | None:
    """How many corpus texts come before the augmentation windows (data/stats.json; None: all)."""
    path = config.run_folder.data / "stats.json"
    if not path.is_file():
        return None
    corpus = json.loads(path.read_text(encoding="utf-8")).get("corpus", {})
    windows = int(corpus.get("augmented_windows", 0))
    return int(corpus["texts"]) - windows if windows and "texts" in corpus else None


def holdout_texts(config: RunConfig, split: CorpusSplit) -> list[str]:
    from training.data.task_data import iter_corpus

    wanted = set(split.holdout.tolist())
    out: list[str] = []
    index = 0
    for chunk in iter_corpus(config.run_dir, 50_000, config.distill.corpus_texts):
        out.extend(t for j, t in enumerate(chunk, index) if j in wanted)
        index += len(chunk)
    return out
