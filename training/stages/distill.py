"""Training the DAN: distillation (KD), fine-tuning (FT) and the from-scratch baseline share one loop.

- KD minimises KL(teacher || student) on softened distributions (temperature T, scaled by T**2 as in
  Hinton et al.), over the transfer corpus labeled with the teacher's logits.
- FT and scratch minimise cross-entropy on the labeled training set.
The table is updated by SparseAdam (only the rows of a batch move), the dense head by AdamW, both with
linear warmup then linear (polynomial power 1) decay, as the paper's fairseq recipe. Every epoch ends
with a dev evaluation; the best epoch's weights are kept (model selection on dev), and a checkpoint of
everything (weights, optimizers, schedule, RNG, history) lets an interrupted run resume at the next
epoch boundary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from sdcore.atomic import atomic_write_json
from training.progress import note, progress
from training.stages.run_folder import done_file, save_checkpoint
from training.stages.student import DAN, Bags, drop_features, predict_logits, select_bags


@dataclass(frozen=True)
class TrainSpec:
    mode: Literal["kd", "ft", "scratch"]
    epochs: int
    batch_size: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    temperature: float = 1.0
    feature_dropout: float = 0.1
    seed: int = 13
    checkpoint_every: int = 1  # epochs between resumable checkpoints; 0 = none (a rerun starts over)


@dataclass
class TrainResult:
    best_dev_acc: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


class BagSource:
    """Training texts as a flat bag store (offsets has texts + 1 entries) with their targets."""

    def __init__(self, rows: np.ndarray, offsets: np.ndarray, targets: np.ndarray,
                 weights: np.ndarray | None = None) -> None:
        if offsets.size - 1 != targets.shape[0]:
            raise ValueError(f"{offsets.size - 1} texts but {targets.shape[0]} targets")
        self.rows, self.offsets, self.targets, self.weights = rows, offsets, targets, weights

    @classmethod
    def from_bags(cls, bags: Bags, targets: np.ndarray) -> BagSource:
        return cls(bags.rows, np.append(bags.offsets, bags.rows.size), targets, bags.weights)

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def accuracy(model: DAN, bags: Bags, labels: np.ndarray) -> float:
    if len(bags) == 0:
        return 0.0
    return float((predict_logits(model, bags).argmax(axis=1) == labels).mean())


def _loss(spec: TrainSpec, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if spec.mode == "kd":
        t = spec.temperature
        return F.kl_div(
            F.log_softmax(logits / t, dim=-1), F.log_softmax(target / t, dim=-1), log_target=True,
            reduction="batchmean",
        ) * (t * t)
    return F.cross_entropy(logits, target)


def _schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(int(total_steps * warmup_ratio), 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(total_steps - warmup, 1))

    return factor


def progress_file(name: str) -> str:
    """The JSON beside ``<name>-last.pt`` that says how far it is (epoch, history, seconds)."""
    return f"{name}-progress.json"


def train_student(
    model: DAN,
    spec: TrainSpec,
    train: BagSource,
    dev_bags: Bags,
    dev_labels: np.ndarray,
    ckpt_dir: Path,
    name: str,
    inputs_key: str = "",
) -> TrainResult:
    """Train ``model`` in place and leave it holding the best dev epoch's weights.

    A finished run or a checkpoint is reused only when both the spec and ``inputs_key`` (a fingerprint
    of the data, vocabulary, targets and initial weights the caller trains on) are the same.
    """
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = ckpt_dir / f"{name}-last.pt", ckpt_dir / f"{name}-best.pt"
    progress_path = ckpt_dir / progress_file(name)  # the last checkpoint's epochs, small: for `sd status`
    done_path = done_file(ckpt_dir, name)
    spec_dict = asdict(spec)
    spec_dict["betas"] = list(spec.betas)
    spec_dict["inputs_key"] = inputs_key
    if done_path.is_file() and best_path.is_file():
        done = json.loads(done_path.read_text())
        if done.get("spec") == spec_dict:
            model.load_state_dict(torch.load(best_path, weights_only=True))
            return TrainResult(done["best_dev_acc"], done["best_epoch"], done["history"], done["wall_s"])

    steps_per_epoch = max((len(train) + spec.batch_size - 1) // spec.batch_size, 1)
    total_steps = steps_per_epoch * spec.epochs
    sparse_opt = torch.optim.SparseAdam(model.sparse_parameters(), lr=spec.lr, betas=spec.betas)
    dense_opt = torch.optim.AdamW(
        model.dense_parameters(), lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay
    )
    factor = _schedule(total_steps, spec.warmup_ratio)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in (sparse_opt, dense_opt)]
    rng = np.random.default_rng(spec.seed)
    torch.manual_seed(spec.seed)
    result = TrainResult(best_dev_acc=-1.0, best_epoch=-1)
    start_epoch = 0
    elapsed_before = 0.0

    if last_path.is_file():
        state = torch.load(last_path, weights_only=False)
        if state.get("spec") == spec_dict:
            model.load_state_dict(state["model"])
            sparse_opt.load_state_dict(state["sparse_opt"])
            dense_opt.load_state_dict(state["dense_opt"])
            for sched, sched_state in zip(schedulers, state["schedulers"], strict=True):
                sched.load_state_dict(sched_state)
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            result = TrainResult(**state["result"])
            start_epoch = state["epoch"] + 1
            elapsed_before = result.wall_s
            note(f"[{name}] resuming after epoch {state['epoch'] + 1}/{spec.epochs}")
        del state

    started = time.perf_counter()
    for epoch in range(start_epoch, spec.epochs):
        model.train()
        order = rng.permutation(len(train))
        loss_sum = 0.0
        bar = progress(total=steps_per_epoch, desc=f"{name} epoch {epoch + 1}/{spec.epochs}", unit="step", leave=False)
        for step in range(steps_per_epoch):
            index = order[step * spec.batch_size : (step + 1) * spec.batch_size]
            bags = drop_features(select_bags(train.rows, train.offsets, index, train.weights), spec.feature_dropout,
                                 rng)
            target = torch.from_numpy(np.ascontiguousarray(train.targets[index]))
            logits = model(*bags.tensors())
            loss = _loss(spec, logits, target)
            sparse_opt.zero_grad(set_to_none=True)
            dense_opt.zero_grad(set_to_none=True)
            loss.backward()
            sparse_opt.step()
            dense_opt.step()
            for sched in schedulers:
                sched.step()
            loss_sum += loss.item()
            bar.set_postfix(loss=f"{loss_sum / (step + 1):.4f}")
            bar.update(1)
        bar.close()
        dev_acc = accuracy(model, dev_bags, dev_labels)
        result.history.append({"epoch": epoch + 1, "loss": loss_sum / steps_per_epoch, "dev_acc": dev_acc})
        note(f"[{name}] epoch {epoch + 1}: loss {loss_sum / steps_per_epoch:.4f} dev acc {dev_acc:.4f}")
        if dev_acc > result.best_dev_acc:
            result.best_dev_acc, result.best_epoch = dev_acc, epoch + 1
            save_checkpoint(model.state_dict(), best_path)
        result.wall_s = elapsed_before + time.perf_counter() - started
        last_epoch = epoch + 1 == spec.epochs
        if not last_epoch and spec.checkpoint_every and (epoch + 1) % spec.checkpoint_every == 0:
            save_checkpoint(
                {
                    "spec": spec_dict,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "sparse_opt": sparse_opt.state_dict(),
                    "dense_opt": dense_opt.state_dict(),
                    "schedulers": [s.state_dict() for s in schedulers],
                    "rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "result": asdict(result),
                },
                last_path,
            )
            atomic_write_json(progress_path, {"epoch": epoch + 1, "epochs": spec.epochs, **asdict(result)})
    del sparse_opt, dense_opt
    model.load_state_dict(torch.load(best_path, weights_only=True))
    atomic_write_json(done_path, {"spec": spec_dict, **asdict(result)})
    last_path.unlink(missing_ok=True)
    progress_path.unlink(missing_ok=True)
    return result
