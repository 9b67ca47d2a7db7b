"""The student's n-gram table started from the teacher (``[student] init = "teacher"``, step table-init).

With random rows (the paper's start) a row learns only from the transfer texts that hold its n-gram, so
rare n-grams, and on a small corpus most of them, barely move from noise. Here each vocabulary n-gram is
run through the fine-tuned teacher as a text of its own, and its row starts as the teacher's vector of it
(the last hidden state at the first token, what the classification head reads), reduced to the table's
``embedding_dim`` by PCA and scaled to the random start's spread (``dim**-0.5`` on average per component),
so the learning rates tuned for random rows still hold. KD then moves the rows as usual.

``student.init_rows`` caps the rows taken from the teacher (the most frequent first: rows are
frequency-ordered); the rest, and the subword buckets, keep the random start. Encoding goes in chunks,
each written whole (``parts/``) before the next, so a run cut short resumes at the first missing chunk::

    runs/<name>/table-init/
      rows.npy     float32 [rows from the teacher, embedding_dim]
      done.json    fingerprint (teacher, vocabulary, dim, rows), seconds, n-grams per second
      parts/       the chunks in progress (removed once rows.npy is written)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch

from sdcore.atomic import atomic_save_npy
from sdcore.model_format import read_ngrams
from training.config import RunConfig
from training.progress import note, progress
from training.stages.run_folder import StepInputMissing, fingerprint, is_done, read_done, write_done

ROWS_FILE = "rows.npy"
CHUNK_ROWS = 16_384  # n-grams encoded between two saved parts
PCA_FIT_ROWS = 50_000  # rows the PCA is fitted on (a seeded sample); every row is then projected
_BATCH_TOKENS = 8_192  # n-grams are short: batches by token budget, not by count
_MAX_NGRAM_TOKENS = 32


def init_folder(config: RunConfig) -> Path:
    return config.run_folder.folder("table-init")


def table_init_key(config: RunConfig) -> str:
    """What the table's start depends on: the teacher checkpoint, the vocabulary, the dim and rows kept."""
    folder = config.run_folder
    teacher, vocab = read_done(folder.require("teacher")), read_done(folder.require("vocab"))
    return fingerprint((teacher or {}).get("fingerprint"), (vocab or {}).get("fingerprint"),
                       config.student.embedding_dim, config.student.init_rows, config.seed, "first-token-pca")


def _encode_parts(config: RunConfig, ngrams: list[str], parts: Path) -> np.ndarray:
    """The teacher's vector of every n-gram, [n, hidden] float32; chunks already in ``parts`` are reused."""
    from training.stages.teacher_model import first_token_vectors, load_classifier, torch_threads

    parts.mkdir(parents=True, exist_ok=True)
    chunks = [(lo, min(lo + CHUNK_ROWS, len(ngrams))) for lo in range(0, len(ngrams), CHUNK_ROWS)]
    todo = [c for c in chunks if not (parts / f"{c[0]:09d}.npy").is_file()]
    if len(todo) < len(chunks):
        note(f"[table-init] resuming: {len(chunks) - len(todo)} of {len(chunks)} chunks already encoded")
    if todo:
        tokenizer, model = load_classifier(config.run_folder.teacher / "model")
        bar = progress(total=sum(hi - lo for lo, hi in todo), desc="table-init", unit="n-gram")
        with torch_threads(config.teacher.threads):
            for lo, hi in todo:
                vectors = first_token_vectors(model, tokenizer, ngrams[lo:hi], batch_size=1024,
                                              max_length=_MAX_NGRAM_TOKENS, progress=bar.update,
                                              max_tokens=_BATCH_TOKENS)
                atomic_save_npy(parts / f"{lo:09d}.npy", vectors)
        bar.close()
    return np.concatenate([np.load(parts / f"{lo:09d}.npy") for lo, _ in chunks])


def project_rows(vectors: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """``vectors`` [n, hidden] -> [n, dim] float32: PCA (fitted on a seeded sample) to at most ``hidden``
    components, all scaled by one factor so that their mean spread is the random start's ``dim**-0.5``
    (the components keep their relative sizes, so the teacher's geometry holds); columns past ``hidden``
    (a table wider than the teacher) are drawn as the random start is."""
    from sklearn.decomposition import PCA

    n, hidden = vectors.shape
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, dim**-0.5, size=(n, dim)).astype(np.float32)
    components = min(dim, hidden, n)
    if components == 0:
        return out
    sample = vectors if n <= PCA_FIT_ROWS else vectors[rng.choice(n, PCA_FIT_ROWS, replace=False)]
    pca = PCA(n_components=components, svd_solver="randomized" if components < min(sample.shape) else "full",
              random_state=seed).fit(sample)
    projected = pca.transform(vectors).astype(np.float32)
    spread = float(np.sqrt(np.mean(pca.explained_variance_)))
    out[:, :components] = projected * (dim**-0.5 / max(spread, 1e-12))
    return out


def step_table_init(config: RunConfig) -> None:
    """Rows for the table's start from the teacher (``student.init = "teacher"``; nothing to do otherwise)."""
    if config.student.init != "teacher":
        note('[table-init] off: student.init = "random" (the paper\'s start)')
        return
    folder = init_folder(config)
    key = table_init_key(config)
    if is_done(folder, key) and (folder / ROWS_FILE).is_file():
        return
    ngrams = read_ngrams(config.run_folder.vocab)
    if config.student.init_rows:
        ngrams = ngrams[: config.student.init_rows]
    parts = folder / "parts" / key
    started = time.perf_counter()
    vectors = _encode_parts(config, ngrams, parts)
    encode_s = time.perf_counter() - started
    rows = project_rows(vectors, config.student.embedding_dim, config.seed)
    atomic_save_npy(folder / ROWS_FILE, rows)
    write_done(folder, key, {"rows": len(ngrams), "hidden": int(vectors.shape[1]),
                             "encode_s": round(encode_s, 1),
                             "ngrams_per_s": round(len(ngrams) / max(encode_s, 1e-9), 1)})
    shutil.rmtree(folder / "parts", ignore_errors=True)
    note(f"[table-init] {len(ngrams):,} rows from the teacher in {encode_s:.0f} s "
         f"({len(ngrams) / max(encode_s, 1e-9):,.0f} n-grams/s)")


def table_init_fact(config: RunConfig) -> str | None:
    """For a student's inputs key: the key of the start it takes from the teacher (None at random)."""
    return table_init_key(config) if config.student.init == "teacher" else None


def apply_table_init(config: RunConfig, embedding: torch.Tensor) -> None:
    """Overwrite the first rows of ``embedding`` with the teacher's start when the run asks for it."""
    if config.student.init != "teacher":
        return
    folder = init_folder(config)
    if not is_done(folder, table_init_key(config)) or not (folder / ROWS_FILE).is_file():
        raise StepInputMissing(folder / "done.json", "table-init")  # none, or made for another teacher/vocab
    rows = np.load(folder / ROWS_FILE)
    if rows.ndim != 2 or rows.shape[1] != embedding.shape[1] or rows.shape[0] > embedding.shape[0]:
        raise StepInputMissing(folder / ROWS_FILE, "table-init")  # made for another table: make it again
    with torch.no_grad():
        embedding[: rows.shape[0]] = torch.from_numpy(rows)
