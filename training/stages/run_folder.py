"""The run folder contract: where every step's output lives, the one step-done marker, shared readers.

Steps talk only through these files (nanoGPT's stages do the same)::

    runs/<name>/
      data/       labels.json, {train,dev,test}.jsonl, corpus.txt, stats.json   (step data)
      teacher/    model/ (checkpoint + tokenizer), metrics.json                  (step teacher)
      labels/     logits-NNNNN.npy + .sha256, meta.json                          (step label)
      vocab/      words.txt, keys.npy, rows.npy, ngrams.txt                      (step vocab)
      features/   rows.bin, offsets.npy                                          (step features)
      table-init/ rows.npy: the table's start from the teacher (student.init)    (step table-init)
      student/    {kd,ft,scratch}-{best,last}.pt                                 (steps kd, ft, scratch)
      eval/       results.json                                                   (step evaluate)
      router-student/  kd/ft checkpoints, model/ (the shadow student)              (step router-student)
      run.json    wall time and peak memory of every invocation                  (training.stages.run_log)
    models/<name>, models/<name>-teacher                                         (export, teacher-export)

A step is done when its folder holds ``done.json`` (for the student stages ``<stage>-done.json``),
written last and holding a fingerprint of the step's inputs and config; a step whose fingerprint
changed is redone. A step whose inputs are missing raises ``StepInputMissing``, naming the step to
run first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sdcore.atomic import atomic_write_json, atomic_write_with
from sdcore.errors import ProjectError
from sdcore.model_format import MANIFEST

DONE = "done.json"

# The folder under the run folder each step writes (export and teacher-export write under models/).
STEP_FOLDERS = {"data": "data", "teacher": "teacher", "label": "labels", "vocab": "vocab",
                "features": "features", "table-init": "table-init", "kd": "student", "ft": "student",
                "scratch": "student", "evaluate": "eval"}
STUDENT_STAGES = ("kd", "ft", "scratch")


class StepInputMissing(ProjectError):
    """A step was run before the step that makes its input."""

    def __init__(self, path: Path, step: str) -> None:
        self.path, self.step = path, step
        super().__init__(f"{path}: missing (made by the {step} step)", hint=f"run `sd run {step}` first")


def fingerprint(*parts: Any) -> str:
    """A short digest of settings and input facts (pydantic sections are dumped, the rest JSON as is)."""
    text = json.dumps([p.model_dump() if isinstance(p, BaseModel) else p for p in parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def without_late_defaults(settings: dict[str, Any], late: dict[str, Any]) -> dict[str, Any]:
    """``settings`` less each key of ``late`` that is at the value given there: a key added to a section
    after runs were finished stays out of the section's fingerprint at its default, so those runs still
    match; set to anything else, it is part of the fingerprint."""
    return {k: v for k, v in settings.items() if k not in late or v != late[k]}


def files_digest(paths: list[Path]) -> str:
    """sha256 over the contents of files (small ones: a split, a label list), in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


def save_checkpoint(obj: object, path: Path) -> None:
    """``torch.save`` whole or not at all (a temporary sibling, then a rename): a run cut short while
    saving keeps its previous checkpoint."""
    import torch

    atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def done_file(folder: Path, stage: str = "") -> Path:
    """The marker of a folder's step (``stage``: one of several steps writing one folder)."""
    return folder / (f"{stage}-{DONE}" if stage else DONE)


def read_done(folder: Path, stage: str = "") -> dict[str, Any] | None:
    path = done_file(folder, stage)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_done(folder: Path, key: str, stage: str = "") -> bool:
    done = read_done(folder, stage)
    return done is not None and done.get("fingerprint") == key


def write_done(folder: Path, key: str, facts: dict[str, Any] | None = None, stage: str = "") -> None:
    """Mark a step done, with facts about its output: written last, so a step cut short is redone,
    never taken as complete."""
    atomic_write_json(done_file(folder, stage), {"fingerprint": key, **(facts or {})})


def clear_done(folder: Path, stage: str = "") -> None:
    done_file(folder, stage).unlink(missing_ok=True)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run's steps, and the checks that a step's inputs are there."""

    root: Path
    models_dir: Path
    name: str

    def folder(self, step: str) -> Path:
        return self.root / STEP_FOLDERS[step]

    @property
    def data(self) -> Path:
        return self.folder("data")

    @property
    def teacher(self) -> Path:
        return self.folder("teacher")

    @property
    def labels(self) -> Path:
        return self.folder("label")

    @property
    def vocab(self) -> Path:
        return self.folder("vocab")

    @property
    def features(self) -> Path:
        return self.folder("features")

    @property
    def student(self) -> Path:
        return self.folder("kd")

    @property
    def router_student(self) -> Path:
        """The shadow student's checkpoints (step router-student, ``distill.router_student = "shadow"``)."""
        return self.root / "router-student"

    @property
    def router_student_dir(self) -> Path:
        """The shadow student, exported: its answers on the slice teach the router; it is never served."""
        return self.router_student / "model"

    @property
    def student_dir(self) -> Path:
        return self.models_dir / self.name

    @property
    def teacher_dir(self) -> Path:
        return self.models_dir / f"{self.name}-teacher"

    def checkpoint(self, stage: str, which: str = "best") -> Path:
        return self.student / f"{stage}-{which}.pt"

    def require(self, step: str) -> Path:
        """The output folder of ``step``, or StepInputMissing when that step has not finished."""
        if step in ("export", "teacher-export"):
            folder = self.student_dir if step == "export" else self.teacher_dir
            if not (folder / MANIFEST).is_file():
                raise StepInputMissing(folder / MANIFEST, step)
            return folder
        folder = self.folder(step)
        marker = done_file(folder, step if step in STUDENT_STAGES else "")
        if not marker.is_file():
            raise StepInputMissing(marker, step)
        return folder

    def data_digest(self) -> str:
        """What a model trained on the labeled set depends on: the label names and the three splits."""
        self.require("data")
        names = ["labels.json", "train.jsonl", "dev.jsonl", "test.jsonl"]
        return files_digest([self.data / n for n in names if (self.data / n).is_file()])

    def teacher_metrics(self) -> dict[str, Any]:
        """What the teacher step measured (dev/test accuracy, epochs, its input length)."""
        path = self.require("teacher") / "metrics.json"
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def vocab_size(self) -> int:
        done = read_done(self.require("vocab"))
        return int(done["size"]) if done else 0

    def corpus_texts(self) -> int | None:
        """Texts of the featurized corpus (None before the features step)."""
        done = read_done(self.features)
        return None if done is None else done.get("texts")
