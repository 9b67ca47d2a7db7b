"""Step 2 of Sparse Distillation: the teacher labels every text of the transfer corpus with its logits.

The paper stores the teacher's logits as float32 arrays (DESIGN.md section 1). The corpus is streamed
(``training.data.iter_corpus``) in shards of ``labeling.shard_size`` texts; each shard is written
atomically as ``<run_dir>/labels/logits-NNNNN.npy`` [texts, labels] float32, so an interrupted run
resumes at the first missing shard. Each shard has a ``.sha256`` sidecar, the digest of the texts it
labels, so a shard is reused only for exactly the same texts (a corpus grown at the end keeps its
earlier shards). ``meta.json`` records what the labels depend on (teacher weights, truncation length,
shard size); when that changes, old shards are discarded rather than mixed with new ones.
``done.json`` is written last, and ``load_teacher_logits`` requires it.

Backends: ``"onnx"`` runs the exported teacher (``config.teacher_dir``) through the serving runtime;
``"torch"`` runs ``<run_dir>/teacher/model``. Both batch texts of similar token length together.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sdcore.atomic import atomic_save_npy, atomic_write_bytes, atomic_write_json
from sdcore.model_format import TEACHER_ONNX, sha256_of
from service.runtime import RuntimeOptions
from service.teacher_runtime import TeacherRuntime
from training.config import RunConfig
from training.data import count_corpus, iter_corpus, load_label_names

LABELS_DIR = "labels"
META_FILE = "meta.json"
DONE_FILE = "done.json"

Progress = Callable[[int], object]


class LabelingError(RuntimeError):
    """Labels that cannot be produced or read; the message names the file."""


def shard_path(out: Path, index: int) -> Path:
    return out / f"logits-{index:05d}.npy"


@dataclass
class _Teacher:
    labels: list[str]
    identity: dict[str, Any]  # what the logits depend on; a change invalidates existing shards
    logits: Callable[[list[str], Progress], np.ndarray]


def _onnx_teacher(config: RunConfig) -> _Teacher:
    runtime = TeacherRuntime.load(config.teacher_dir, RuntimeOptions(threads=config.teacher.threads or None))
    exported_with = runtime.manifest.config.get("teacher", {}).get("max_length")
    if exported_with is not None and exported_with != config.teacher.max_length:
        raise LabelingError(
            f"{config.teacher_dir}: exported for teacher.max_length {exported_with}, the config says "
            f"{config.teacher.max_length}; export the teacher again (run the teacher-export step)"
        )
    onnx = next(e for e in runtime.manifest.files if e.path == TEACHER_ONNX)
    batch_size = config.labeling.batch_size
    return _Teacher(
        labels=runtime.labels,
        identity={"backend": "onnx", "model_sha256": onnx.sha256, "max_length": runtime.max_length},
        logits=lambda texts, progress: runtime.logits(texts, batch_size, progress),
    )


def _torch_teacher(config: RunConfig) -> _Teacher:
    from training.teacher import (
        MODEL_SUBDIR,
        TEACHER_DIR,
        label_names,
        load_classifier,
        max_input_tokens,
        predict_logits,
        torch_threads,
    )

    folder = config.run_dir / TEACHER_DIR / MODEL_SUBDIR
    weights = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    if not weights:
        raise LabelingError(f"{folder}: no model weights; fine-tune the teacher first")
    tokenizer, model = load_classifier(folder)
    max_length = min(config.teacher.max_length, max_input_tokens(model.config))
    batch_size = config.labeling.batch_size
    labels = label_names(model.config)

    def logits(texts: list[str], progress: Progress) -> np.ndarray:
        with torch_threads(config.teacher.threads):
            return predict_logits(model, tokenizer, texts, batch_size, max_length, progress)

    return _Teacher(
        labels=labels,
        identity={
            "backend": "torch",
            "weights_sha256": {p.name: sha256_of(p) for p in weights},
            "max_length": max_length,
        },
        logits=logits,
    )


def _exact_chunks(chunks: Iterable[list[str]], size: int) -> Iterator[list[str]]:
    """Shards of exactly ``size`` texts (the last one shorter), whatever chunks the reader gives."""
    buffer: list[str] = []
    for chunk in chunks:
        buffer.extend(chunk)
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if buffer:
        yield buffer


def texts_digest(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def digest_path(shard: Path) -> Path:
    return shard.with_suffix(".sha256")


def _shard_is_complete(path: Path, texts: list[str], width: int) -> bool:
    """A shard is reused only when its sidecar digest says it labels exactly these texts.

    The digest is checked per shard, not per corpus file, so a corpus that grows at the end (e.g.
    augmentation appended) keeps every shard whose texts did not change.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        recorded = digest_path(path).read_text(encoding="utf-8").strip()
    except (OSError, ValueError):
        return False
    return bool(array.shape == (len(texts), width) and array.dtype == np.float32
                and recorded == texts_digest(texts))


