"""fastText (``fasttext==0.9.3``), the classic fast text classifier, as a baseline on the same split.

Texts are given in the same lowercased tokenization as the student, so both see the same words.
Hyper-parameters are chosen on dev from a small grid (learning rate, epochs, word n-grams).
Under numpy 2, fastText 0.9.3's single-text ``predict`` fails (it wraps the probabilities in
``np.array(..., copy=False)``); its list form calls the C++ ``multilinePredict`` and returns plain
lists, so we predict a whole list per call (DESIGN.md section 5 notes the numpy 2 breakage).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdcore.featurizer import FeaturizerSettings, Tokenizer
from training.progress import track

# The bench's and the int8 report's one fastText setting (the best of a small dev check on MR).
FASTTEXT_PARAMS: dict[str, Any] = {"lr": 0.1, "epoch": 25, "wordNgrams": 2}


@dataclass
class FastTextResult:
    dev_acc: float
    test_acc: float
    params: dict[str, Any]
    test_predictions: list[int]
    dev_predictions: list[int] = field(default_factory=list)
    # With ``save_to``: the best model as ``model.bin`` and quantized as ``model.ftz`` (fastText's own
    # product quantization, retrained on the same file), with the quantized model's dev and test scores.
    model_path: Path | None = None
    quantized: dict[str, Any] | None = None


def _line(tokenize: Tokenizer, text: str) -> str:
    return " ".join(tokenize(text))


def _predict(model: Any, tokenize: Tokenizer, texts: Sequence[str]) -> np.ndarray:
    labels, _ = model.predict([_line(tokenize, t) for t in texts], k=1)
    return np.asarray([int(found[0].removeprefix("__label__")) for found in labels], dtype=np.int64)


def _fasttext_args(params: dict[str, Any]) -> dict[str, Any]:
    """A grid point as ``train_supervised`` takes it: ``charNgrams`` = [minn, maxn] (one grid axis, so
    that no point has minn without maxn), the rest as they are."""
    args = {k: v for k, v in params.items() if k != "charNgrams"}
    if "charNgrams" in params:
        args["minn"], args["maxn"] = params["charNgrams"]
    return args


def _accuracy(predicted: np.ndarray, gold: Sequence[int]) -> float:
    return float((predicted == np.asarray(gold)).mean()) if len(gold) else 0.0


def train_fasttext(
    train: tuple[Sequence[str], Sequence[int]],
    dev: tuple[Sequence[str], Sequence[int]],
    test: tuple[Sequence[str], Sequence[int]],
    settings: FeaturizerSettings,
    seed: int = 13,
    grid: dict[str, Sequence[Any]] | None = None,
    threads: int = 1,
    save_to: Path | None = None,
) -> FastTextResult:
    """The best of ``grid`` on dev; ``threads`` trains faster on a big (e.g. teacher-labeled) set;
    ``save_to`` keeps the best model and its quantized form there (for the bench and the peers study)."""
    import fasttext  # optional: part of the training dependency group

    tokenize = Tokenizer(settings)
    grid = grid or {"lr": [0.1, 0.5, 1.0], "epoch": [5, 25, 50], "wordNgrams": [1, 2, 3]}
    best: tuple[float, dict[str, Any], Any] | None = None
    with tempfile.TemporaryDirectory(prefix="fasttext-") as tmp:
        path = Path(tmp) / "train.txt"
        path.write_text(
            "".join(f"__label__{y} {_line(tokenize, t)}\n" for t, y in zip(*train, strict=True)), encoding="utf-8"
        )
        names = list(grid)
        settings_grid = list(itertools.product(*(grid[n] for n in names)))
        for values in track(settings_grid, total=len(settings_grid), desc="fastText grid", unit="settings"):
            params = dict(zip(names, values, strict=True))
            try:
                model = fasttext.train_supervised(str(path), seed=seed, thread=threads, verbose=0,
                                                  **_fasttext_args(params))
            except RuntimeError:  # "Encountered NaN": a too-high learning rate diverged; not a candidate
                continue
            acc = _accuracy(_predict(model, tokenize, dev[0]), dev[1])
            if best is None or acc > best[0]:
                best = (acc, params, model)
        if best is None:
            raise RuntimeError(f"fastText diverged for every setting of the grid {grid}")
        dev_acc, params, model = best
        dev_pred, test_pred = _predict(model, tokenize, dev[0]), _predict(model, tokenize, test[0])
        result = FastTextResult(dev_acc, _accuracy(test_pred, test[1]), params, test_pred.tolist(), dev_pred.tolist())
        if save_to is not None:
            save_to.mkdir(parents=True, exist_ok=True)
            result.model_path = save_to / "model.bin"
            model.save_model(str(result.model_path))
            model.quantize(input=str(path), retrain=True, qnorm=True, thread=threads, verbose=0)
            model.save_model(str(save_to / "model.ftz"))
            q_dev, q_test = _predict(model, tokenize, dev[0]), _predict(model, tokenize, test[0])
            result.quantized = {"dev_acc": _accuracy(q_dev, dev[1]), "test_acc": _accuracy(q_test, test[1]),
                                "dev_predictions": q_dev.tolist(), "test_predictions": q_test.tolist(),
                                "path": save_to / "model.ftz"}
    return result
