"""An int8 table for a finished run: re-export its student as int8, score it beside float16 and fastText.

    sd int8-report -c configs/mr-demo.toml        # + fastText and its quantize
    sd int8-report -c configs/mr-paper.toml --no-fasttext

1. The run's final student (runs/<name>/student, FT else KD) is exported with ``export.dtype = "int8"``
   to ``models/<name>-int8`` (``--out``): symmetric, one float32 scale per row (sdcore/quantize.py). The
   run's own export (``models/<name>``, float16 by default) is left as it is; ``scripts/bench.py`` times
   the int8 folder as ``student-<demo|paper>-int8``.
2. Both exported students are scored on the run's dev and test splits as the service runs them (compiled
   kernel + ONNX head): accuracy, agreement of the two, the largest probability difference, table bytes.
3. fastText (``training.stages.fasttext_baseline.FASTTEXT_PARAMS``, the bench's setting, on the run's training split and
   the student's tokenization) before and after its own ``quantize`` (product quantization of the input
   matrix, ``qnorm``, ``retrain``): accuracy and model size on disk, the anchor the issue asks for.

Writes ``reports/int8-<name>.{md,json}`` (``--report``) and prints the table. Needs the run's steps up to
``ft`` (or ``kd``) done: the data splits, the vocabulary and the student checkpoint under ``runs/<name>``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdcore.model_format import load_student_manifest
from service.runtimes.contract import RuntimeOptions
from service.runtimes.student import StudentRuntime
from training.config import RunConfig
from training.data.task_data import load_split
from training.pipeline import export_final_student


def table_bytes(root: Path) -> int:
    manifest = load_student_manifest(root)
    return sum(s.bytes + (s.scale.bytes if s.scale else 0) for s in manifest.shards)


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def score_student(root: Path, splits: dict[str, tuple[list[str], np.ndarray]]) -> dict[str, Any]:
    runtime = StudentRuntime.load(root, RuntimeOptions(threads=1))
    out: dict[str, Any] = {"path": str(root), "dtype": runtime.manifest.shard_dtype,
                           "table_bytes": table_bytes(root), "folder_bytes": folder_bytes(root)}
    for split, (texts, labels) in splits.items():
        probs = runtime.predict(texts).probabilities
        out[f"{split}_acc"] = round(float((probs.argmax(1) == labels).mean()), 4)
        out[f"{split}_probabilities"] = probs
    return out


def score_fasttext(config: RunConfig, splits: dict[str, tuple[list[str], np.ndarray]],
                   params: dict[str, Any] | None = None) -> dict[str, Any]:
    """fastText with the bench's setting (or ``params``), full and after ``quantize``; sizes of the files."""
    import fasttext

    from sdcore.featurizer import Tokenizer
    from training.stages.fasttext_baseline import FASTTEXT_PARAMS

    params = params or FASTTEXT_PARAMS
    tokenize = Tokenizer(config.vocab.featurizer_settings())
    train = load_split(config.run_dir, "train")
    out: dict[str, Any] = {"params": params}
    with tempfile.TemporaryDirectory(prefix="fasttext-int8-") as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(f"__label__{y} {' '.join(tokenize(t))}\n"
                                      for t, y in zip(train.texts, train.labels, strict=True)), encoding="utf-8")
        model = fasttext.train_supervised(str(train_file), seed=config.seed, thread=1, verbose=0, **params)

        def accuracy(m: Any, texts: list[str], labels: np.ndarray) -> float:
            # The list form of predict (its one-text form breaks under numpy 2: DESIGN.md section 5).
            found, _ = m.predict([" ".join(tokenize(t)) for t in texts], k=1)
            predicted = np.asarray([int(f[0].removeprefix("__label__")) for f in found])
            return round(float((predicted == labels).mean()), 4)

        for key, suffix in (("full", ".bin"), ("quantized", ".ftz")):
            if key == "quantized":
                started = time.perf_counter()
                model.quantize(input=str(train_file), qnorm=True, retrain=True, thread=1, verbose=0)
                out["quantize_s"] = round(time.perf_counter() - started, 2)
            path = Path(tmp) / f"model{suffix}"
            model.save_model(str(path))
            out[key] = {"bytes": path.stat().st_size,
                        **{f"{s}_acc": accuracy(model, *splits[s]) for s in ("dev", "test")}}
    return out


