"""What ``make bench`` builds before it times anything: the workloads and the baselines' models.

- Workloads (DESIGN.md section 5): the 4,000 MR sentences (about 21 words) and the 1,500 full reviews
  of pang&lee1 (about 745 words), each review being its lines joined with spaces (the whitespace
  collapse the whole project uses). Each list is shuffled with a fixed seed, so a prefix (what a slow
  system gets) is a fair sample and every system sees the same texts in the same order.
- The RoBERTa-Large shape: ``training.testing.tiny_models.make_large_shaped_checkpoint`` (random weights, 355M
  parameters: speed only), and optionally its ONNX export as a teacher folder, made with the
  project's exporter functions so it runs in the same ``TeacherRuntime`` as the real teacher.
- fastText trained on the MR training split (one fixed, reasonable setting, not the evaluate step's
  grid: the benchmark needs its speed, and its dev accuracy is recorded beside it).

Built things are cached under ``--cache`` (default ``.cache/bench``) and reused by later runs.
"""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

from training.data.task_data import MR_REVIEWS_FILE, collapse, fetch_mr, load_mr
from training.stages.fasttext_baseline import FASTTEXT_PARAMS


def full_reviews(data_cache: Path) -> list[str]:
    """The 1,500 full reviews of pang&lee1, each one text (its lines joined, whitespace collapsed)."""
    folder = fetch_mr(data_cache)
    with (folder / MR_REVIEWS_FILE).open(encoding="utf-8-sig", newline="") as f:
        return [text for text in (collapse(row[1]) for row in csv.reader(f) if len(row) == 2) if text]


def load_workloads(data_cache: Path, seed: int = 13, limit: int = 0) -> dict[str, list[str]]:
    """{"sentences": ..., "reviews": ...}, each shuffled with ``seed``; ``limit`` > 0 keeps a prefix."""
    task = load_mr(data_cache)
    sentences = [*task.train.texts, *task.dev.texts, *task.test.texts]
    reviews = full_reviews(data_cache)
    out = {}
    for name, texts in (("sentences", sentences), ("reviews", reviews)):
        shuffled = list(texts)
        random.Random(seed).shuffle(shuffled)
        out[name] = shuffled[:limit] if limit > 0 else shuffled
    return out


def ensure_large_checkpoint(cache: Path, data_cache: Path) -> Path:
    """The RoBERTa-Large-shaped random checkpoint (tokenizer trained on MR texts), built once."""
    from training.data.task_data import mr_review_lines
    from training.testing.tiny_models import make_large_shaped_checkpoint

    out = cache / "roberta-large-shaped"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    task = load_mr(data_cache)
    texts = [*task.train.texts, *mr_review_lines(data_cache)]
    tmp = cache / ".roberta-large-shaped.tmp"
    make_large_shaped_checkpoint("roberta", tmp, texts, num_labels=len(task.label_names))
    tmp.rename(out)
    return out


def ensure_large_onnx(checkpoint: Path, cache: Path, max_length: int = 512) -> Path:
    """The checkpoint exported as a teacher folder (model.onnx + tokenizer + manifest), built once."""
    from sdcore.atomic import atomic_dir
    from sdcore.model_format import TEACHER_ONNX, TEACHER_TOKENIZER_DIR, TeacherManifest
    from sdcore.model_writer import file_entry, now_iso, write_manifest
    from training.stages.teacher_export import export_onnx, input_names, save_serving_tokenizer
    from training.stages.teacher_model import label_names, load_classifier, max_input_tokens

    final = cache / "roberta-large-shaped-onnx"
    if (final / "manifest.json").is_file():
        return final
    tokenizer, model = load_classifier(checkpoint)
    length = min(max_length, max_input_tokens(model.config))
    names = input_names(tokenizer)
    with atomic_dir(final) as tmp:
        export_onnx(model, tokenizer, names, tmp / TEACHER_ONNX, "a long enough example text " * 8)
        save_serving_tokenizer(tokenizer, tmp / TEACHER_TOKENIZER_DIR, length)
        files = [TEACHER_ONNX, *sorted(p.relative_to(tmp).as_posix()
                                       for p in (tmp / TEACHER_TOKENIZER_DIR).rglob("*") if p.is_file())]
        write_manifest(tmp, TeacherManifest(
            name=final.name, labels=label_names(model.config), max_length=length, input_names=names,
            base_model="random RoBERTa-Large shape (speed only)", files=[file_entry(tmp, f) for f in files],
            metrics={"note": "random weights: speed only"}, created_at=now_iso(),
        ))
    return final


def ensure_fasttext(cache: Path, data_cache: Path, seed: int = 13) -> Path:
    """fastText trained on the MR training split with ``FASTTEXT_PARAMS``; dev accuracy saved beside it."""
    import fasttext

    from sdcore.featurizer import FeaturizerSettings, Tokenizer

    out = cache / "fasttext-mr.bin"
    if out.is_file():
        return out
    cache.mkdir(parents=True, exist_ok=True)
    task = load_mr(data_cache)
    tokenize = Tokenizer(FeaturizerSettings())
    train_file = cache / "fasttext-train.txt"
    train_file.write_text("".join(f"__label__{task.label_names[y]} {' '.join(tokenize(t))}\n"
                                  for t, y in zip(task.train.texts, task.train.labels, strict=True)), encoding="utf-8")
    started = time.perf_counter()
    model = fasttext.train_supervised(str(train_file), seed=seed, thread=1, verbose=0, **FASTTEXT_PARAMS)
    train_s = time.perf_counter() - started
    found, _ = model.predict([" ".join(tokenize(t)) for t in task.dev.texts], k=1)
    predicted = [names[0].removeprefix("__label__") for names in found]
    dev_acc = sum(p == task.label_names[y] for p, y in zip(predicted, task.dev.labels, strict=True)) / len(predicted)
    model.save_model(str(out))
    out.with_suffix(".json").write_text(json.dumps(
        {"params": FASTTEXT_PARAMS, "dev_acc": round(dev_acc, 4), "train_s": round(train_s, 2),
         "train_texts": len(task.train.texts)}, indent=2) + "\n", encoding="utf-8")
    train_file.unlink()
    return out


def prepare_baselines(wanted: list[str], cache: Path, data_cache: Path) -> dict[str, str]:
    """Build (or find) the baselines' models (run it in a child process: it imports torch)."""
    paths: dict[str, str] = {}
    if "fasttext" in wanted:
        paths["fasttext"] = str(ensure_fasttext(cache, data_cache))
    if any(w.startswith("roberta-large") for w in wanted):
        checkpoint = ensure_large_checkpoint(cache, data_cache)
        paths["roberta-large-pytorch"] = str(checkpoint)
        if "roberta-large-onnx" in wanted:
            paths["roberta-large-onnx"] = str(ensure_large_onnx(checkpoint, cache))
    return paths
