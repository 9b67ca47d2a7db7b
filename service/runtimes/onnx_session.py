"""onnxruntime sessions as the runtimes open them, and the softmax both runtimes apply to logits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

FloatArray = npt.NDArray[np.float32]

_ONNX_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def softmax(logits: np.ndarray) -> FloatArray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


def session_options(threads: int | None, allow_spinning: bool = True) -> ort.SessionOptions:
    """``threads`` intra-op threads (None: onnxruntime's default, one per core).

    ``allow_spinning=False`` makes idle pool threads sleep instead of busy-waiting after each run. The
    student's ONNX calls (gather, head) are short and separated by numpy work on the calling thread,
    which the spinning threads starve: with 2 threads on 2 busy cores the student ran 3x slower with
    spinning (462 vs 1,325 reviews/s, batch 32; reports/bench.md).
    """
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def onnx_session(
    model: Path | bytes, threads: int | None, providers: Sequence[str], allow_spinning: bool = True
) -> ort.InferenceSession:
    """A session on a model file (or serialized model bytes)."""
    options = session_options(threads, allow_spinning)
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=options, providers=list(providers))


def output_dtype(session: ort.InferenceSession) -> str:
    """The element type of a session's first output, as numpy names it."""
    onnx_type = str(session.get_outputs()[0].type)
    return _ONNX_TYPES.get(onnx_type, onnx_type)
