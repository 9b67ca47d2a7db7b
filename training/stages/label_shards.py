"""The labels folder, kept by one bookkeeper for the local and the Ray labelers alike.

``<run_dir>/labels/`` holds the teacher's logits of the transfer corpus in shards of
``labeling.shard_size`` texts: ``logits-NNNNN.npy`` [texts, labels] float32, each with a ``.sha256``
sidecar, the digest of the texts it labels, so a shard is reused only for exactly the same texts (a
corpus grown at the end keeps its earlier shards). ``meta.json`` records what the labels depend on
(teacher identity, labels, shard size); when that changes, old shards are discarded rather than mixed
with new ones. The done marker is written last, and ``load_teacher_logits`` requires it.

``ShardBook`` does every part of that: preparing the folder, cutting the corpus into shards, telling
which are already done, writing one, removing stale ones, checking the counts and marking the step
done. An executor (``training.stages.labeling``: this process; ``training.scale.labeling``: Ray actors) only
maps a shard's texts to logits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdcore.atomic import atomic_save_npy, atomic_write_bytes, atomic_write_json
from sdcore.errors import ProjectError
from training.data.task_data import count_corpus, iter_corpus, load_label_names
from training.stages.run_folder import StepInputMissing, clear_done, fingerprint, read_done, write_done

LABELS_DIR = "labels"
META_FILE = "meta.json"


class LabelingError(ProjectError, RuntimeError):
    """Labels that cannot be produced or read; the message names the file."""


def shard_path(out: Path, index: int) -> Path:
    return out / f"logits-{index:05d}.npy"


def digest_path(shard: Path) -> Path:
    return shard.with_suffix(".sha256")


def texts_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def exact_chunks(chunks: Iterable[list[str]], size: int) -> Iterator[list[str]]:
    """Shards of exactly ``size`` texts (the last one shorter), whatever chunks the reader gives."""
    buffer: list[str] = []
    for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if buffer:
        yield buffer


@dataclass
class Shard:
    index: int
    texts: list[str]
    attempts: int = 0  # executors that lost it (Ray: its worker died)


class ShardBook:
    """The bookkeeping of one labeling of ``<run_dir>/labels`` by one teacher."""

    def __init__(self, run_dir: Path, labels: list[str], identity: dict[str, Any], shard_size: int) -> None:
        expected = load_label_names(run_dir)
        if labels != expected:
            raise LabelingError(f"the teacher's labels {labels} are not labels.json's {expected}")
        self.run_dir = run_dir
        self.out = run_dir / LABELS_DIR
        self.labels, self.identity, self.shard_size = labels, identity, shard_size
        self.meta = {"teacher": identity, "labels": labels, "shard_size": shard_size}
        self.width = len(labels)
        self.total = count_corpus(run_dir)
        self.shards_seen = self.texts_seen = 0

    def open(self) -> None:
        """Keep existing shards only when they were made by the same teacher on the same corpus."""
        meta_path = self.out / META_FILE
        if self.out.is_dir():
            try:
                same = json.loads(meta_path.read_text(encoding="utf-8")) == self.meta
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:
                shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        for leftover in self.out.glob(".*.tmp-*"):  # a shard being written when the last run was killed
            leftover.unlink()
        clear_done(self.out)
        atomic_write_json(meta_path, self.meta)

    def shards(self) -> Iterator[Shard]:
        """Every shard of the corpus in order (counted as they are read)."""
        for index, texts in enumerate(exact_chunks(iter_corpus(self.run_dir, self.shard_size), self.shard_size)):
            self.shards_seen += 1
            self.texts_seen += len(texts)
            yield Shard(index, texts)

    def is_complete(self, shard: Shard) -> bool:
        """A shard is reused only when its sidecar digest says it labels exactly these texts.

        The digest is checked per shard, not per corpus file, so a corpus that grows at the end (e.g.
        augmentation appended) keeps every shard whose texts did not change.
        """
        path = shard_path(self.out, shard.index)
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            recorded = digest_path(path).read_text(encoding="utf-8").strip()
        except (OSError, ValueError):
            return False
        return bool(array.shape == (len(shard.texts), self.width) and array.dtype == np.float32
                    and recorded == texts_digest(shard.texts))

    def write(self, shard: Shard, logits: np.ndarray) -> None:
        """A shard's logits, then the digest of its texts (a shard without its digest is redone)."""
        if logits.shape != (len(shard.texts), self.width):
            expected = (len(shard.texts), self.width)
            raise LabelingError(f"shard {shard.index}: logits {logits.shape}, expected {expected}")
        path = shard_path(self.out, shard.index)
        atomic_save_npy(path, np.ascontiguousarray(logits, dtype=np.float32))
        atomic_write_bytes(digest_path(path), (texts_digest(shard.texts) + "\n").encode("utf-8"))

    def finish(self, **facts: Any) -> Path:
        """Remove shards of a longer corpus, check every text was labeled, mark the step done."""
        for stale in [*self.out.glob("logits-*.npy"), *self.out.glob("logits-*.sha256")]:
            if int(stale.stem.split("-")[1]) >= self.shards_seen:
                stale.unlink()
        if self.texts_seen != self.total:
            raise LabelingError(f"{self.run_dir / 'data' / 'corpus.txt'}: read {self.texts_seen} texts, "
                                f"counted {self.total}")
        write_done(self.out, fingerprint(self.meta), {
            "texts": self.texts_seen, "shards": self.shards_seen, "shard_size": self.shard_size,
            "labels": self.labels, "teacher": self.identity, **facts,
        })
        return self.out


def load_teacher_logits(run_dir: Path) -> np.ndarray:
    """All teacher logits [corpus texts, labels] float32, in corpus order."""
    out = Path(run_dir) / LABELS_DIR
    done = read_done(out)
    if done is None:
        raise StepInputMissing(out, "label")
    parts = []
    for index in range(int(done["shards"])):
        path = shard_path(out, index)
        try:
            parts.append(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise LabelingError(f"{path}: cannot be read: {exc}") from exc
    width = len(done["labels"])
    logits = np.concatenate(parts) if parts else np.zeros((0, width), dtype=np.float32)
    corpus = count_corpus(Path(run_dir))
    if logits.shape != (corpus, width) or logits.shape[0] != done["texts"]:
        raise LabelingError(f"{out}: logits {logits.shape}, but the corpus has {corpus} texts and {width} labels")
    return logits
