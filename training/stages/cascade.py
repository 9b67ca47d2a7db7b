"""Offline cascade evaluation: which texts should the student pass on to the teacher? Two rules, side by side.

- The grid (as before): for a grid of thresholds on the student's calibrated confidence and on its
  n-gram coverage, the cascade's dev accuracy and teacher share are computed from the exported models'
  answers; the curve and a recommended operating point (the smallest teacher share whose dev accuracy
  is within ``tolerance`` of the teacher's) are stored in the student's manifest.
- The learned router (``training.stages.router``): fitted on the corpus slice distillation never saw
  (``training.stages.holdout``), stored as ``router.json`` beside the manifest, which lists it.

Both are scored on dev and test with the one deferral function the service runs
(``sdcore.router.defer_texts``), and each cascade's throughput is measured against the teacher alone,
for ``reports/cascade-<name>.{md,json}`` and a PNG of the curve (``training.stages.cascade_report``).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdcore.atomic import atomic_write_bytes, atomic_write_json
from sdcore.cascade import CascadePolicy, calibrated
from sdcore.model_writer import store_cascade_section, store_router
from sdcore.router import CascadeRouter, DeferralRule, RouterPolicy, StudentSignals, defer_texts
from service.runtimes.contract import RuntimeOptions
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime
from training.config import RunConfig
from training.stages.cascade_report import plot_curve, render
from training.stages.router import (
    MIN_SLICE_TEXTS,
    RouterFitError,
    SliceAnswers,
    cap_on_traffic,
    fit_router,
    fit_temperature,
)
from training.stages.run_folder import read_done

__all__ = ["Answers", "calibrate_cascade", "cascade_accuracy", "fit_temperature", "operating_point"]

GOAL_GAP, GOAL_SHARE, GOAL_SPEEDUP = 0.005, 0.30, 3.0  # within 0.5 points of the teacher on test, <= 30%, >= 3x


@dataclass
class Answers:
    """Both models' answers on one split."""

    student_probs: np.ndarray
    coverage: np.ndarray
    teacher_pred: np.ndarray
    labels: np.ndarray
    ngrams_found: np.ndarray | None = None  # the router's inputs (zeros when absent)
    ngrams_total: np.ndarray | None = None

    def signals(self) -> StudentSignals:
        zeros = np.zeros(self.coverage.shape[0], dtype=np.int64)
        found = zeros if self.ngrams_found is None else self.ngrams_found
        return StudentSignals(self.student_probs, self.coverage, found,
                              zeros if self.ngrams_total is None else self.ngrams_total)


def cascade_accuracy(answers: Answers, rule: DeferralRule) -> tuple[float, float]:
    """(accuracy, teacher share) of the cascade on one split, under either rule."""
    defer = defer_texts(rule, answers.signals())
    pred = np.where(defer, answers.teacher_pred, answers.student_probs.argmax(axis=1))
    return float((pred == answers.labels).mean()), float(defer.mean())


def threshold_curve(answers: Answers, temperature: float) -> list[dict[str, float]]:
    conf = calibrated(answers.student_probs, temperature).max(axis=1)
    # Confidence thresholds at the observed confidences (every distinct deferral set), capped in number.
    levels = np.unique(np.concatenate([[0.0, 1.0], np.quantile(conf, np.linspace(0, 1, 101))]))
    curve = []
    for coverage_threshold in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        for confidence_threshold in levels:
            policy = CascadePolicy(temperature, float(confidence_threshold), coverage_threshold)
            acc, share = cascade_accuracy(answers, policy)
            curve.append({"confidence_threshold": round(float(confidence_threshold), 6),
                          "coverage_threshold": coverage_threshold, "dev_acc": acc, "teacher_share": share})
    return curve


def operating_point(curve: list[dict[str, float]], teacher_acc: float, tolerance: float) -> dict[str, float]:
    """The smallest teacher share within ``tolerance`` of the teacher's accuracy (else the most accurate)."""
    good = [p for p in curve if p["dev_acc"] >= teacher_acc - tolerance]
    if good:
        return min(good, key=lambda p: (p["teacher_share"], -p["dev_acc"]))
    return max(curve, key=lambda p: (p["dev_acc"], -p["teacher_share"]))