def render(report: dict[str, Any]) -> str:
    def mib(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB"

    rows = [f"| student {s['dtype']} (`{s['path']}`) | {s['dev_acc']:.4f} | {s['test_acc']:.4f} | "
            f"{mib(s['table_bytes'])} | {mib(s['folder_bytes'])} |" for s in report["students"]]
    ft = report.get("fasttext")
    if ft:
        rows += [f"| fastText {k} (`.{'bin' if k == 'full' else 'ftz'}`) | {ft[k]['dev_acc']:.4f} | "
                 f"{ft[k]['test_acc']:.4f} | | {mib(ft[k]['bytes'])} |" for k in ("full", "quantized")]
    c = report["comparison"]
    return "\n".join([
        f"# int8 table: {report['config']}", "",
        f"Command: `{report['command']}`  ", f"Machine: {report['machine']}  ", f"Date: {report['date']}", "",
        f"Dev {report['n_dev']} texts, test {report['n_test']} texts. Students scored as the service runs them "
        "(compiled kernel + ONNX head). int8 = symmetric, one float32 scale per row (sdcore/quantize.py).", "",
        "| model | dev acc | test acc | table on disk | model on disk |", "|---|---|---|---|---|", *rows, "",
        f"int8 vs {c['against']}: dev {c['dev_acc_change_points']:+.2f} points, "
        f"test {c['test_acc_change_points']:+.2f} points; same label on {c['agreement']:.2%} of dev+test texts; "
        f"max |p_int8 - p| = {c['max_abs_prob_diff']:.2e}; table {c['table_bytes_ratio']:.3f}x the bytes.",
        *([f"fastText quantize ({ft['params']}; qnorm, retrain): {ft['quantized']['bytes'] / ft['full']['bytes']:.3f}x "
           f"the bytes, dev {100 * (ft['quantized']['dev_acc'] - ft['full']['dev_acc']):+.2f} points, test "
           f"{100 * (ft['quantized']['test_acc'] - ft['full']['test_acc']):+.2f} points."] if ft else []),
        "",
    ])


def int8_report(config: RunConfig, out: Path | None = None, report_path: Path | None = None,
                fasttext: bool = True, fasttext_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Export the run's student as int8 to ``out`` (models/<name>-int8), score it beside the run's own
    export and fastText (full and quantized); write ``report_path`` (reports/int8-<name>) .md and .json."""
    torch.set_num_threads(config.distill.threads or torch.get_num_threads())
    int8_dir = out or Path(config.models_dir) / f"{config.name}-int8"
    splits = {}
    for split in ("dev", "test"):
        data = load_split(config.run_dir, split)
        splits[split] = (list(data.texts), np.asarray(data.labels, dtype=np.int64))
    with tempfile.TemporaryDirectory(prefix="int8-ref-") as tmp:
        reference_dir = config.student_dir
        if not (reference_dir / "manifest.json").is_file():  # the run was never exported: a float16 copy
            reference_dir = export_final_student(config, Path(tmp) / config.name, "float16")
        print(f"exporting {int8_dir} (int8) ...", flush=True)
        export_final_student(config, int8_dir, "int8")
        reference = score_student(reference_dir, splits)
        quantized = score_student(int8_dir, splits)
    both = {key: np.concatenate([s[f"{split}_probabilities"] for split in ("dev", "test")])
            for key, s in (("ref", reference), ("int8", quantized))}
    comparison = {
        "against": reference["dtype"],
        "dev_acc_change_points": round(100 * (quantized["dev_acc"] - reference["dev_acc"]), 2),
        "test_acc_change_points": round(100 * (quantized["test_acc"] - reference["test_acc"]), 2),
        "agreement": float((both["ref"].argmax(1) == both["int8"].argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(both["ref"] - both["int8"]).max()),
        "table_bytes_ratio": quantized["table_bytes"] / reference["table_bytes"],
    }
    for s in (reference, quantized):
        for split in ("dev", "test"):
            del s[f"{split}_probabilities"]
    report: dict[str, Any] = {
        "config": config.source_path or config.name,
        "command": " ".join(["sd", *sys.argv[1:]]) if sys.argv else "",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "n_dev": len(splits["dev"][0]), "n_test": len(splits["test"][0]),
        "students": [reference, quantized], "comparison": comparison,
    }
    if fasttext:
        # In a fresh process, as the bench runs every system: fastText 0.9.3's trainer met NaN on the tiny
        # test run only after the rest of the suite had run in the same process, never alone.
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            report["fasttext"] = pool.submit(score_fasttext, config, splits, fasttext_params).result()
    path = report_path or Path("reports") / f"int8-{config.name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = render(report)
    path.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return report
