"""The data stage: a task's labeled splits and its transfer corpus, written as plain files for later steps.

What ``prepare_data`` writes into ``<run_dir>/data`` (read back by ``training.data.task_data``):
- ``labels.json``: the label names; a label's index is its position (sorted names, or the checkpoint's
  ``id2label`` order with ``teacher.finetune = false``);
- ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``: one ``{"text": str, "label": int}`` per line (the
  training texts cut to a seeded ``data.max_train_texts`` when set);
- ``corpus.txt``: the transfer corpus, one text per line: the training texts first (always all of
  them), then the task's transfer corpora (``data.transfer``, default the task's recipe, see
  ``training.data.tasks``), then the user's corpus files, then any word-window augmentation; exact
  duplicates dropped, and every text whose *normalized* form equals a dev or test text's dropped (the
  leak rule: the same snippet recurs across sources with other casing and punctuation); cut to
  ``data.max_corpus_texts``;
- ``stats.json``: counts, the dropped texts among them; the done marker (``training.stages.run_folder``):
  written last, the data config and input fingerprints used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from training.config import DataConfig, RunConfig
from training.data.task_data import SPLITS, DataError, LabeledSet, TaskData, iter_unlabeled, load_labeled_files
from training.data.tasks import CORPORA, TASKS, normalized
from training.progress import track
from training.stages.run_folder import clear_done, fingerprint, is_done, without_late_defaults, write_done
from training.stages.teacher_checkpoint import checkpoint_label_names, label_order, resolve_base_model


def _write_atomic(path: Path, lines: Iterable[str]) -> int:
    """Writes lines (each ending with a newline) to a temporary file, then renames it into place."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left only when writing failed (e.g. a bad corpus file)
    return count


def _write_json(path: Path, value: Any) -> None:
    _write_atomic(path, [json.dumps(value, indent=2, ensure_ascii=False) + "\n"])


def _jsonl_lines(data: LabeledSet) -> Iterator[str]:
    for text, label in zip(data.texts, data.labels, strict=True):
        yield json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class _CorpusBuilder:
    """Dedups the corpus stream by 16-byte blake2b digests of the texts and keeps the counts.

    Memory grows with the distinct texts: about 90 bytes each in a Python set (a 16-byte digest plus
    object and slot overhead), so 10M texts take about 1 GB. Collisions are negligible (2**-128 per
    pair). Dev and test texts are kept out, compared in normalized form, so the teacher never labels an
    evaluation text (nor its re-punctuated copy from another source) for the student.
    """

    def __init__(self, held_out: Iterable[str], limit: int) -> None:
        self.held_out = {_digest(normalized(t)) for t in held_out}
        self.seen: set[bytes] = set()
        self.limit = limit  # 0 = no limit
        self.counts: Counter[str] = Counter()

    @property
    def full(self) -> bool:
        return 0 < self.limit <= len(self.seen)

    def lines(self, source: str, texts: Iterable[str], always: bool = False) -> Iterator[str]:
        """New texts of a source as lines; ``always`` (the training texts) ignores the limit and the
        dev/test filter. Stops reading the source once the limit is reached."""
        for text in texts:
            if self.full and not always:
                self.counts["truncated"] = 1
                return
            key = _digest(text)
            if key in self.seen:
                self.counts["duplicates_dropped"] += 1
            elif not always and _digest(normalized(text)) in self.held_out:
                self.counts["dev_test_texts_dropped"] += 1
            else:
                self.seen.add(key)
                self.counts[source] += 1
                yield text + "\n"


def transfer_corpora(config: DataConfig) -> list[str]:
    """The built-in transfer corpora of a run, by name: ``data.transfer``, else the task's recipe."""
    if config.transfer is not None:
        return list(config.transfer)
    return list(TASKS[config.source].transfer) if config.source in TASKS else []


def _corpus_sources(config: DataConfig) -> Iterator[tuple[str, Iterable[str]]]:
    for name in transfer_corpora(config):
        yield name, CORPORA[name](Path(config.cache_dir))
    for name in config.corpus:
        yield f"file:{name}", iter_unlabeled(Path(name))


def word_windows(text: str, count: int, min_words: int, rng: random.Random) -> list[str]:
    """``count`` random contiguous word windows of ``text``, each shorter than the text itself."""
    words = text.split(" ")
    if count <= 0 or len(words) <= min_words:
        return []
    out = []
    for _ in range(count):
        length = rng.randint(min_words, len(words) - 1)
        start = rng.randint(0, len(words) - length)
        out.append(" ".join(words[start : start + length]))
    return out