def collect(student: StudentRuntime, teacher: TeacherRuntime, texts: list[str], labels: list[int]) -> Answers:
    out = student.predict(texts)
    teacher_pred = teacher.predict(texts).probabilities.argmax(axis=1)
    return Answers(out.probabilities, out.student_coverage, teacher_pred, np.asarray(labels),
                   out.ngrams_found, out.ngrams_total)


def texts_per_second(run: Any, texts: list[str], batch_size: int, repeats: int = 3) -> float:
    """Median throughput of ``run(batch)`` over the texts in batches, after one warm-up pass."""
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    run(batches[0])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            run(batch)
        times.append(time.perf_counter() - started)
    return len(texts) / float(np.median(times))


def slice_answers(config: RunConfig, student: StudentRuntime) -> SliceAnswers:
    """The student's answers on the router's corpus slice, with the teacher's stored labels there."""
    from training.stages.holdout import corpus_split, holdout_texts
    from training.stages.label_shards import load_teacher_logits

    split = corpus_split(config)
    texts = holdout_texts(config, split)
    parts = [student.predict(texts[i : i + 1024]).student_signals() for i in range(0, len(texts), 1024)]
    signals = StudentSignals(*(np.concatenate([getattr(p, k) for p in parts]) for k in
                               ("probabilities", "coverage", "ngrams_found", "ngrams_total")))
    teacher_pred = load_teacher_logits(config.run_dir)[split.holdout].argmax(axis=1)
    return SliceAnswers(signals, teacher_pred)


def rule_row(rule: DeferralRule, dev: Answers, test: Answers, speed: float, teacher_speed: float) -> dict[str, Any]:
    """One rule's figures on dev and test, and whether it meets the goal (issue 12, item 4)."""
    dev_acc, dev_share = cascade_accuracy(dev, rule)
    test_acc, test_share = cascade_accuracy(test, rule)
    teacher_test = float((test.teacher_pred == test.labels).mean())
    row: dict[str, Any] = {"dev_acc": dev_acc, "dev_teacher_share": dev_share, "test_acc": test_acc,
                           "test_teacher_share": test_share, "samples_per_s": speed, "speedup": speed / teacher_speed}
    row["goal_met"] = bool(test_acc >= teacher_test - GOAL_GAP - 1e-9 and test_share <= GOAL_SHARE
                           and row["speedup"] >= GOAL_SPEEDUP)
    return row