def _prepare_folder(out: Path, meta: dict[str, Any]) -> None:
    """Keep existing shards only when they were made by the same teacher on the same corpus."""
    meta_path = out / META_FILE
    if out.is_dir():
        try:
            same = json.loads(meta_path.read_text(encoding="utf-8")) == meta
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".*.tmp-*"):  # a shard being written when the last run was killed
        leftover.unlink()
    (out / DONE_FILE).unlink(missing_ok=True)
    atomic_write_json(meta_path, meta)


def label_corpus(config: RunConfig) -> Path:
    """Label the whole transfer corpus with the teacher's logits; returns ``<run_dir>/labels``.

    Shards already on disk with the right shape (and the same ``meta.json``) are kept, so a rerun
    after an interruption only labels what is missing.
    """
    started = time.perf_counter()
    run_dir = config.run_dir
    out = run_dir / LABELS_DIR
    teacher = _onnx_teacher(config) if config.labeling.backend == "onnx" else _torch_teacher(config)
    expected_labels = load_label_names(run_dir)
    if teacher.labels != expected_labels:
        raise LabelingError(f"the teacher's labels {teacher.labels} are not labels.json's {expected_labels}")
    width = len(teacher.labels)
    shard_size = config.labeling.shard_size
    meta = {
        "teacher": teacher.identity,
        "labels": teacher.labels,
        "shard_size": shard_size,
    }
    _prepare_folder(out, meta)

    total = count_corpus(run_dir)
    texts_done = shards = computed = labeled = 0
    with tqdm(total=total, desc="label corpus", unit=" texts", mininterval=1.0, disable=None) as bar:
        for index, texts in enumerate(_exact_chunks(iter_corpus(run_dir, shard_size), shard_size)):
            path = shard_path(out, index)
            if not _shard_is_complete(path, texts, width):
                logits = teacher.logits(texts, bar.update)
                atomic_save_npy(path, np.ascontiguousarray(logits, dtype=np.float32))
                atomic_write_bytes(digest_path(path), (texts_digest(texts) + "\n").encode("utf-8"))
                computed += 1
                labeled += len(texts)
            else:
                bar.update(len(texts))
            shards += 1
            texts_done += len(texts)
    for stale in [*out.glob("logits-*.npy"), *out.glob("logits-*.sha256")]:  # from a longer corpus
        if int(stale.stem.split("-")[1]) >= shards:
            stale.unlink()
    if texts_done != total:
        raise LabelingError(f"{run_dir / 'data' / 'corpus.txt'}: read {texts_done} texts, counted {total}")
    seconds = time.perf_counter() - started
    atomic_write_json(
        out / DONE_FILE,
        {
            "texts": texts_done,
            "shards": shards,
            "shard_size": shard_size,
            "labels": teacher.labels,
            "teacher": teacher.identity,
            "computed_shards": computed,
            "texts_labeled": labeled,
            "seconds": round(seconds, 2),
            "texts_per_second": round(labeled / seconds, 1) if seconds > 0 else None,
        },
    )
    return out


def load_teacher_logits(run_dir: Path) -> np.ndarray:
    """All teacher logits [corpus texts, labels] float32, in corpus order."""
    out = Path(run_dir) / LABELS_DIR
    done_path = out / DONE_FILE
    if not done_path.is_file():
        raise LabelingError(f"{done_path}: missing; the corpus is not (completely) labeled")
    done = json.loads(done_path.read_text(encoding="utf-8"))
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
