"""The peers study's data plumbing on a tiny real run (issue 20): the inputs every peer reads, the
fastText-KD peer in its own process, scoring, resume, a failed peer, and the task table's peer rows.
Model2Vec and SetFit run in the peers' own environment (``make peers-env``), which the test suite does
not build; their worker's input checks run here on the plain interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from training.config import RunConfig
from training.data.task_data import count_corpus, load_split
from training.stages.label_shards import LABELS_DIR, load_teacher_logits
from training.stages.labeling import label_corpus
from training.studies.peers.inputs import peer_inputs, write_peer_inputs
from training.studies.peers.study import ISOLATED_WORKER, PeerError, run_peers
from training.studies.task_table import write_task_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def labeled_run(tiny_teacher_run: Callable[[str], RunConfig], tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """A private copy of the tiny run with its corpus labeled by the tiny teacher."""
    base = tiny_teacher_run("bert")
    dest = tmp_path_factory.mktemp("peers-run")
    shutil.copytree(base.run_dir, dest / "run", ignore=shutil.ignore_patterns(LABELS_DIR, "vocab"))
    shutil.copytree(base.teacher_dir, dest / "models" / base.teacher_dir.name)
    config = base.model_copy(update=dict(workdir=str(dest / "run"), models_dir=str(dest / "models")))
    label_corpus(config)
    return config


def test_the_inputs_are_the_teachers_argmax_over_the_corpus_then_the_gold_training_set(labeled_run: RunConfig) -> None:
    inputs = peer_inputs(labeled_run)
    corpus = (labeled_run.run_dir / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()
    train = load_split(labeled_run.run_dir, "train")
    argmax = load_teacher_logits(labeled_run.run_dir).argmax(axis=1).tolist()
    assert inputs["kd"]["texts"] == [*corpus, *train.texts]
    assert inputs["kd"]["labels"] == [*argmax, *train.labels]
    assert inputs["kd"]["corpus_texts"] == count_corpus(labeled_run.run_dir)
    assert inputs["dev"]["texts"] == load_split(labeled_run.run_dir, "dev").texts
    assert Path(inputs["base"]) == Path(labeled_run.teacher.base_model).resolve()
    assert len(set(inputs["kd"]["labels"])) > 1  # the tiny teacher does not answer one label only
    capped = peer_inputs(labeled_run, max_kd_texts=50)
    assert capped["kd"]["corpus_texts"] == 50 and capped["kd"]["texts"][:50] == corpus[:50]


def test_fasttext_kd_is_trained_scored_and_reused(labeled_run: RunConfig, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "peers-tiny"
    table = run_peers(labeled_run, ["fasttext_kd"], threads=1, report=report)
    saved = json.loads(report.with_suffix(".json").read_text())
    assert saved["peers"].keys() == {"fasttext_kd", "fasttext_kd_ftz"} and saved["failed"] == {}
    result = json.loads((labeled_run.run_dir / "peers" / "fasttext_kd" / "fasttext_kd.json").read_text())
    test = load_split(labeled_run.run_dir, "test")
    expected = float(np.mean(np.asarray(result["test_pred"]) == np.asarray(test.labels)))
    assert table["peers"]["fasttext_kd"]["test_acc"] == round(expected, 4)
    low, high = table["peers"]["fasttext_kd"]["test_ci95"]
    assert low <= expected <= high
    assert result["settings"]["chosen"]["charNgrams"] in ([0, 0], [3, 6])
    ftz = Path(result["model_path"]).with_suffix(".ftz")
    assert ftz.is_file() and saved["peers"]["fasttext_kd_ftz"]["model_bytes"] == ftz.stat().st_size
    assert "fastText on the teacher's labels" in report.with_suffix(".md").read_text()
    capsys.readouterr()
    run_peers(labeled_run, ["fasttext_kd"], threads=1, report=report)
    assert "done before for this input, reused" in capsys.readouterr().out


def test_a_peer_without_its_environment_fails_alone_and_the_report_keeps_the_others(
        labeled_run: RunConfig, tmp_path: Path) -> None:
    report = tmp_path / "peers-tiny"
    with pytest.raises(PeerError, match="1 peer\\(s\\) failed: model2vec"):
        run_peers(labeled_run, ["fasttext_kd", "model2vec"], peers_python=tmp_path / "no-venv" / "python",
                  threads=1, report=report)
    saved = json.loads(report.with_suffix(".json").read_text())
    assert "fasttext_kd" in saved["peers"]
    assert "make peers-env" in saved["failed"]["model2vec"]


def test_an_unknown_peer_is_refused_by_name(labeled_run: RunConfig) -> None:
    with pytest.raises(PeerError, match="unknown peer"):
        run_peers(labeled_run, ["bert-but-faster"])


def test_the_isolated_worker_refuses_bad_input_with_exit_2(labeled_run: RunConfig, tmp_path: Path) -> None:
    path, _ = write_peer_inputs(labeled_run, tmp_path)
    bad_method = subprocess.run([sys.executable, str(ISOLATED_WORKER), "--method", "bogus", "--input", str(path),
                                 "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert bad_method.returncode == 2 and "bogus" in bad_method.stderr
    broken = tmp_path / "broken.json"
    data = json.loads(path.read_text())
    data["train"]["labels"][0] = 99
    broken.write_text(json.dumps(data))
    out = subprocess.run([sys.executable, str(ISOLATED_WORKER), "--method", "model2vec", "--input", str(broken),
                          "--output", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "label" in out.stderr
    assert not (tmp_path / "out" / "model2vec.json").exists()


def test_the_task_table_carries_the_peers_beside_the_runs_own_rows(labeled_run: RunConfig, tmp_path: Path) -> None:
    run_peers(labeled_run, ["fasttext_kd"], threads=1, report=tmp_path / "peers-tiny")
    accuracy = {"meta": {"n_test": 100, "n_dev": 100, "corpus_texts": 400, "config": "tiny", "date": "today"},
                "final_student": "dan_kd_ft"}
    for key, acc in (("teacher", 0.9), ("dan_kd_ft", 0.8), ("fasttext", 0.7)):
        accuracy[key] = {"dev_acc": acc, "test_acc": acc, "dev_ci95": [acc - 0.1, acc + 0.1],
                         "test_ci95": [acc - 0.1, acc + 0.1]}
    (tmp_path / "accuracy-tiny.json").write_text(json.dumps(accuracy))
    table = write_task_table({"tiny": tmp_path / "accuracy-tiny"}, tmp_path / "accuracy", "test")
    peers = json.loads((tmp_path / "peers-tiny.json").read_text())["peers"]
    assert table["tasks"]["tiny"]["peers"]["fasttext_kd"]["test_acc"] == peers["fasttext_kd"]["test_acc"]
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "fastText on the teacher's labels" in markdown and "over fasttext_kd" in markdown
    best = max(peers[k]["test_acc"] for k in ("fasttext_kd", "fasttext_kd_ftz"))
    assert f"| KD+FT - best peer at student cost, test points |  | {100 * (0.8 - best):+.1f} |" in markdown
