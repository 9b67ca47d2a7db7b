"""The exported teacher with no torch: ``tokenizers`` + onnxruntime (DESIGN.md sections 2 and 3).

A transformer's cost grows with the padded length of its batch, so ``logits`` tokenizes all texts
once, sorts them by token length, runs batches of similar lengths padded only to each batch's longest
text, and puts the results back in input order. Padding is built with numpy from the token lists; the
pad id and truncation length come from the folder's ``tokenizer.json`` and manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from sdcore.model_format import (
    MANIFEST,
    TEACHER_ONNX,
    TEACHER_TOKENIZER_DIR,
    ModelFormatError,
    TeacherManifest,
    load_teacher_manifest,
    verify_teacher,
)
from service.runtimes.contract import Kind, ModelFacts, Predictions, RuntimeOptions, as_texts
from service.runtimes.onnx_session import onnx_session, output_dtype, softmax

FloatArray = npt.NDArray[np.float32]
TOKENIZER_FILE = f"{TEACHER_TOKENIZER_DIR}/tokenizer.json"
_KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def load_tokenizer(root: Path, max_length: int) -> tuple[Tokenizer, int]:
    """The folder's tokenizer, truncating at ``max_length`` and not padding (we pad), and its pad id."""
    path = root / TOKENIZER_FILE
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception for any parse error
        raise ModelFormatError(path, f"tokenizer cannot be loaded: {exc}") from exc
    padding = tokenizer.padding
    if not padding:
        raise ModelFormatError(path, "tokenizer.json names no padding token")
    pad_id = int(padding["pad_id"])
    if not 0 <= pad_id < tokenizer.get_vocab_size():
        raise ModelFormatError(path, f"pad id {pad_id} is outside the vocabulary")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer, pad_id


def pad_batch(encodings: Sequence[Encoding], pad_id: int, names: Sequence[str]) -> dict[str, np.ndarray]:
    """int64 arrays [batch, longest] for the model's inputs; one numpy scatter per input."""
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    mask = np.arange(int(lengths.max(initial=0)))[None, :] < lengths[:, None]
    feed: dict[str, np.ndarray] = {}
    for name in names:
        if name == "attention_mask":
            feed[name] = mask.astype(np.int64)
            continue
        array = np.full(mask.shape, pad_id if name == "input_ids" else 0, dtype=np.int64)
        rows = [e.ids if name == "input_ids" else e.type_ids for e in encodings]
        array[mask] = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
        feed[name] = array
    return feed


def token_budget_batches(sorted_lengths: Sequence[int], batch_size: int, max_tokens: int = 0) -> list[slice]:
    """Consecutive batches over texts sorted by token length (ascending), each at most ``batch_size``
    texts and, when ``max_tokens`` > 0, at most ``max_tokens`` padded tokens (texts x the batch's
    longest), so a batch of long texts holds fewer of them (text-embeddings-inference batches this way).
    A single text longer than the budget still gets a batch of its own."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    batches: list[slice] = []
    start = 0
    for i, length in enumerate(sorted_lengths):
        size = i - start + 1  # the batch if text i joins it; text i is its longest (ascending order)
        if size > batch_size or (max_tokens and size > 1 and size * length > max_tokens):
            batches.append(slice(start, i))
            start = i
    if start < len(sorted_lengths):
        batches.append(slice(start, len(sorted_lengths)))
    return batches


class TeacherRuntime:
    """A teacher folder: texts -> logits or label probabilities (the runtime contract)."""

    kind: Kind = "teacher"

    def __init__(
        self,
        root: Path,
        manifest: TeacherManifest,
        tokenizer: Tokenizer,
        pad_id: int,
        session: ort.InferenceSession,
        batch_size: int = 32,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.root = root
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.session = session
        self.batch_size = batch_size
        self.input_names = list(manifest.input_names)
        m = manifest
        self.facts = ModelFacts(
            m.name, "teacher", str(root), list(m.labels), dict(m.metrics), m.created_at,
            {"max_length": m.max_length, "base_model": m.base_model, "dtype": output_dtype(session)},
        )

    @classmethod
    def load(cls, root: Path | str, options: RuntimeOptions = RuntimeOptions()) -> TeacherRuntime:
        root = Path(root)
        manifest = load_teacher_manifest(root)
        unknown = sorted(set(manifest.input_names) - set(_KNOWN_INPUTS))
        if unknown or "input_ids" not in manifest.input_names:
            raise ModelFormatError(
                root / MANIFEST,
                f"input_names {manifest.input_names}: need input_ids, may have only {list(_KNOWN_INPUTS)}",
            )
        if manifest.max_length < 2:
            raise ModelFormatError(root / MANIFEST, f"max_length {manifest.max_length} is too short")
        listed = {entry.path for entry in manifest.files}
        for needed in (TEACHER_ONNX, TOKENIZER_FILE):
            if needed not in listed:
                raise ModelFormatError(root / needed, "required file is not listed in the manifest")
        verify_teacher(root, manifest, checksum=options.verify_checksums)
        tokenizer, pad_id = load_tokenizer(root, manifest.max_length)
        try:
            session = onnx_session(root / TEACHER_ONNX, options.threads, options.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelFormatError(root / TEACHER_ONNX, f"ONNX model cannot be loaded: {exc}") from exc
        graph_inputs = sorted(i.name for i in session.get_inputs())
        if graph_inputs != sorted(manifest.input_names):
            raise ModelFormatError(root / TEACHER_ONNX, f"inputs {graph_inputs} != manifest {manifest.input_names}")
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width != len(manifest.labels):
            problem = f"{width} logits, the manifest has {len(manifest.labels)} labels"
            raise ModelFormatError(root / TEACHER_ONNX, problem)
        return cls(root, manifest, tokenizer, pad_id, session, options.batch_size)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    def encode(self, texts: Sequence[str]) -> list[Encoding]:
        """Token ids with the model's special tokens, truncated at ``max_length``."""
        return self.tokenizer.encode_batch_fast(list(texts))

    def logits(
        self,
        texts: Sequence[str] | str,
        batch_size: int | None = None,
        on_batch: Callable[[int], object] | None = None,
        max_tokens: int = 0,
    ) -> FloatArray:
        """float32 logits [len(texts), labels] in input order; ``on_batch(n)`` after each batch.

        Batches hold at most ``batch_size`` texts (default: the load option) of similar length and,
        with ``max_tokens`` > 0, at most that many padded tokens (``token_budget_batches``)."""
        batch_size = batch_size or self.batch_size
        texts = as_texts(texts)
        out = np.empty((len(texts), len(self.manifest.labels)), dtype=np.float32)
        encodings = self.encode(texts) if texts else []
        lengths = np.asarray([len(e.ids) for e in encodings], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        for batch in token_budget_batches(lengths[order].tolist(), batch_size, max_tokens):
            idx = order[batch]
            feed = pad_batch([encodings[i] for i in idx], self.pad_id, self.input_names)
            (logits,) = self.session.run(["logits"], feed)
            out[idx] = logits
            if on_batch is not None:
                on_batch(idx.size)
        return out

    def predict(self, texts: Sequence[str] | str, batch_size: int | None = None) -> Predictions:
        """Label probabilities [len(texts), labels] (and the logits); the texts are sorted by token length
        and run in ONNX batches of ``batch_size``, so short texts of different requests share little
        padding. A bare string is one text."""
        logits = self.logits(as_texts(texts), batch_size)
        return Predictions(softmax(logits), logits=logits)
