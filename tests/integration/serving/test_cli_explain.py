"""``sd explain`` on the tiny real student: texts as arguments or in a file, JSON as the HTTP route's."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from loadtest.bench_explain import explain_cost, render
from sdcli.app import app
from service.runtimes.explain import explain
from service.runtimes.student import StudentRuntime
from training.data.task_data import TaskData

runner = CliRunner()


def test_explain_prints_each_texts_ngrams_by_effect(tiny_student: Path) -> None:
    result = runner.invoke(app, ["explain", str(tiny_student), "a good film", "a dull and boring film", "--top-n", "3"])
    assert result.exit_code == 0, result.output
    blocks = [b for b in result.output.strip().split("\n\n") if b]
    assert [b.splitlines()[0] for b in blocks] == ["a good film", "a dull and boring film"]
    runtime = StudentRuntime.load(tiny_student)
    for block, e in zip(blocks, explain(runtime, ["a good film", "a dull and boring film"], 3), strict=True):
        assert f"-> {runtime.labels[e.predicted]} " in block
        assert [line.split()[0] for line in block.splitlines()[2:]] == [g.ngram.split()[0] for g in e.effects]


def test_explain_reads_a_file_and_answers_json(tiny_student: Path, tmp_path: Path) -> None:
    texts = ["a good film", "", "dull , dull , dull"]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["explain", str(tiny_student), str(source), "--json", "--top-n", "2"])
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.output.splitlines()]
    assert len(answers) == 2  # the empty line is no text
    assert answers[1]["ngrams"][0]["ngram"] == "dull" and answers[1]["ngrams"][0]["count"] == 3
    assert answers[1]["ngrams"][0]["spans"] == [[0, 4], [7, 11], [14, 18]]


def test_explain_refuses_a_teacher_and_bad_options_in_one_line(tiny_student: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "teacher"}))
    for args, message in (
        ([str(teacher), "a film"], "explanations are for students only"),
        ([str(tiny_student), "a film", "--top-n", "0"], "--top-n must be in 1..100"),
        ([str(tmp_path / "missing"), "a film"], "model folder does not exist"),
    ):
        result = runner.invoke(app, ["explain", *args])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_the_bench_probe_times_explain_beside_predict(tiny_student: Path, mr_small: TaskData) -> None:
    rows = explain_cost(tiny_student, {"sentences": mr_small.test.texts[:16]}, batch_sizes=(1, 8), repeat_s=0.0)
    assert [(r["workload"], r["batch_size"]) for r in rows] == [("sentences", 1), ("sentences", 8)]
    for r in rows:
        assert r["predict_ms_per_text"] > 0 and r["explain_ms_per_text"] > 0 and r["distinct_ngrams_per_text"] > 0
    assert "| sentences | 8 |" in render(rows, "mr-tiny")