def _write_corpus(path: Path, config: DataConfig, task: TaskData, seed: int = 0) -> dict[str, int]:
    builder = _CorpusBuilder([*task.dev.texts, *task.test.texts], config.max_corpus_texts)

    def sources() -> list[tuple[str, Iterable[str]]]:
        return [("train_texts", task.train.texts), *_corpus_sources(config)]

    def stream() -> Iterator[str]:
        for source, texts in sources():
            if builder.full:
                builder.counts["truncated"] = 1
                break
            yield from builder.lines(source, texts, always=source == "train_texts")
        if config.augment_windows <= 0:
            return
        # Windows come after every original text, so growing the augmentation only appends to the
        # corpus and the teacher labels of the original texts (by shard digest) stay valid.
        rng = random.Random(seed)
        for _, texts in sources():
            for text in texts:
                if builder.full:
                    return
                windows = word_windows(text, config.augment_windows, config.augment_min_words, rng)
                yield from builder.lines("augmented_windows", windows)
    lines = track(stream(), desc="corpus", unit=" texts")
    total = _write_atomic(path, lines)
    return {"texts": total, **builder.counts}


def _inputs_fingerprint(config: DataConfig) -> dict[str, list[int]]:
    """Size and mtime of the user's files, so editing a file (not only the config) redoes the stage."""
    labeled = [config.train, config.dev, config.test] if config.source == "files" else []
    found: dict[str, list[int]] = {}
    for name in filter(None, [*labeled, *config.corpus]):
        try:
            stat = Path(name).stat()
        except OSError as exc:
            raise DataError(f"{name}: cannot read: {exc.strerror}") from exc
        found[name] = [stat.st_size, stat.st_mtime_ns]
    return found


def _load_task(config: DataConfig) -> TaskData:
    if config.source in TASKS:
        return TASKS[config.source].load(Path(config.cache_dir))
    return load_labeled_files(
        Path(config.train), Path(config.dev), Path(config.test) if config.test else None
    )


def checkpoint_labels(config: RunConfig) -> list[str] | None:
    """The label order fixed by a teacher used as it is (``teacher.finetune = false``), else None."""
    if config.teacher.finetune:
        return None
    return checkpoint_label_names(resolve_base_model(config.teacher.base_model, Path(config.data.cache_dir)))


def in_label_order(task: TaskData, names: list[str], where: str) -> TaskData:
    """The task with its labels renumbered to ``names``' order (the same names; else a TeacherError)."""
    new_index = label_order(names, task.label_names, where)

    def renumber(data: LabeledSet) -> LabeledSet:
        return LabeledSet(list(data.texts), [new_index[label] for label in data.labels])

    return TaskData(list(names), renumber(task.train), renumber(task.dev), renumber(task.test))


def prepare_data(config: RunConfig) -> Path:
    """Writes the data stage of a run into ``<run_dir>/data`` and returns that folder.

    Skipped when the done marker records the same data config and input files; otherwise the marker is
    removed first and written last, so a crash in between is redone, never mistaken for complete.
    With ``teacher.finetune = false`` the labels take the checkpoint's order (``id2label``), matched
    by name, so the teacher's logit columns, the student and the manifests all share it.
    """
    out = config.run_folder.data
    settings = without_late_defaults(config.data.model_dump(), {"max_train_texts": 0})
    marker: dict[str, Any] = {"data": settings, "inputs": _inputs_fingerprint(config.data)}
    model_labels = checkpoint_labels(config)
    if model_labels is not None:  # only then, so the keys of earlier runs stay valid
        marker["label_order"] = model_labels
    key = fingerprint(marker)
    if is_done(out, key):
        return out
    out.mkdir(parents=True, exist_ok=True)
    clear_done(out)
    task = _load_task(config.data)
    task = dataclasses.replace(task, train=task.train.sample(config.data.max_train_texts, config.seed))
    if model_labels is not None:
        task = in_label_order(task, model_labels, f"teacher.base_model {config.teacher.base_model}")
    _write_json(out / "labels.json", task.label_names)
    stats: dict[str, Any] = {"labels": task.label_names}
    for name in SPLITS:
        data: LabeledSet = getattr(task, name)
        _write_atomic(out / f"{name}.jsonl", _jsonl_lines(data))
        per_label = Counter(data.labels)
        stats[name] = {
            "texts": len(data),
            "per_label": {n: per_label[i] for i, n in enumerate(task.label_names)},
        }
    stats["corpus"] = _write_corpus(out / "corpus.txt", config.data, task, config.seed)
    _write_json(out / "stats.json", stats)
    write_done(out, key, marker)
    return out


