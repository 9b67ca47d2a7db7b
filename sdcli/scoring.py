"""``sd test MODEL FILE``: score an exported model (student or teacher) on a labeled file.

FILE takes the formats of the training data (``training.data.task_data``: ``.csv`` / ``.tsv`` with a header
naming ``text`` and ``label``, or ``.jsonl`` with ``{"text", "label"}``); every label must be one of
the model's. The report: accuracy with its 95% Wilson interval (``training.intervals``), per-class
precision, recall and F1 and the confusion matrix (scikit-learn), and for a student the accuracy by
n-gram coverage bucket (the paper's stated weakness: low-coverage texts are classified worse). It
prints as tables on stdout, and as JSON with ``--json PATH``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from sdcli.predict import Model, load_model
from sdcore.atomic import atomic_write_json
from sdcore.errors import ProjectError
from training.data.task_data import DataError, read_labeled
from training.intervals import coverage_buckets, interval
from training.progress import progress


def _predict_all(model: Model, texts: list[str], batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted label ids and (student) coverage of every text, in batches with progress on stderr."""
    predicted: list[np.ndarray] = []
    coverage: list[np.ndarray] = []
    with progress(total=len(texts), desc="test", unit=" texts", leave=False) as bar:  # the report says texts/s
        for start in range(0, len(texts), batch_size):
            out = model.predict(texts[start : start + batch_size])
            predicted.append(out.probabilities.argmax(axis=1))
            if out.coverage is not None:
                coverage.append(out.coverage)
            bar.update(len(out))
    return np.concatenate(predicted), (np.concatenate(coverage) if coverage else None)


def score_file(model_dir: Path, path: Path, batch_size: int = 256, threads: int | None = None) -> dict[str, Any]:
    """The report of ``sd test`` as a dict (what ``--json`` writes)."""
    try:
        from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    except ImportError as exc:  # a serving-only install: scikit-learn comes with the [train] extra
        raise ProjectError("sd test needs scikit-learn", hint="pip install '.[train]'") from exc

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = load_model(model_dir, threads)
    texts, names = read_labeled(Path(path))
    if not texts:
        raise DataError(f"{path}: no records")
    labels = model.labels
    unknown = sorted(set(names) - set(labels))
    if unknown:
        raise DataError(f"{path}: labels {unknown} are not the model's labels {labels}",
                        hint=f"{model_dir} was trained on those labels only")
    index = {name: i for i, name in enumerate(labels)}
    truth = np.asarray([index[n] for n in names])
    started = time.perf_counter()
    predicted, coverage = _predict_all(model, texts, batch_size)
    seconds = time.perf_counter() - started
    right = predicted == truth
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=ids, zero_division=0
    )
    correct = int(right.sum())
    return {
        "model": model.facts.name,
        "kind": model.kind,
        "file": str(path),
        "texts": len(texts),
        "accuracy": round(correct / len(texts), 4),
        "accuracy_ci95": interval(correct, len(texts)),
        "macro_f1": round(float(np.mean(f1)), 4),
        "per_class": [
            {"label": name, "precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
             "support": int(s)}
            for name, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        ],
        # rows: the true label, columns: the predicted one, both in the model's label order
        "confusion_matrix": {"labels": labels,
                             "matrix": confusion_matrix(truth, predicted, labels=ids).tolist()},
        "coverage_buckets": None if coverage is None else coverage_buckets(coverage, right),
        "texts_per_second": round(len(texts) / seconds, 1) if seconds > 0 else None,
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    """The report as tables (rich draws plain text when stdout is not a terminal)."""
    lo, hi = report["accuracy_ci95"]
    console.print(f"{report['kind']} {report['model']} on {report['file']}: {report['texts']} texts, "
                  f"{report['texts_per_second']} texts/s")
    console.print(f"accuracy {report['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}), macro F1 {report['macro_f1']:.4f}")
    classes = Table("label", "precision", "recall", "f1", "support", title="per class")
    for row in report["per_class"]:
        classes.add_row(row["label"], f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}",
                        str(row["support"]))
    console.print(classes)
    confusion = report["confusion_matrix"]
    matrix = Table("true \\ predicted", *confusion["labels"], title="confusion matrix")
    for name, counts in zip(confusion["labels"], confusion["matrix"], strict=True):
        matrix.add_row(name, *map(str, counts))
    console.print(matrix)
    if report["coverage_buckets"] is not None:
        buckets = Table("coverage", "texts", "accuracy", "95% CI", title="accuracy by n-gram coverage")
        for row in report["coverage_buckets"]:
            (a, b), (c_lo, c_hi) = row["coverage"], row["accuracy_ci95"]
            buckets.add_row(f"{a:.1f}-{b:.1f}", str(row["texts"]), f"{row['accuracy']:.4f}", f"{c_lo:.4f}-{c_hi:.4f}")
        console.print(buckets)


def model_test(model_dir: Path, path: Path, json_out: Path | None = None, batch_size: int = 256,
              threads: int | None = None, console: Console | None = None) -> dict[str, Any]:
    """``sd test``: score, print the tables, write ``json_out`` when given."""
    report = score_file(model_dir, path, batch_size, threads)
    print_report(report, console or Console())
    if json_out is not None:
        atomic_write_json(Path(json_out), report)
    return report
