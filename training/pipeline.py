"""The run: every step of Sparse Distillation in order, each skipped when its output is already done.

    data -> teacher -> teacher-export -> label -> vocab -> features -> table-init -> kd -> ft -> scratch
    -> export -> evaluate -> router-student -> cascade

Steps talk only through files under ``run_dir`` and ``models/`` (``training.stages.run_folder``). Each step
first checks that its inputs exist (else: which step to run first), and records a fingerprint of what
it was made from; a step whose inputs or settings changed is redone.
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from sdcore.errors import ProjectError
from training.config import RunConfig
from training.stages.distill import BagSource, TrainResult, TrainSpec, train_student
from training.stages.export import export_student
from training.stages.features import featurize_corpus, open_features
from training.stages.run_folder import (
    RunFolder,
    StepInputMissing,
    clear_done,
    done_file,
    fingerprint,
    is_done,
    read_done,
    without_late_defaults,
    write_done,
)
from training.stages.run_log import RunLog
from training.stages.student import select_bags
from training.stages.student_runs import final_stage, labeled_bags, load_stage, new_student, stage_accuracies
from training.stages.table_init import apply_table_init, step_table_init, table_init_fact
from training.stages.vocab import build_vocab_from_chunks, load_vocab_featurizer


class StepError(ProjectError):
    """Steps named or ordered wrongly, or a run folder that cannot be used as asked."""

    exit_code = 2


def _set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


# --- steps -------------------------------------------------------------------------------------


def step_data(config: RunConfig) -> None:
    from training.stages.data_stage import prepare_data

    prepare_data(config)


def step_teacher(config: RunConfig) -> None:
    from training.stages.teacher import finetune_teacher

    config.run_folder.require("data")
    finetune_teacher(config)


def step_teacher_export(config: RunConfig) -> None:
    from training.stages.teacher_export import export_teacher

    config.run_folder.require("teacher")
    export_teacher(config)


def step_label(config: RunConfig) -> None:
    folder = config.run_folder
    folder.require("data")
    folder.require("teacher-export" if config.labeling.backend == "onnx" else "teacher")
    if config.engine == "ray":
        from training.scale.labeling import label_corpus_ray

        label_corpus_ray(config)
        return
    from training.stages.labeling import label_corpus

    label_corpus(config)


def vocab_key(config: RunConfig) -> str:
    corpus = [config.distill.corpus_texts] if config.distill.corpus_texts else []  # old keys stay valid
    return fingerprint(config.vocab.counting_settings(), config.data, *corpus)


def features_key(config: RunConfig) -> str:
    """What the featurized corpus (and every student) depends on: the vocabulary, and its subwords if on."""
    subwords = config.vocab.subword_settings()
    return fingerprint(vocab_key(config), subwords) if subwords else vocab_key(config)


def step_vocab(config: RunConfig) -> None:
    from training.data.task_data import count_corpus, iter_corpus

    config.run_folder.require("data")
    folder = config.run_folder.vocab
    key = vocab_key(config)
    if is_done(folder, key):
        return
    limit = config.distill.corpus_texts
    total = count_corpus(config.run_dir, limit)
    settings = config.vocab.featurizer_settings()
    if config.engine == "ray":  # the same vocabulary, counted on a Ray cluster (training/scale/counting.py)
        from training.scale.counting import build_vocab_ray

        vocab = build_vocab_ray(config, folder)
    else:
        vocab = build_vocab_from_chunks(
            lambda: iter_corpus(config.run_dir, config.vocab.chunk_texts, limit),
            settings,
            config.vocab.size,
            folder,
            config.vocab.partitions,
            config.vocab.memory_mb,
            total,
        )
    by_n = np.bincount([g.count(" ") + 1 for g in vocab.ngrams], minlength=settings.ngram_max + 1)
    write_done(folder, key, {"size": len(vocab.ngrams), "words": len(vocab.words),
                             "by_n": {str(n): int(by_n[n]) for n in range(1, settings.ngram_max + 1)},
                             "min_count": int(vocab.counts[-1]) if len(vocab.counts) else 0})


def step_features(config: RunConfig) -> None:
    from training.data.task_data import count_corpus, iter_corpus

    folder = config.run_folder
    vocab = folder.require("vocab")
    key = features_key(config)
    if is_done(folder.features, key):
        return
    featurizer = load_vocab_featurizer(vocab, config.vocab.featurizer_settings())
    limit = config.distill.corpus_texts
    featurize_corpus(featurizer, iter_corpus(config.run_dir, config.vocab.chunk_texts, limit), folder.features,
                     key, count_corpus(config.run_dir, limit))


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""


def _labels_facts(folder: RunFolder) -> list[str]:
    """What the labels are (teacher identity + the digest of every shard's texts), not when or how fast
    they were made: a rerun of a finished label step must not retrain the student."""
    return [_read(folder.labels / "meta.json"), *(_read(p) for p in sorted(folder.labels.glob("logits-*.sha256")))]


def holds_out_slice(config: RunConfig) -> bool:
    """Whether the served student's KD leaves the router's slice out (``distill.router_student = "served"``)."""
    return config.distill.router_holdout > 0 and config.distill.router_student == "served"


def student_inputs_key(config: RunConfig, name: str, shadow: bool = False) -> str:
    """What a student step trains on: vocabulary, data, architecture, and for KD the teacher labels (and
    the router's slice when it is left out), for FT the distilled weights it starts from. ``shadow``: the
    router's shadow student (``runs/<name>/router-student``), distilled on the corpus less the slice."""
    folder = config.run_folder
    student = without_late_defaults(config.student.model_dump(), {"init": "random", "init_rows": 0})
    base = [features_key(config), student, config.seed]
    if name == "kd":
        if fact := table_init_fact(config):
            base.append(fact)
        if shadow:
            base.append("router-student")
        if shadow or holds_out_slice(config):  # the slice left out (none: the key of a run without the option)
            base.append([config.distill.router_holdout, config.distill.router_holdout_max])
        base.extend(_labels_facts(folder))
    if name == "ft":
        base.append(_read(done_file(folder.router_student if shadow else folder.student, "kd")))
    return fingerprint(*base)


def _distill(config: RunConfig, rows: np.ndarray | None, out: Path, key: str) -> TrainResult:
    """KD on the corpus rows ``rows`` (None: all of them), checkpoints and done marker in ``out``."""
    from training.stages.label_shards import load_teacher_logits

    _set_threads(config.distill.threads)
    store = open_features(config.run_folder.require("features"))
    logits = load_teacher_logits(config.run_dir).astype(np.float32)
    if config.distill.corpus_texts:
        logits = logits[: config.distill.corpus_texts]
    if rows is None:
        rows = np.arange(logits.shape[0], dtype=np.int64)
    kept = select_bags(store.rows, store.offsets, rows, store.weights)
    dev_bags, dev_labels = labeled_bags(config, "dev")
    model = new_student(config)
    apply_table_init(config, model.embedding.weight)
    d = config.distill
    spec = TrainSpec(
        mode="kd", epochs=d.epochs, batch_size=d.batch_size, lr=d.lr, betas=d.betas, weight_decay=d.weight_decay,
        warmup_ratio=d.warmup_ratio, temperature=d.temperature, feature_dropout=config.student.feature_dropout,
        seed=config.seed, checkpoint_every=d.checkpoint_every,
    )
    source = BagSource(kept.rows, np.append(kept.offsets, kept.rows.size), logits[rows], kept.weights)
    return train_student(model, spec, source, dev_bags, dev_labels, out, "kd", key)


def step_kd(config: RunConfig) -> TrainResult:
    from training.progress import note
    from training.stages.holdout import corpus_split

    if not holds_out_slice(config):
        note("[kd] the whole corpus" + (" (the router learns from a shadow student: step router-student)"
                                        if config.distill.router_holdout > 0 else ""))
        return _distill(config, None, config.run_folder.student, student_inputs_key(config, "kd"))
    split = corpus_split(config)  # the router's slice stays out of distillation
    note(f"[kd] {split.kd.size} corpus texts; {split.holdout.size} held out for the cascade router"
         + (f", {split.windows_dropped} windows of them dropped" if split.windows_dropped else ""))
    return _distill(config, split.kd, config.run_folder.student, student_inputs_key(config, "kd"))


def _train_labeled(config: RunConfig, name: str, init: str | None, spec: TrainSpec,
                   out: Path | None = None, key: str | None = None) -> TrainResult:
    """FT or scratch on the labeled set, in ``out`` (the run's student folder unless given), from
    ``out``'s checkpoint ``init`` when given."""
    out = out or config.run_folder.student
    _set_threads(config.distill.threads)
    train_bags, train_labels = labeled_bags(config, "train")
    dev_bags, dev_labels = labeled_bags(config, "dev")
    model = new_student(config)
    if init is not None:
        checkpoint = out / f"{init}-best.pt"
        if not done_file(out, init).is_file() or not checkpoint.is_file():
            raise StepInputMissing(done_file(out, init), init)
        model.load_state_dict(torch.load(checkpoint, weights_only=True))
    return train_student(model, spec, BagSource.from_bags(train_bags, train_labels), dev_bags, dev_labels,
                         out, name, key or student_inputs_key(config, name))


def _ft_spec(config: RunConfig) -> TrainSpec:
    f = config.finetune
    return TrainSpec(mode="ft", epochs=f.epochs, batch_size=f.batch_size, lr=f.lr, betas=config.distill.betas,
                     warmup_ratio=f.warmup_ratio, feature_dropout=config.student.feature_dropout, seed=config.seed,
                     checkpoint_every=f.checkpoint_every)


def step_ft(config: RunConfig) -> TrainResult | None:
    if not config.finetune.enabled:
        return None
    return _train_labeled(config, "ft", "kd", _ft_spec(config))


def step_scratch(config: RunConfig) -> TrainResult | None:
    s = config.scratch
    if not s.enabled:
        return None
    spec = TrainSpec(mode="scratch", epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, betas=config.distill.betas,
                     warmup_ratio=s.warmup_ratio, feature_dropout=config.student.feature_dropout, seed=config.seed,
                     checkpoint_every=s.checkpoint_every)
    return _train_labeled(config, "scratch", None, spec)


def step_export(config: RunConfig) -> None:
    export_final_student(config, config.student_dir, config.export.dtype)


def export_final_student(config: RunConfig, out_dir: Path, dtype: Literal["float16", "float32", "int8"]) -> Path:
    """Export the run's final student (FT, else KD) to ``out_dir`` with table ``dtype``; the manifest
    records the run config with that dtype (``sd int8-report`` re-exports a run's student as int8)."""
    name = final_stage(config)
    model = load_stage(config, name)
    return _export(config, model, out_dir, dtype, {"student": {"stage": name, **stage_accuracies(config, model)}})


def _export(config: RunConfig, model: Any, out_dir: Path, dtype: Literal["float16", "float32", "int8"],
            metrics: dict[str, Any]) -> Path:
    from training.data.task_data import load_label_names

    teacher_metrics_path = config.run_folder.teacher / "metrics.json"
    teacher_metrics = json.loads(teacher_metrics_path.read_text()) if teacher_metrics_path.is_file() else {}
    metrics = {**metrics, "teacher": {k: teacher_metrics.get(k) for k in ("dev_acc", "test_acc")}}
    e = config.export
    recorded = config.to_dict()
    recorded["export"]["dtype"] = dtype
    return export_student(
        model, name=out_dir.name, labels=load_label_names(config.run_dir), settings=config.vocab.featurizer_settings(),
        vocab_dir=config.run_folder.vocab, out_dir=out_dir, dtype=dtype, prune_top_k=e.prune_top_k,
        shard_rows=e.shard_rows, metrics=metrics, config=recorded,
    )


def step_evaluate(config: RunConfig) -> None:
    from training.stages.evaluate import evaluate_run

    config.run_folder.require("teacher")
    config.run_folder.require("export")
    evaluate_run(config)


def shadow_wanted(config: RunConfig) -> bool:
    """Whether the cascade step learns its router from a shadow student (see ``step_router_student``)."""
    e = config.evaluate
    return e.cascade and e.router and config.distill.router_holdout > 0 and config.distill.router_student == "shadow"


def step_router_student(config: RunConfig) -> None:
    """The shadow student the router learns from (``distill.router_student = "shadow"``): KD on the corpus
    less the router's slice, then FT as the served student has it, exported to
    ``runs/<name>/router-student/model`` (not served; the cascade step reads its answers on the slice).
    It answers the slice as the served student answers new text: neither has seen it."""
    from training.progress import note
    from training.stages.holdout import corpus_split
    from training.stages.router import MIN_SLICE_TEXTS

    if not shadow_wanted(config):
        return
    folder = config.run_folder
    out = folder.router_student
    split = corpus_split(config)
    if split.holdout.size < MIN_SLICE_TEXTS:  # marked so: the cascade step says why there is no router
        why = (f"the router's slice has {split.holdout.size} texts (fewer than {MIN_SLICE_TEXTS}); raise "
               "distill.router_holdout or the corpus")
        note(f"[router-student] skipped: {why}")
        shutil.rmtree(folder.router_student_dir, ignore_errors=True)  # a shadow student of other settings
        write_done(out, student_inputs_key(config, "kd", shadow=True), {"skipped": why,
                                                                        "slice_texts": int(split.holdout.size)})
        return
    if (read_done(out) or {}).get("skipped"):  # an earlier skip: not a finished shadow student
        clear_done(out)
    note(f"[router-student] KD on {split.kd.size} corpus texts; {split.holdout.size} held out for the router")
    result = _distill(config, split.kd, out, student_inputs_key(config, "kd", shadow=True))
    stage = "kd"
    if config.finetune.enabled:
        result = _train_labeled(config, "ft", "kd", _ft_spec(config), out,
                                student_inputs_key(config, "ft", shadow=True))
        stage = "ft"
    key = fingerprint(_read(done_file(out, stage)), config.vocab, config.export.dtype)
    if is_done(out, key) and (folder.router_student_dir / "manifest.json").is_file():
        return
    model = new_student(config)
    model.load_state_dict(torch.load(out / f"{stage}-best.pt", weights_only=True))
    model.eval()
    _export(config, model, folder.router_student_dir, config.export.dtype,
            {"student": {"stage": stage, "role": "router shadow", "dev_acc": result.best_dev_acc}})
    write_done(out, key, {"stage": stage, "kd_texts": int(split.kd.size), "slice_texts": int(split.holdout.size)})


def step_cascade(config: RunConfig) -> None:
    if not config.evaluate.cascade:
        return
    from training.stages.cascade import calibrate_cascade

    config.run_folder.require("export")
    config.run_folder.require("teacher-export")
    if shadow_wanted(config) and read_done(config.run_folder.router_student) is None:  # trained, or marked skipped
        raise StepInputMissing(done_file(config.run_folder.router_student), "router-student")
    calibrate_cascade(config, config.evaluate.cascade_tolerance,
                      config.evaluate.cascade_report or f"reports/cascade-{config.name}")


STEPS: dict[str, Callable[[RunConfig], object]] = {
    "data": step_data,
    "teacher": step_teacher,
    "teacher-export": step_teacher_export,
    "label": step_label,
    "vocab": step_vocab,
    "features": step_features,
    "table-init": step_table_init,
    "kd": step_kd,
    "ft": step_ft,
    "scratch": step_scratch,
    "export": step_export,
    "evaluate": step_evaluate,
    "router-student": step_router_student,
    "cascade": step_cascade,
}


def select_steps(from_step: str | None = None, until: str | None = None) -> list[str]:
    """The steps from ``from_step`` through ``until``, in pipeline order; refuses unknown or crossed bounds."""
    names = list(STEPS)
    for bound in (from_step, until):
        if bound is not None and bound not in names:
            raise StepError(f"unknown step {bound!r}; steps: {', '.join(names)}")
    lo = names.index(from_step) if from_step else 0
    hi = names.index(until) + 1 if until else len(names)
    if lo >= hi:
        raise StepError(f"--from {from_step} comes after --until {until}: no step to run",
                        hint=f"steps run in this order: {', '.join(names)}")
    return names[lo:hi]


# Steps a reusing run takes from the other run as they are. teacher-export is not one of them: it
# exports the shared fine-tuned teacher to this run's own models/<name>-teacher (seconds), so every
# student in the model repository has its teacher beside it and the cascade step finds it.
TEACHER_STEPS = ("data", "teacher", "label")


def link_teacher_run(config: RunConfig) -> None:
    """Point this run's data, teacher and labels folders at another run's (``reuse_teacher_run``)."""
    source = Path(config.reuse_teacher_run).resolve()
    other = RunFolder(source, Path(config.models_dir), config.name)
    for step in TEACHER_STEPS:
        try:
            target = other.require(step)
        except StepInputMissing as exc:
            raise StepError(f"reuse_teacher_run: {exc}",
                            hint=f"run that config's steps up to 'label' first ({exc.hint})") from exc
        link = config.run_folder.folder(step)
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=True)


def run_steps(config: RunConfig, steps: list[str]) -> dict[str, Any]:
    """Run the named steps in pipeline order; record wall time and peak memory in run_dir/run.json."""
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise StepError(f"unknown step(s) {unknown}; steps are {list(STEPS)}")
    config.run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(config.run_dir)
    if lost := log.recover_lost():
        print(f"== step {lost['step']} was killed outright (SIGKILL, a machine gone) in an earlier run: "
              f"{lost['wall_s'] / 60:.1f} min recorded, up to its last heartbeat", flush=True)
    if config.reuse_teacher_run:
        link_teacher_run(config)
    for name in [s for s in STEPS if s in steps]:
        if config.reuse_teacher_run and name in TEACHER_STEPS:
            print(f"== step {name}: reused from {config.reuse_teacher_run}", flush=True)
            continue
        print(f"== step {name}", flush=True)
        started = time.perf_counter()
        try:
            with log.running(name):
                STEPS[name](config)
        except BaseException as exc:
            # A step cut short (Ctrl-C, SIGTERM, an error) still cost its time: kept, marked, then re-raised.
            log.record(name, started, stopped_by=type(exc).__name__)
            raise
        # Every invocation is kept: a skipped step shows as a short one, a real one as its real time.
        log.record(name, started)
    return log.as_dict()


def _exit_on_sigterm() -> None:
    """``docker stop`` and ``kill`` send SIGTERM: leave as Ctrl-C does (``SystemExit``), so the step in
    progress records its time and removes its temporary files; the main thread only."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_pipeline(config_path: Path, from_step: str | None = None, until: str | None = None,
                 steps: list[str] | None = None) -> dict[str, Any]:
    """Run a config file's steps: all, a --from/--until range, or the named ones (``sd run``)."""
    from training.config import load_config
    from training.stages.teacher_model import use_offline_hub

    use_offline_hub()
    config = load_config(config_path)
    if steps and (from_step or until):
        raise StepError("give --step, or --from/--until, not both")
    _exit_on_sigterm()
    return run_steps(config, steps or select_steps(from_step, until))
