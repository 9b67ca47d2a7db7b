"""``sd predict`` and ``sd test`` through typer's CliRunner on the tiny real student and teacher folders
(issue 12, item 2), and the Python API they stand on: a bare string is one text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from sdcli.app import app
from service.runtimes.onnx_session import softmax
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime
from training.data.task_data import TaskData

runner = CliRunner()
ATOL = 1e-5


def invoke(args: list[str], stdin: str | None = None) -> Any:
    result = runner.invoke(app, args, input=stdin)
    assert result.exit_code == 0, result.output
    return result


def answers(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and result.stdout == ""
    return lines[0]


def labeled_file(path: Path, task: TaskData, limit: int = 60) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for text, label in list(zip(task.test.texts, task.test.labels, strict=True))[:limit]:
            f.write(json.dumps({"text": text, "label": task.label_names[label]}) + "\n")
    return path


@pytest.fixture(params=["student", "teacher"])
def model_dir(request: pytest.FixtureRequest, tiny_student: Path, tiny_teacher: Path) -> Path:
    return tiny_student if request.param == "student" else tiny_teacher


def load(folder: Path) -> StudentRuntime | TeacherRuntime:
    return StudentRuntime.load(folder) if (folder / "head.onnx").is_file() else TeacherRuntime.load(folder)


def test_a_bare_string_is_one_text(tiny_student: Path, tiny_teacher: Path) -> None:
    for runtime in (StudentRuntime.load(tiny_student), TeacherRuntime.load(tiny_teacher)):
        one = runtime.predict("a great film")
        listed = runtime.predict(["a great film"])
        assert len(one) == 1
        np.testing.assert_array_equal(one.probabilities, listed.probabilities)
    assert TeacherRuntime.load(tiny_teacher).logits("a great film").shape == (1, 2)


def test_predict_streams_one_answer_per_text_equal_to_the_runtimes(model_dir: Path, tmp_path: Path,
                                                                    texts: list[str]) -> None:
    source = tmp_path / "texts.txt"
    source.write_text(texts[0] + "\n\n" + "\n".join(texts[1:]) + "\n", encoding="utf-8")  # a blank line 2
    result = invoke(["predict", str(model_dir), str(source), "--batch-size", "5"])
    got = answers(result.stdout)
    runtime = load(model_dir)
    direct = runtime.predict(texts)
    assert [a["line"] for a in got] == [1, *range(3, len(texts) + 2)]
    assert [a["label"] for a in got] == [runtime.labels[i] for i in direct.probabilities.argmax(1)]
    scores = np.array([[a["scores"][label] for label in runtime.labels] for a in got])
    np.testing.assert_allclose(scores, direct.probabilities, rtol=0, atol=ATOL)
    if direct.coverage is not None:
        np.testing.assert_allclose([a["coverage"] for a in got], direct.coverage, rtol=0, atol=1e-12)
    else:
        assert all("coverage" not in a for a in got)
    assert f"predict: {len(texts)} texts in" in result.stderr and "texts/s" in result.stderr


def test_predict_reads_jsonl_and_applies_top_k_threshold_and_raw(model_dir: Path, tmp_path: Path,
                                                                 texts: list[str]) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    full = answers(invoke(["predict", str(model_dir), str(source)]).stdout)
    top = answers(invoke(["predict", str(model_dir), str(source), "--top-k", "1", "--raw"]).stdout)
    kept = answers(invoke(["predict", str(model_dir), str(source), "--threshold", "0.5"]).stdout)
    assert len(full) == len(top) == len(kept) == len(texts)
    for f, t, k in zip(full, top, kept, strict=True):
        assert t["scores"] == {f["label"]: f["score"]} and t["label"] == f["label"]
        labels = list(f["scores"])
        np.testing.assert_allclose(softmax(np.array([t["logits"][x] for x in labels])),
                                   [f["scores"][x] for x in labels], rtol=0, atol=ATOL)
        assert k["scores"] == {x: p for x, p in sorted(f["scores"].items(), key=lambda kv: -kv[1]) if p >= 0.5}


def test_predict_reads_stdin_as_text_or_jsonl(tiny_student: Path, texts: list[str]) -> None:
    as_text = answers(invoke(["predict", str(tiny_student), "-"], stdin="\n".join(texts[:4]) + "\n").stdout)
    as_jsonl = answers(invoke(["predict", str(tiny_student), "-"],
                              stdin="\n" + "".join(json.dumps({"text": t}) + "\n" for t in texts[:4])).stdout)
    assert [a["line"] for a in as_text] == [1, 2, 3, 4] and [a["line"] for a in as_jsonl] == [2, 3, 4, 5]
    assert [a["scores"] for a in as_text] == [a["scores"] for a in as_jsonl]


def test_predict_errors_are_one_line(tiny_student: Path, tmp_path: Path) -> None:
    line = one_line_error(["predict", str(tmp_path / "nope"), "-"])
    assert "nope" in line and "model folder does not exist" in line
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    assert "bad.jsonl, line 2: bad JSON" in one_line_error(["predict", str(tiny_student), str(bad)])
    bad.write_text('{"text": 3}\n', encoding="utf-8")
    assert 'line 1: "text" must be a string' in one_line_error(["predict", str(tiny_student), str(bad)])
    assert "no such file" in one_line_error(["predict", str(tiny_student), str(tmp_path / "missing.txt")])


def test_test_reports_accuracy_per_class_confusion_and_coverage(
    model_dir: Path, tmp_path: Path, mr_small: TaskData
) -> None:
    path = labeled_file(tmp_path / "test.jsonl", mr_small)
    result = invoke(["test", str(model_dir), str(path), "--json", str(tmp_path / "report.json")])
    report = json.loads((tmp_path / "report.json").read_text())
    runtime = load(model_dir)
    texts, truth = mr_small.test.texts[:60], np.asarray(mr_small.test.labels[:60])
    predicted = runtime.predict(texts).probabilities.argmax(1)
    assert report["texts"] == 60 and report["accuracy"] == round(float(np.mean(predicted == truth)), 4)
    lo, hi = report["accuracy_ci95"]
    assert lo < report["accuracy"] < hi
    matrix = np.array(report["confusion_matrix"]["matrix"])
    assert report["confusion_matrix"]["labels"] == runtime.labels
    expected = np.zeros((2, 2), dtype=int)
    np.add.at(expected, (truth, predicted), 1)
    np.testing.assert_array_equal(matrix, expected)
    for c, row in enumerate(report["per_class"]):
        assert row["support"] == int(matrix[c].sum())
        assert row["recall"] == round(matrix[c, c] / matrix[c].sum(), 4)
        if matrix[:, c].sum():
            assert row["precision"] == round(matrix[c, c] / matrix[:, c].sum(), 4)
    if runtime.kind == "student":
        buckets = report["coverage_buckets"]
        assert sum(b["texts"] for b in buckets) == 60
        correct = sum(round(b["accuracy"] * b["texts"]) for b in buckets)
        assert correct == int(np.sum(predicted == truth))
        assert "accuracy by n-gram coverage" in result.stdout
    else:
        assert report["coverage_buckets"] is None
    assert "per class" in result.stdout and "confusion matrix" in result.stdout
    assert f"accuracy {report['accuracy']:.4f}" in result.stdout


def test_test_reads_csv_like_the_training_data(tiny_student: Path, tmp_path: Path, mr_small: TaskData) -> None:
    jsonl = labeled_file(tmp_path / "test.jsonl", mr_small, 30)
    csv = tmp_path / "test.csv"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    csv.write_text("label,text\n" + "".join(f'{r["label"]},"{r["text"].replace(chr(34), chr(34) * 2)}"\n'
                                           for r in rows), encoding="utf-8")
    invoke(["test", str(tiny_student), str(jsonl), "--json", str(tmp_path / "a.json")])
    invoke(["test", str(tiny_student), str(csv), "--json", str(tmp_path / "b.json")])
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]


def test_test_errors_are_one_line(tiny_teacher: Path, tmp_path: Path) -> None:
    path = tmp_path / "test.jsonl"
    path.write_text('{"text": "a fine film", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n',
                    encoding="utf-8")
    line = one_line_error(["test", str(tiny_teacher), str(path)])
    assert "labels ['neutral'] are not the model's labels ['negative', 'positive']" in line
    path.write_text('{"text": "a fine film"}\n', encoding="utf-8")
    assert 'line 1: missing field "label"' in one_line_error(["test", str(tiny_teacher), str(path)])
    assert "model folder does not exist" in one_line_error(["test", str(tmp_path / "none"), str(path)])
