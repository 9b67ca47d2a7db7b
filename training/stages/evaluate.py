"""The accuracy report of a run: teacher, DAN from scratch, DAN KD, DAN KD+FT and fastText, same texts.

Test sets here are small (385 MR sentences), so every accuracy comes with a 95% Wilson score interval.
The exported student (featurizer + shards + ONNX head, no torch) is scored too, and its probabilities
are compared with the PyTorch student's on the same texts.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdcore.atomic import atomic_write_bytes, atomic_write_json
from service.runtimes.student import StudentRuntime
from training.config import RunConfig
from training.intervals import wilson
from training.stages.fasttext_baseline import train_fasttext
from training.stages.run_folder import read_done
from training.stages.run_log import step_seconds
from training.stages.student import predict_logits
from training.stages.student_runs import final_stage, has_stage, labeled_bags, load_stage


def scored(dev_acc: float, test_acc: float, n_dev: int, n_test: int) -> dict[str, Any]:
    return {
        "dev_acc": round(dev_acc, 4),
        "test_acc": round(test_acc, 4),
        "dev_ci95": [round(x, 4) for x in wilson(round(dev_acc * n_dev), n_dev)],
        "test_ci95": [round(x, 4) for x in wilson(round(test_acc * n_test), n_test)],
    }


def _student_scores(config: RunConfig, name: str, splits: dict[str, Any]) -> dict[str, float] | None:
    if not has_stage(config, name):
        return None
    model = load_stage(config, name)
    return {
        f"{split}_acc": float((predict_logits(model, bags).argmax(1) == labels).mean())
        for split, (bags, labels) in splits.items()
    }


def _exported_student_check(config: RunConfig, texts: list[str], labels: np.ndarray) -> dict[str, Any]:
    runtime = StudentRuntime.load(config.student_dir)
    probs = runtime.predict(texts).probabilities
    model = load_stage(config, final_stage(config))
    bags, _ = labeled_bags(config, "test")
    torch_probs = torch.softmax(torch.from_numpy(predict_logits(model, bags)), dim=-1).numpy()
    return {
        "test_acc": round(float((probs.argmax(1) == labels).mean()), 4),
        "max_abs_prob_diff_vs_torch": float(np.abs(probs - torch_probs).max()),
        "dtype": runtime.manifest.shard_dtype,
    }


def _labeling_facts(config: RunConfig) -> dict[str, Any]:
    """How the transfer corpus was labeled (from the label step's done marker), for the report."""
    done = read_done(config.run_folder.labels) or {}
    return {k: done.get(k) for k in ("texts", "texts_labeled", "seconds", "texts_per_second")}


def _teacher_facts(teacher: dict[str, Any]) -> dict[str, Any]:
    """The teacher's epochs (dev accuracy, seconds each; resumed epochs included), its best epoch and its
    fine-tuning speed, from its metrics (an older teacher without per-epoch records gives none)."""
    epochs = [{k: e.get(k) for k in ("epoch", "dev_acc", "seconds")} for e in teacher.get("epochs") or []]
    seconds = sum(float(e["seconds"] or 0.0) for e in epochs)
    texts = teacher.get("train_texts")
    return {"epochs": epochs, "best_epoch": teacher.get("best_epoch"), "train_seconds": round(seconds, 1),
            "train_texts_per_s": round(texts * len(epochs) / seconds, 2) if texts and seconds else None}


def _corpus_counts(config: RunConfig) -> dict[str, Any]:
    """Where the transfer corpus came from, and what the leak rule and dedup dropped (data/stats.json)."""
    path = config.run_folder.data / "stats.json"
    corpus: dict[str, Any] = json.loads(path.read_text()).get("corpus", {}) if path.is_file() else {}
    return corpus


def evaluate_run(config: RunConfig) -> dict[str, Any]:
    from training.data.task_data import load_split

    torch.set_num_threads(config.distill.threads or torch.get_num_threads())
    dev, test = load_split(config.run_dir, "dev"), load_split(config.run_dir, "test")
    n_dev, n_test = len(dev), len(test)
    splits = {s: labeled_bags(config, s) for s in ("dev", "test")}
    results: dict[str, Any] = {}

    teacher = config.run_folder.teacher_metrics()
    results["teacher"] = scored(teacher["dev_acc"], teacher["test_acc"], n_dev, n_test)
    for key, name in (("dan_scratch", "scratch"), ("dan_kd", "kd"), ("dan_kd_ft", "ft")):
        print(f"[evaluate] {key}: dev {n_dev} and test {n_test} texts", flush=True)
        acc = _student_scores(config, name, splits)
        if acc is not None:
            results[key] = scored(acc["dev_acc"], acc["test_acc"], n_dev, n_test)
    if config.evaluate.fasttext:
        train = load_split(config.run_dir, "train")
        print(f"[evaluate] fastText: tuning on dev, {len(train)} training texts", flush=True)
        ft = train_fasttext(
            (train.texts, train.labels), (dev.texts, dev.labels), (test.texts, test.labels),
            config.vocab.featurizer_settings(), seed=config.seed,
        )
        results["fasttext"] = {**scored(ft.dev_acc, ft.test_acc, n_dev, n_test), "params": ft.params}

    final_key = "dan_kd_ft" if config.finetune.enabled else "dan_kd"
    for split in ("dev", "test"):
        teacher_acc = results["teacher"][f"{split}_acc"]
        retained = results[final_key][f"{split}_acc"] / teacher_acc if teacher_acc else None
        results[f"retention_{split}"] = round(retained, 4) if retained is not None else None
    results["retention"] = results["retention_test"]  # the name older reports used
    results["final_student"] = final_key
    print("[evaluate] exported student: test accuracy without torch, and against the PyTorch model", flush=True)
    results["exported_student"] = _exported_student_check(config, test.texts, np.asarray(test.labels))
    results["meta"] = {
        "config": config.source_path or config.name,
        "command": " ".join(["sd", *sys.argv[1:]]) if sys.argv else "",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
        "n_dev": n_dev,
        "n_test": n_test,
        "corpus_texts": config.run_folder.corpus_texts(),
        # One length per teacher: fine-tuned, evaluated, exported and labeling at this many tokens.
        "teacher_max_length": teacher.get("max_length"),
        "teacher_base_model": teacher.get("base_model"),
        "labeling": _labeling_facts(config),
        "teacher_training": _teacher_facts(teacher),
        "step_seconds": step_seconds(config.run_dir),
        "corpus_sources": _corpus_counts(config),
    }
    report = Path(config.evaluate.report or f"reports/accuracy-{config.name}")
    atomic_write_json(report.with_suffix(".json"), results)
    atomic_write_bytes(report.with_suffix(".md"), render_markdown(results).encode("utf-8"))
    atomic_write_json(config.run_dir / "eval" / "results.json", results)
    print(render_markdown(results))
    return results


ROWS = (
    ("teacher", "Teacher (fine-tuned transformer)"),
    ("dan_scratch", "DAN from scratch"),
    ("dan_kd", "DAN KD"),
    ("dan_kd_ft", "DAN KD+FT"),
    ("fasttext", "fastText (tuned on dev)"),
)


def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# Accuracy: {meta['config']}",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}  ",
        f"Date: {meta['date']}  ",
        f"Dev {meta['n_dev']} texts, test {meta['n_test']} texts, transfer corpus {meta['corpus_texts']} texts.  ",
        f"Teacher: {meta.get('teacher_base_model')}, fine-tuned, evaluated and labeling at "
        f"{meta.get('teacher_max_length')} tokens.",
        "",
        "| system | dev acc | dev 95% CI | test acc | test 95% CI |",
        "|---|---|---|---|---|",
    ]
    for key, label in ROWS:
        if key in results:
            r = results[key]
            lines.append(
                f"| {label} | {r['dev_acc']:.4f} | {r['dev_ci95'][0]:.3f}-{r['dev_ci95'][1]:.3f} "
                f"| {r['test_acc']:.4f} | {r['test_ci95'][0]:.3f}-{r['test_ci95'][1]:.3f} |"
            )
    final = results[results["final_student"]]["test_acc"]
    lines += [
        "",
        f"Retention ({results['final_student']} / teacher): dev {results.get('retention_dev')}, "
        f"test {results['retention']}",
    ]
    for key in ("dan_scratch", "fasttext"):
        if key in results:
            gain = 100 * (final - results[key]["test_acc"])
            lines.append(f"{results['final_student']} - {key} (test): {gain:+.1f} points")
    exp = results["exported_student"]
    lines += [
        "",
        f"Exported student ({exp['dtype']} shards, ONNX head, no torch): test acc {exp['test_acc']:.4f}, "
        f"max |p - p_torch| = {exp['max_abs_prob_diff_vs_torch']:.2e}",
        "",
    ]
    if "fasttext" in results:
        lines.append(f"fastText hyper-parameters chosen on dev: {results['fasttext']['params']}")
    lines += _cost_lines(meta)
    return "\n".join(lines) + "\n"


def _cost_lines(meta: dict[str, Any]) -> list[str]:
    """What the run cost: the teacher's epochs, labeling speed, each step's time (absent in older reports)."""
    lines: list[str] = []
    t = meta.get("teacher_training") or {}
    if t.get("epochs"):
        epochs = ", ".join(f"{e['epoch']}: dev {e['dev_acc']:.4f} in {e['seconds'] / 60:.0f} min" for e in t["epochs"])
        lines += ["", f"Teacher fine-tuning: {len(t['epochs'])} epoch(s), best {t['best_epoch']} ({epochs}); "
                      f"{t['train_texts_per_s']} texts/s."]
    lab = meta.get("labeling") or {}
    if lab.get("texts_per_second"):
        lines.append(f"Labeling: {lab['texts_labeled']} texts labeled in this run's label step, "
                     f"{lab['texts_per_second']} texts/s.")
    steps = meta.get("step_seconds") or {}
    if steps:
        lines.append("Step times (run.json, minutes): " + ", ".join(f"{k} {v / 60:.1f}" for k, v in steps.items()))
    return lines
