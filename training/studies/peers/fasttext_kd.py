"""The ``fasttext_kd`` peer: fastText on the teacher's labels (``kd``: the teacher's argmax over the
transfer corpus plus the gold training set), tuned on dev, saved with its quantized ``.ftz``.

``python -m training.studies.peers.fasttext_kd --input runs/<run>/peers/input.json --output DIR``; run by
``study.py`` in a process of its own. Word n-grams up to 4 and character n-grams (``minn``/``maxn``, the
answer of fastText to unknown words) are in the grid, so fastText gets its best setting here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdcore.atomic import atomic_write_json
from sdcore.featurizer import FeaturizerSettings
from training.stages.fasttext_baseline import train_fasttext

# Coordinates of the dev search (every combination is trained): epochs and word n-grams as the paper's
# baseline would tune them, character n-grams off or fastText's usual 3-6; lr 0.5 suits a large
# pseudo-labeled set (0.1 underfits it in 5-10 epochs).
DEFAULT_GRID: dict[str, Sequence[Any]] = {"lr": [0.5], "epoch": [5, 10], "wordNgrams": [2, 4],
                                      "charNgrams": [[0, 0], [3, 6]]}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run(inputs: dict[str, Any], out: Path, threads: int,
        grid: dict[str, Sequence[Any]] | None = None) -> dict[str, Any]:
    settings = FeaturizerSettings(**inputs["featurizer"])
    kd, dev, test = inputs["kd"], inputs["dev"], inputs["test"]
    started = time.perf_counter()
    result = train_fasttext((kd["texts"], kd["labels"]), (dev["texts"], dev["labels"]),
                            (test["texts"], [0] * len(test["texts"])), settings, seed=inputs["seed"],
                            grid=grid or DEFAULT_GRID, threads=threads, save_to=out / "model")
    seconds = time.perf_counter() - started
    if result.model_path is None or result.quantized is None:
        raise RuntimeError("train_fasttext kept no model although save_to was given")
    common = {"settings": {"grid": grid or DEFAULT_GRID, "threads": threads, "chosen": result.params},
              "versions": {"fasttext": "0.9.3"}, "train_seconds": round(seconds, 1)}
    return {
        "fasttext_kd": {"method": "fasttext_kd", "dev_pred": result.dev_predictions,
                        "test_pred": result.test_predictions, "model_bytes": result.model_path.stat().st_size,
                        "model_path": str(result.model_path), **common},
        "fasttext_kd_ftz": {"method": "fasttext_kd_ftz", "dev_pred": result.quantized["dev_predictions"],
                            "test_pred": result.quantized["test_predictions"],
                            "model_bytes": Path(result.quantized["path"]).stat().st_size,
                            "model_path": str(result.quantized["path"]), **common},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.studies.peers.fasttext_kd", description=__doc__)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    try:
        inputs = json.loads(args.input.read_text(encoding="utf-8"))
        missing = [k for k in ("featurizer", "kd", "dev", "test", "seed") if k not in inputs]
        if missing:
            raise ValueError(f"{args.input}: missing keys {missing}")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for name, result in run(inputs, args.output, args.threads).items():
        atomic_write_json(args.output / f"{name}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
