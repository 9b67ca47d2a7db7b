"""The Model2Vec and SetFit peers, run in the peers' own environment (``make peers-env``: ``.venv-peers``).

``.venv-peers/bin/python training/studies/peers/isolated.py --method {model2vec,model2vec_kd,setfit}
--input runs/<run>/peers/input.json --output DIR``. It imports nothing of the project (that environment
pins ``transformers<5.4``, which model2vec's distillation needs) and only the standard library before its
input is checked, so a bad input is refused on any interpreter. The peer libraries are imported lazily.

- ``model2vec``: ``model2vec.distill.distill`` turns the base encoder into static token embeddings (PCA
  to 256 dims), then ``StaticModelForClassification`` is fitted on the gold training set, with dev as
  its early-stopping set; ``model2vec_kd`` fits the same on the teacher-labeled ``kd`` set. The fitted
  model is saved as model2vec's numpy pipeline and reloaded from disk for the predictions, so what is
  scored is what ``sd bench`` serves.
- ``setfit``: SetFit's contrastive fine-tuning of the base encoder on the gold training set, then its
  logistic-regression head; capped at ``max_steps`` steps so that it fits 2 CPU cores (a few minutes).

Writes ``DIR/<method>.json`` (dev and test predictions as label indices, training seconds, model bytes,
settings, versions) atomically; exit 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

METHODS = ("model2vec", "model2vec_kd", "setfit")
DEFAULTS: dict[str, dict[str, Any]] = {
    "model2vec": {"pca_dims": 256, "learning_rate": 1e-3, "batch_size": 256, "early_stopping_patience": 5},
    "setfit": {"max_steps": 400, "batch_size": 16, "num_iterations": 5, "body_learning_rate": 2e-5,
               "max_length": 128},
}


class InputError(ValueError):
    """The input file is not what a peer can train on."""


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def check_inputs(method: str, data: dict[str, Any]) -> None:
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; methods are {list(METHODS)}")
    for key in ("labels", "base", "seed", "train", "dev", "test") + (("kd",) if method == "model2vec_kd" else ()):
        if key not in data or data[key] is None:
            raise InputError(f"missing key {key!r}")
    labels = data["labels"]
    if not isinstance(labels, list) or len(labels) < 2:
        raise InputError("'labels' must list at least two label names")
    for split in ("train", "kd") if method == "model2vec_kd" else ("train",):
        texts, ys = data[split].get("texts"), data[split].get("labels")
        if not isinstance(texts, list) or not isinstance(ys, list) or len(texts) != len(ys) or not texts:
            raise InputError(f"'{split}' needs as many texts as labels, at least one")
        bad = [y for y in ys if not isinstance(y, int) or not 0 <= y < len(labels)]
        if bad:
            raise InputError(f"'{split}' has a label index outside 0..{len(labels) - 1}: {bad[0]!r}")
    for split in ("dev", "test"):
        if not isinstance(data[split].get("texts"), list):
            raise InputError(f"'{split}' needs texts")
    if not Path(data["base"], "config.json").is_file():
        raise InputError(f"base {data['base']!r}: not a local Hugging Face folder (no config.json)")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_model2vec(data: dict[str, Any], out: Path, settings: dict[str, Any], kd: bool) -> dict[str, Any]:
    from model2vec.distill import distill
    from model2vec.inference import StaticModelPipeline
    from model2vec.train import StaticModelForClassification

    names = data["labels"]
    fit_on = data["kd"] if kd else data["train"]
    started = time.perf_counter()
    note(f"model2vec: distilling static embeddings from {data['base']}")
    static = distill(model_name=data["base"], pca_dims=settings["pca_dims"])
    distilled_s = time.perf_counter() - started
    note(f"model2vec: distilled in {distilled_s:.0f} s; fitting the classifier on {len(fit_on['texts'])} texts")
    classifier = StaticModelForClassification.from_static_model(model=static, out_dim=len(names))
    dev_labels = data["dev"].get("labels")
    validation: dict[str, Any] = {}
    if dev_labels:  # dev selects the epoch, as it selects the DAN's
        validation = {"X_val": data["dev"]["texts"], "y_val": [names[y] for y in dev_labels]}
    classifier.fit(fit_on["texts"], [names[y] for y in fit_on["labels"]], learning_rate=settings["learning_rate"],
                   batch_size=settings["batch_size"], early_stopping_patience=settings["early_stopping_patience"],
                   random_seed=data["seed"], device="cpu", **validation)
    train_s = time.perf_counter() - started
    model_dir = out / "model"
    classifier.to_pipeline().save_pretrained(str(model_dir))
    pipeline = StaticModelPipeline.from_pretrained(model_dir)  # what is scored is what was saved
    index = {name: i for i, name in enumerate(names)}
    predictions = {split: [index[str(p)] for p in pipeline.predict(data[split]["texts"])] for split in ("dev", "test")}
    import model2vec

    return {"dev_pred": predictions["dev"], "test_pred": predictions["test"], "train_seconds": round(train_s, 1),
            "distill_seconds": round(distilled_s, 1), "model_bytes": folder_bytes(model_dir),
            "model_path": str(model_dir), "versions": {"model2vec": model2vec.__version__}}


def train_setfit(data: dict[str, Any], out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import setfit
    import transformers
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    names = data["labels"]
    started = time.perf_counter()
    model = SetFitModel.from_pretrained(data["base"], local_files_only=True, labels=names)
    train = Dataset.from_dict({"text": data["train"]["texts"], "label": data["train"]["labels"]})
    with tempfile.TemporaryDirectory(dir=out, prefix=".checkpoints-") as checkpoints:
        args = TrainingArguments(output_dir=checkpoints, batch_size=settings["batch_size"],
                                 max_steps=settings["max_steps"], num_iterations=settings["num_iterations"],
                                 body_learning_rate=settings["body_learning_rate"], max_length=settings["max_length"],
                                 seed=data["seed"], report_to="none", save_strategy="no", show_progress_bar=False)

        def accuracy(predicted: Any, gold: Any) -> dict[str, float]:  # a callable: a string metric loads a hub
            return {"accuracy": float(np.mean(np.asarray(predicted) == np.asarray(gold)))}

        note(f"setfit: {settings['max_steps']} contrastive steps, then the head, on {train.num_rows} texts")
        Trainer(model=model, args=args, train_dataset=train, metric=accuracy).train()
    train_s = time.perf_counter() - started
    model_dir = out / "model"
    model.save_pretrained(str(model_dir))
    index = {name: i for i, name in enumerate(names)}
    predictions = {}
    for split in ("dev", "test"):
        found = model.predict(data[split]["texts"], batch_size=64)
        predictions[split] = [index[p] if isinstance(p, str) else int(p) for p in list(found)]
    return {"dev_pred": predictions["dev"], "test_pred": predictions["test"], "train_seconds": round(train_s, 1),
            "model_bytes": folder_bytes(model_dir), "model_path": str(model_dir),
            "versions": {"setfit": setfit.__version__, "transformers": transformers.__version__}}


def write_json(path: Path, value: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.input.read_text(encoding="utf-8"))
        check_inputs(args.method, data)
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and InputError are ValueErrors
        print(f"error: {args.input}: {exc}", file=sys.stderr)
        return 2
    family = "setfit" if args.method == "setfit" else "model2vec"
    settings = {**DEFAULTS[family], **(data.get("settings") or {}).get(family, {})}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach a hub; the base is a local folder
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # per-step bars would fill the peer's log
    args.output.mkdir(parents=True, exist_ok=True)
    threads = int(os.environ.get("SD_PEER_THREADS", "0"))
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    seed_everything(int(data["seed"]))
    if family == "setfit":
        result = train_setfit(data, args.output, settings)
    else:
        result = train_model2vec(data, args.output, settings, kd=args.method == "model2vec_kd")
    write_json(args.output / f"{args.method}.json", {"method": args.method, "settings": settings, **result})
    note(f"{args.method}: done in {result['train_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