def calibrate_cascade(config: RunConfig, tolerance: float = 0.005, report: str = "reports/cascade") -> dict[str, Any]:
    """The grid's operating point on dev and the learned router on the corpus slice, both stored in the
    student's folder, both scored on dev and test, side by side in ``<report>.{md,json,png}``."""
    from training.data.task_data import load_split

    threads = config.distill.threads or None
    student = StudentRuntime.load(config.student_dir, RuntimeOptions(threads=threads))
    teacher = TeacherRuntime.load(config.teacher_dir, RuntimeOptions(threads=threads))
    dev, test = load_split(config.run_dir, "dev"), load_split(config.run_dir, "test")
    print(f"[cascade] student and teacher on dev ({len(dev)} texts)", flush=True)
    dev_answers = collect(student, teacher, dev.texts, dev.labels)
    temperature = fit_temperature(dev_answers.student_probs, dev_answers.labels)
    curve = threshold_curve(dev_answers, temperature)
    teacher_dev = float((dev_answers.teacher_pred == dev_answers.labels).mean())
    point = operating_point(curve, teacher_dev, tolerance)
    policy = CascadePolicy(temperature, point["confidence_threshold"], point["coverage_threshold"])
    cascade = {"temperature": temperature, "tolerance": tolerance, "teacher_dev_acc": teacher_dev,
               "operating_point": point, "curve": curve}
    store_cascade_section(config.student_dir, cascade)
    rules: dict[str, DeferralRule] = {"grid": policy}
    router: CascadeRouter | None = None
    e = config.evaluate
    no_router = "" if e.router and config.distill.router_holdout > 0 else "evaluate.router off or no corpus slice"
    shadow = config.distill.router_student == "shadow"
    if not no_router:
        started = time.perf_counter()
        # the answers the router learns from: the shadow student's, trained without the slice while the
        # served student saw it (step router-student); or, with router_student "served", the served one's
        shadow_dir = config.run_folder.router_student_dir
        try:
            if shadow and not (shadow_dir / "manifest.json").is_file():
                skipped = (read_done(config.run_folder.router_student) or {}).get("skipped")
                raise RouterFitError(f"no shadow student: {skipped}" if skipped else
                                     f"{shadow_dir}: no shadow student (step router-student trains one when the "
                                     f"router's slice holds at least {MIN_SLICE_TEXTS} texts)")
            answering = StudentRuntime.load(shadow_dir, RuntimeOptions(threads=threads)) if shadow else student
            router = fit_router(slice_answers(config, answering), e.router_gap, e.router_max_share, config.seed)
            router = cap_on_traffic(router, dev_answers.signals(), e.router_max_share)
        except RouterFitError as exc:  # e.g. a slice too small to learn from: the grid alone, said so
            no_router = str(exc)
    if router is not None:
        router = router.model_copy(update={"fit": {**router.fit, "seconds": round(time.perf_counter() - started, 1),
                                                   "answers_from": "shadow student" if shadow else "served student"}})
        store_router(config.student_dir, router)
        rules["router"] = RouterPolicy.of(router)

    print(f"[cascade] student and teacher on test ({len(test)} texts)", flush=True)
    test_answers = collect(student, teacher, test.texts, test.labels)

    def runner(rule: DeferralRule) -> Any:
        def run_cascade(batch: list[str]) -> None:
            defer = defer_texts(rule, student.predict(batch).student_signals())
            deferred = [t for t, d in zip(batch, defer, strict=True) if d]
            if deferred:
                teacher.predict(deferred)
        return run_cascade

    load_before = os.getloadavg()[0]
    print(f"[cascade] throughput on test, batch 32: the teacher alone, then {', '.join(rules)} (a warm-up and "
          "3 timed passes each)", flush=True)
    teacher_speed = texts_per_second(teacher.predict, test.texts, 32)
    rows = {name: rule_row(rule, dev_answers, test_answers, texts_per_second(runner(rule), test.texts, 32),
                           teacher_speed) for name, rule in rules.items()}
    grid = rows["grid"]
    results = {
        "teacher_test_acc": float((test_answers.teacher_pred == test_answers.labels).mean()),
        "student_test_acc": float((test_answers.student_probs.argmax(1) == test_answers.labels).mean()),
        "student_dev_acc": float((dev_answers.student_probs.argmax(1) == dev_answers.labels).mean()),
        # the grid's figures under the names older reports used
        "cascade_test_acc": grid["test_acc"],
        "teacher_share": grid["test_teacher_share"],
        "cascade_samples_per_s": grid["samples_per_s"],
        "teacher_samples_per_s": teacher_speed,
        "operating_point": {**point, "temperature": temperature},
        "teacher_dev_acc": teacher_dev,
        "rules": rows,
        "router": ({"threshold": router.threshold, "temperature": router.temperature, **router.fit}
                   if router is not None else None),
        "no_router": no_router or None,
        "goal": {"gap": GOAL_GAP, "max_share": GOAL_SHARE, "min_speedup": GOAL_SPEEDUP},
        "meta": {"models": [str(config.student_dir), str(config.teacher_dir)], "batch_size": 32,
                 "threads": threads or "onnxruntime default", "machine": platform.platform(),
                 # the 1-minute load average around the throughput runs: on a shared machine texts/s
                 # are low, and the speed-ups (both sides measured alike) are what to read
                 "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)], "cpus": os.cpu_count(),
                 "date": time.strftime("%Y-%m-%d"), "command": f"sd run --step cascade -c {config.source_path}"},
    }
    out = Path(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(curve, point, teacher_dev, out.with_suffix(".png"), rows)
    atomic_write_json(out.with_suffix(".json"), results)
    atomic_write_bytes(out.with_suffix(".md"), render(results, out.with_suffix(".png").name).encode("utf-8"))
    print(json.dumps({k: v for k, v in results.items() if k not in ("meta", "router")}, indent=2))
    return results
