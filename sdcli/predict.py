"""``sd predict MODEL FILE|-``: classify a file (or stdin) with an exported model, JSONL out.

MODEL is a folder of the model repository, student or teacher alike (its manifest's ``kind`` says
which runtime loads it; no torch either way). The input is read as:

- JSONL, one ``{"text": str, ...}`` object a line (other fields ignored), when FILE ends with
  ``.jsonl``, or, for stdin (``-``), when its first non-blank line starts with ``{``;
- plain text otherwise, one text a line.

Blank lines are skipped; every text is whitespace-collapsed as the training data is. Each answer is
one JSON line, in input order: ``line`` (the input line it answers), ``label``, ``score``, ``scores``
(``--top-k`` / ``--threshold`` keep fewer, best first: ``service.answers``), ``logits`` with ``--raw``,
and for a student ``coverage`` and ``ngrams_found``. Texts go through the model in batches of
``--batch-size``; progress goes to stderr (``training.progress``), and texts/s at the end.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from sdcore.model_format import read_manifest_kind
from service.answers import AnswerOptions, answer_rows
from service.runtimes.contract import RuntimeOptions
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime
from training.data.task_data import DataError, collapse
from training.progress import progress

Model = StudentRuntime | TeacherRuntime
INPUT_FORMATS = ("auto", "text", "jsonl")
STDIN = "-"


def load_model(folder: Path, threads: int | None = None) -> Model:
    """A student or teacher folder, by its manifest's kind (a missing or damaged folder: ModelFormatError)."""
    options = RuntimeOptions(threads=threads)
    if read_manifest_kind(Path(folder)) == "student":
        return StudentRuntime.load(folder, options)
    return TeacherRuntime.load(folder, options)


def _lines(stream: Iterable[str], name: str) -> Iterator[tuple[int, str]]:
    number = 0
    try:
        for number, line in enumerate(stream, start=1):
            yield number, line
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}, line {number + 1}: not valid UTF-8 ({exc.reason})") from exc


def _jsonl_text(line: str, name: str, number: int) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}, line {number}: bad JSON: {exc.msg}",
                        hint="for plain text lines give --format text") from exc
    if not isinstance(record, dict) or "text" not in record:
        raise DataError(f'{name}, line {number}: expected a JSON object with a "text" field')
    if not isinstance(record["text"], str):
        raise DataError(f'{name}, line {number}: "text" must be a string, got {type(record["text"]).__name__}')
    return collapse(record["text"])


def iter_texts(lines: Iterable[str], name: str, jsonl: bool) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank input line; a JSONL line with an empty text is skipped too."""
    for number, line in _lines(lines, name):
        if not line.strip():
            continue
        text = _jsonl_text(line, name, number) if jsonl else collapse(line)
        if text:
            yield number, text


def open_input(source: str, fmt: str = "auto") -> tuple[Iterator[tuple[int, str]], int | None]:
    """The texts of FILE or stdin (``-``), and how many there are when that is known up front (a file)."""
    if fmt not in INPUT_FORMATS:
        raise DataError(f"--format {fmt!r}: expected auto, text or jsonl")
    if source == STDIN:
        lines = iter(sys.stdin)
        head: list[str] = []  # up to the first non-blank line, which decides the format under auto
        for line in lines:
            head.append(line.removeprefix("\ufeff") if not head else line)
            if line.strip():
                break
        sniffed = bool(head) and head[-1].lstrip().startswith("{")
        jsonl = fmt == "jsonl" or (fmt == "auto" and sniffed)
        return iter_texts(itertools.chain(head, lines), source, jsonl), None
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file", hint="give a text or JSONL file, or - for stdin")
    jsonl = fmt == "jsonl" or (fmt == "auto" and path.suffix == ".jsonl")
    try:
        with path.open(encoding="utf-8-sig") as f:
            total = sum(1 for _ in iter_texts(f, source, jsonl))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc

    def texts() -> Iterator[tuple[int, str]]:
        with path.open(encoding="utf-8-sig") as f:
            yield from iter_texts(f, source, jsonl)

    return texts(), total


@dataclass(frozen=True)
class PredictSummary:
    model: str
    kind: str
    texts: int
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"predict: {self.texts} texts in {self.seconds:.2f} s, {self.texts_per_second:,.0f} texts/s "
                f"({self.kind} {self.model})")


def batches(texts: Iterator[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    while batch := list(itertools.islice(texts, size)):
        yield batch


def predict_stream(model: Model, texts: Iterator[tuple[int, str]], out: TextIO, options: AnswerOptions,
                   batch_size: int = 256, total: int | None = None) -> PredictSummary:
    """Answer every text as a JSON line on ``out`` (flushed after each batch); progress on stderr."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    done = 0
    started = time.perf_counter()
    bar = progress(total=total, desc="predict", unit=" texts", leave=False)  # the summary line ends it
    try:
        for batch in batches(texts, batch_size):
            numbers, chunk = zip(*batch, strict=True)
            answers = answer_rows(model.predict(list(chunk)), model.labels, options)
            out.write("".join(json.dumps({"line": n, **a}, ensure_ascii=False) + "\n"
                              for n, a in zip(numbers, answers, strict=True)))
            out.flush()
            done += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return PredictSummary(model.facts.name, model.kind, done, time.perf_counter() - started)


def predict_file(model_dir: Path, source: str, out: TextIO, options: AnswerOptions = AnswerOptions(),
                 batch_size: int = 256, threads: int | None = None, fmt: str = "auto") -> PredictSummary:
    """``sd predict``: the model, the input, the JSONL answers on ``out``; texts/s on stderr."""
    model = load_model(model_dir, threads)
    texts, total = open_input(source, fmt)
    summary = predict_stream(model, texts, out, options, batch_size, total)
    print(summary.line(), file=sys.stderr, flush=True)
    return summary
