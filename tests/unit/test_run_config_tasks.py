"""The config keys of tasks and corpus-size studies, and the corpus prefix those studies train on."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, config_from_dict
from training.data.task_data import count_corpus, iter_corpus


def test_corpus_prefix(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.txt").write_text("".join(f"text {i}\n" for i in range(10)), encoding="utf-8")
    assert count_corpus(tmp_path) == 10 and count_corpus(tmp_path, 4) == 4 and count_corpus(tmp_path, 99) == 10
    assert [c for c in iter_corpus(tmp_path, 3, limit=4)] == [["text 0", "text 1", "text 2"], ["text 3"]]
    assert sum(len(c) for c in iter_corpus(tmp_path, 3)) == 10


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"labeling": {"max_length": 512}}, "labeling.max_length: removed"),
        ({"data": {"mr_reviews": True}}, "data.mr_reviews: removed"),
        ({"data": {"transfer": ["wikipedia"]}}, "data.transfer: unknown corpus"),
        ({"data": {"transfer": "imdb-sentences"}}, "data.transfer: Input should be a valid list"),
        ({"data": {"source": "sst2"}}, "data.source: Input should be 'mr', .* or 'files', got 'sst2'"),
        ({"distill": {"corpus_texts": -1}}, "distill.corpus_texts: Input should be greater than or equal to 0"),
        ({"labeling": {"max_tokens": -5}}, "labeling.max_tokens: Input should be greater than or equal to 0"),
    ],
)
def test_config_refuses_bad_new_keys(section: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        config_from_dict({"name": "x", **section})


def test_config_takes_the_task_keys() -> None:
    config = config_from_dict(
        {"name": "x", "data": {"source": "rt", "transfer": ["imdb-sentences"]}, "distill": {"corpus_texts": 50}}
    )
    assert config.data.transfer == ["imdb-sentences"] and config.distill.corpus_texts == 50
    assert config_from_dict({"name": "x"}).data.transfer is None  # unset: the task's own recipe


