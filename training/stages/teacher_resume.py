"""The teacher's fine-tuning, resumable by epoch: what a run cut short (a closed session, a killed job)
needs to go on from the last finished epoch instead of from the start.

A large teacher (MPNet-base, 109M parameters) takes hours an epoch on a few CPU cores, so after every
epoch ``<run_dir>/teacher-resume/`` receives, each file written whole (a temporary file, then a rename):

- ``best-eNNN.pt``: the weights of the best epoch on dev so far, when this epoch is the new best;
- ``state.pt``: this epoch's weights, the AdamW moments, the scheduler's step, the shuffling generator,
  the Python / numpy / torch random states, the history and which ``best-eNNN.pt`` is the best; it is
  written after the best weights, so the state never names a file that is not complete;
- ``progress.json``: the epochs so far (dev accuracy, seconds), for ``sd status``;
- older ``best-eNNN.pt`` files are removed only after the state that no longer names them is in place.

The state records the fingerprint of the teacher's settings, seed and labeled data: a state made for
other settings is not resumed but removed. Once the teacher folder is written (one atomic rename) the
resume folder is removed too.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdcore.atomic import atomic_write_json
from training.stages.run_folder import save_checkpoint

RESUME_DIR = "teacher-resume"
STATE = "state.pt"
PROGRESS = "progress.json"  # the epochs so far, small: what `sd status` reads beside a running job


@dataclass
class EpochProgress:
    """Where fine-tuning stands after ``epoch`` finished epochs."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = 0


def _best_name(epoch: int) -> str:
    return f"best-e{epoch:03d}.pt"


class TeacherResume:
    """The resume folder of one run's teacher (see the module docstring)."""

    def __init__(self, run_dir: Path, key: str) -> None:
        self.folder = run_dir / RESUME_DIR
        self.key = key

    def load(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator) -> EpochProgress:
        """Restore the last finished epoch into the given objects; a fresh start when there is none (or
        only a state for other settings, which is removed)."""
        path = self.folder / STATE
        if not path.is_file():
            return EpochProgress()
        try:
            state = torch.load(path, weights_only=False)
        except Exception as exc:  # a damaged state: said, and training starts over rather than crashing
            print(f"[teacher] {path}: unreadable ({exc}); starting from epoch 1", flush=True)
            self.clear()
            return EpochProgress()
        if state.get("key") != self.key:
            print(f"[teacher] {path}: made for other teacher settings or data; starting from epoch 1", flush=True)
            self.clear()
            return EpochProgress()
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        random.setstate(state["python_random"])
        np.random.set_state(state["numpy_random"])
        torch.set_rng_state(state["torch_random"])
        return EpochProgress(state["epoch"], state["history"], state["best_acc"], state["best_epoch"])

    def best_state(self, best_epoch: int) -> dict[str, torch.Tensor] | None:
        """The weights saved for ``best_epoch``, or None before the first epoch (0)."""
        if best_epoch == 0:
            return None
        loaded: dict[str, torch.Tensor] = torch.load(self.folder / _best_name(best_epoch), weights_only=True)
        return loaded

    def save(self, progress: EpochProgress, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator, improved: bool) -> None:
        """Record a finished epoch (``progress.epoch``); ``improved``: it is the new best on dev."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if improved:
            save_checkpoint(model.state_dict(), self.folder / _best_name(progress.epoch))
        state = {"key": self.key, "epoch": progress.epoch, "history": progress.history, "best_acc": progress.best_acc,
                 "best_epoch": progress.best_epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                 "python_random": random.getstate(), "numpy_random": np.random.get_state(),
                 "torch_random": torch.get_rng_state()}
        save_checkpoint(state, self.folder / STATE)
        atomic_write_json(self.folder / PROGRESS, {"epoch": progress.epoch, "history": progress.history,
                                                   "best_acc": progress.best_acc, "best_epoch": progress.best_epoch})
        keep = _best_name(progress.best_epoch)
        for old in self.folder.glob("best-e*.pt"):
            if old.name != keep:
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                path.unlink(missing_ok=True)
            self.folder.rmdir()
