"""Offline cascade calibration: on dev, which texts should the student pass on to the teacher?

For a grid of thresholds on the student's calibrated confidence and on its n-gram coverage, the
cascade's dev accuracy and the share of texts sent to the teacher are computed from the exported
models' answers (the student's once, the teacher's once). The curve and a recommended operating point
(the smallest teacher share whose dev accuracy is within ``tolerance`` of the teacher's) are stored in
the student's manifest; the test split is then scored at that point, and the cascade's throughput is
measured against the teacher alone, for ``reports/cascade.{md,json}`` and a PNG of the curve.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdcore.atomic import atomic_write_bytes, atomic_write_json
from sdcore.cascade import CascadePolicy, calibrated, defer_mask
from sdcore.model_writer import store_cascade_section
from service.runtime import RuntimeOptions
from service.student_runtime import StudentRuntime
from service.teacher_runtime import TeacherRuntime
from training.config import RunConfig


@dataclass
class Answers:
    """Both models' answers on one split."""

    student_probs: np.ndarray
    coverage: np.ndarray
    teacher_pred: np.ndarray
    labels: np.ndarray


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising dev negative log-likelihood (a 1-D grid search: robust, no solver)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    nll = [
        -np.log(np.clip(calibrated(probabilities, t)[np.arange(labels.size), labels], 1e-12, None)).mean()
        for t in grid
    ]
    return float(grid[int(np.argmin(nll))])


def cascade_accuracy(answers: Answers, policy: CascadePolicy) -> tuple[float, float]:
    """(accuracy, teacher share) of the cascade on one split."""
    defer = defer_mask(answers.student_probs, answers.coverage, policy)
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
    return Answers(out.probabilities, out.student_coverage, teacher_pred, np.asarray(labels))


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


def plot_curve(curve: list[dict[str, float]], point: dict[str, float], teacher_acc: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for cov in sorted({p["coverage_threshold"] for p in curve}):
        pts = sorted((p for p in curve if p["coverage_threshold"] == cov), key=lambda p: p["teacher_share"])
        ax.plot([p["teacher_share"] for p in pts], [p["dev_acc"] for p in pts], label=f"coverage < {cov}")
    ax.axhline(teacher_acc, color="black", linestyle="--", label="teacher alone")
    ax.scatter([point["teacher_share"]], [point["dev_acc"]], color="red", zorder=5, label="operating point")
    ax.set_xlabel("share of texts sent to the teacher")
    ax.set_ylabel("cascade dev accuracy")
    ax.set_title("Cascade on dev: accuracy vs teacher share")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibrate_cascade(config: RunConfig, tolerance: float = 0.005, report: str = "reports/cascade") -> dict[str, Any]:
    from training.data import load_split

    threads = config.distill.threads or None
    student = StudentRuntime.load(config.student_dir, RuntimeOptions(threads=threads))
    teacher = TeacherRuntime.load(config.teacher_dir, RuntimeOptions(threads=threads))
    dev, test = load_split(config.run_dir, "dev"), load_split(config.run_dir, "test")
    dev_answers = collect(student, teacher, dev.texts, dev.labels)
    temperature = fit_temperature(dev_answers.student_probs, dev_answers.labels)
    curve = threshold_curve(dev_answers, temperature)
    teacher_dev = float((dev_answers.teacher_pred == dev_answers.labels).mean())
    point = operating_point(curve, teacher_dev, tolerance)
    policy = CascadePolicy(temperature, point["confidence_threshold"], point["coverage_threshold"])
    cascade = {"temperature": temperature, "tolerance": tolerance, "teacher_dev_acc": teacher_dev,
               "operating_point": point, "curve": curve}
    store_cascade_section(config.student_dir, cascade)

    test_answers = collect(student, teacher, test.texts, test.labels)
    cascade_test, share_test = cascade_accuracy(test_answers, policy)

    def run_cascade(batch: list[str]) -> None:
        out = student.predict(batch)
        defer = defer_mask(out.probabilities, out.student_coverage, policy)
        deferred = [t for t, d in zip(batch, defer, strict=True) if d]
        if deferred:
            teacher.predict(deferred)

    results = {
        "teacher_test_acc": float((test_answers.teacher_pred == test_answers.labels).mean()),
        "student_test_acc": float((test_answers.student_probs.argmax(1) == test_answers.labels).mean()),
        "cascade_test_acc": cascade_test,
        "teacher_share": share_test,
        "cascade_samples_per_s": texts_per_second(run_cascade, test.texts, 32),
        "teacher_samples_per_s": texts_per_second(teacher.predict, test.texts, 32),
        "operating_point": {**point, "temperature": temperature},
        "teacher_dev_acc": teacher_dev,
        "meta": {"models": [str(config.student_dir), str(config.teacher_dir)], "batch_size": 32,
                 "threads": threads or "onnxruntime default", "machine": platform.platform(),
                 "date": time.strftime("%Y-%m-%d"), "command": f"sd run --step cascade -c {config.source_path}"},
    }
    out = Path(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(curve, point, teacher_dev, out.with_suffix(".png"))
    atomic_write_json(out.with_suffix(".json"), results)
    atomic_write_bytes(out.with_suffix(".md"), render(results, out.with_suffix(".png").name).encode("utf-8"))
    print(json.dumps({k: v for k, v in results.items() if k != "meta"}, indent=2))
    return results


def render(r: dict[str, Any], png: str) -> str:
    p = r["operating_point"]
    speedup = r["cascade_samples_per_s"] / r["teacher_samples_per_s"]
    return "\n".join([
        "# Cascade: student first, teacher for low-confidence or low-coverage texts",
        "",
        f"Command: `{r['meta']['command']}`  ",
        f"Machine: {r['meta']['machine']}, threads: {r['meta']['threads']}  ",
        f"Date: {r['meta']['date']}",
        "",
        f"Operating point chosen on dev (smallest teacher share within 0.5 points of the teacher's dev "
        f"accuracy {r['teacher_dev_acc']:.4f}): temperature {p['temperature']:.3f}, defer when calibrated "
        f"confidence < {p['confidence_threshold']:.4f} or coverage < {p['coverage_threshold']}; "
        f"dev accuracy {p['dev_acc']:.4f} with {100 * p['teacher_share']:.1f}% of texts to the teacher.",
        "",
        "| on the test split | value |",
        "|---|---|",
        f"| teacher accuracy | {r['teacher_test_acc']:.4f} |",
        f"| student accuracy | {r['student_test_acc']:.4f} |",
        f"| cascade accuracy | {r['cascade_test_acc']:.4f} |",
        f"| share sent to the teacher | {100 * r['teacher_share']:.1f}% |",
        f"| cascade texts/s (batch 32) | {r['cascade_samples_per_s']:.1f} |",
        f"| teacher texts/s (batch 32) | {r['teacher_samples_per_s']:.1f} |",
        f"| cascade speed-up over the teacher | {speedup:.1f}x |",
        "",
        f"![cascade curve]({png})",
        "",
    ])
