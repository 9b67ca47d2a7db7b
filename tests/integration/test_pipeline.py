"""The whole pipeline on a tiny real run: MR texts, a tiny BERT teacher, every step, then a rerun."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sdcore.router import RouterPolicy
from service.runtimes.contract import RuntimeOptions
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime
from training.config import RunConfig, config_from_dict
from training.data.task_data import TaskData, iter_corpus, load_split
from training.data.tasks import normalized
from training.pipeline import STEPS, run_steps, student_inputs_key
from training.run_status import render_status, run_status
from training.stages.cascade import cascade_accuracy, collect
from training.stages.features import open_features
from training.stages.holdout import corpus_split, holdout_texts
from training.stages.router import MIN_SLICE_TEXTS
from training.stages.run_folder import StepInputMissing
from training.testing.tiny_models import make_tiny_checkpoint

pytestmark = pytest.mark.slow


def _write_jsonl(path: Path, texts: list[str], labels: list[int], names: list[str]) -> str:
    lines = (json.dumps({"text": t, "label": names[y]}) + "\n" for t, y in zip(texts, labels, strict=True))
    path.write_text("".join(lines))
    return str(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData, mr_corpus_small: list[str],
             torch_single_thread: None) -> RunConfig:
    root = tmp_path_factory.mktemp("pipeline")
    names = mr_small.label_names
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(mr_corpus_small[:1500]) + "\n")
    teacher = make_tiny_checkpoint("bert", root / "tiny-bert", mr_small.train.texts + mr_corpus_small[:500])
    config = config_from_dict(
        {
            "name": "tiny-pipeline",
            "workdir": str(root / "run"),
            "models_dir": str(root / "models"),
            "data": {
                "source": "files",
                "cache_dir": str(root / "cache"),
                "train": _write_jsonl(root / "train.jsonl", mr_small.train.texts, mr_small.train.labels, names),
                "dev": _write_jsonl(root / "dev.jsonl", mr_small.dev.texts, mr_small.dev.labels, names),
                "test": _write_jsonl(root / "test.jsonl", mr_small.test.texts, mr_small.test.labels, names),
                "corpus": [str(corpus)],
                "augment_windows": 1,
            },
            "teacher": {"base_model": str(teacher), "epochs": 1, "batch_size": 32, "max_length": 64},
            "labeling": {"batch_size": 64, "shard_size": 700},
            "vocab": {"size": 5000, "chunk_texts": 500, "partitions": 4},
            "student": {"embedding_dim": 16, "hidden_dim": 16},
            "distill": {"epochs": 2, "batch_size": 64, "lr": 5e-3, "router_holdout": 0.1},
            "finetune": {"epochs": 1, "batch_size": 32, "lr": 1e-3},
            "scratch": {"epochs": 2, "batch_size": 32, "lr": 5e-3},
            "evaluate": {"report": str(root / "reports" / "accuracy-tiny"),
                         "cascade_report": str(root / "reports" / "cascade-tiny")},
        },
        "tiny-pipeline",
    )
    run_steps(config, list(STEPS))
    return config


def test_every_step_writes_its_outputs(tiny_run: RunConfig) -> None:
    report = json.loads(Path(tiny_run.evaluate.report).with_suffix(".json").read_text())
    for key in ("teacher", "dan_scratch", "dan_kd", "dan_kd_ft", "fasttext"):
        assert 0.0 <= report[key]["test_acc"] <= 1.0
        low, high = report[key]["test_ci95"]
        assert low <= report[key]["test_acc"] <= high
    assert report["retention"] == pytest.approx(report["dan_kd_ft"]["test_acc"] / report["teacher"]["test_acc"],
                                                abs=1e-3)
    # The exported float16 student agrees with the PyTorch student it came from.
    assert report["exported_student"]["max_abs_prob_diff_vs_torch"] < 5e-3
    markdown = Path(tiny_run.evaluate.report).with_suffix(".md").read_text()
    assert markdown.startswith("# Accuracy")
    # what the run cost: the teacher's epochs and speed, each step's time before evaluate
    metrics = json.loads((tiny_run.run_dir / "teacher" / "metrics.json").read_text())
    cost = report["meta"]["teacher_training"]
    assert [e["dev_acc"] for e in cost["epochs"]] == [e["dev_acc"] for e in metrics["epochs"]]
    assert cost["best_epoch"] == metrics["best_epoch"] and cost["train_texts_per_s"] > 0
    assert set(report["meta"]["step_seconds"]) >= {"data", "teacher", "label", "kd", "ft", "export"}
    assert f"Teacher fine-tuning: {len(metrics['epochs'])} epoch(s), best {metrics['best_epoch']}" in markdown
    assert "Step times (run.json, minutes): data " in markdown


def test_cascade_is_calibrated_and_stored(tiny_run: RunConfig) -> None:
    report = json.loads((Path(tiny_run.evaluate.cascade_report).with_suffix(".json")).read_text())
    for key in ("teacher_test_acc", "cascade_test_acc", "teacher_share", "cascade_samples_per_s",
                "teacher_samples_per_s"):
        assert key in report
    assert 0.0 <= report["teacher_share"] <= 1.0
    assert Path(tiny_run.evaluate.cascade_report).with_suffix(".png").stat().st_size > 0
    section = StudentRuntime.load(tiny_run.student_dir).manifest.cascade
    assert section is not None and section.temperature > 0
    cascade = section.model_dump()
    point = cascade["operating_point"]
    assert point in cascade["curve"]
    # The stored point is the cheapest one within the tolerance of the teacher's dev accuracy, if any.
    good = [p for p in cascade["curve"] if p["dev_acc"] >= cascade["teacher_dev_acc"] - cascade["tolerance"]]
    if good:
        assert point["teacher_share"] == min(p["teacher_share"] for p in good)


def test_the_cascade_step_fits_the_router_on_the_held_out_slice_and_reports_both_rules(tiny_run: RunConfig) -> None:
    report = json.loads((Path(tiny_run.evaluate.cascade_report).with_suffix(".json")).read_text())
    assert set(report["rules"]) == {"grid", "router"}
    runtime = StudentRuntime.load(tiny_run.student_dir)
    router = runtime.facts.router
    assert router is not None and runtime.manifest.router is not None
    assert report["router"]["threshold"] == router.threshold
    # each row is what the one deferral rule gives on the exported models' answers
    dev = load_split(tiny_run.run_dir, "dev")
    teacher = TeacherRuntime.load(tiny_run.teacher_dir)
    answers = collect(runtime, teacher, dev.texts, dev.labels)
    for name, rule in (("router", RouterPolicy.of(router)), ("grid", runtime.facts.cascade)):
        assert rule is not None
        acc, share = cascade_accuracy(answers, rule)
        assert (report["rules"][name]["dev_acc"], report["rules"][name]["dev_teacher_share"]) == (acc, share)
        assert report["rules"][name]["speedup"] > 0
    markdown = Path(tiny_run.evaluate.cascade_report).with_suffix(".md").read_text()
    assert "| learned router (corpus slice) |" in markdown and "| grid on dev" in markdown
    # the slice: as many texts as the router saw, none of them a labeled text, none of them trained on
    split = corpus_split(tiny_run)
    assert report["router"]["slice_texts"] == split.holdout.size > 0
    assert np.intersect1d(split.holdout, split.kd).size == 0
    labeled = {normalized(t) for s in ("train", "dev", "test") for t in load_split(tiny_run.run_dir, s).texts}
    assert not {normalized(t) for t in holdout_texts(tiny_run, split)} & labeled


def test_a_shadow_student_teaches_the_router_and_the_served_student_distills_on_the_whole_corpus(
        tiny_run: RunConfig) -> None:
    """distill.router_student = "shadow" (the default): the router costs the served student nothing."""
    assert tiny_run.distill.router_student == "shadow" and tiny_run.distill.router_holdout > 0
    # the served student's KD is keyed as a run without any slice: the same student, trained on everything
    no_slice = config_from_dict(tiny_run.model_dump(mode="json") | {
        "distill": tiny_run.distill.model_dump() | {"router_holdout": 0.0}}, "no-slice")
    served = json.loads((tiny_run.run_dir / "student" / "kd-done.json").read_text())
    assert served["spec"]["inputs_key"] == student_inputs_key(no_slice, "kd")
    # the shadow student: distilled on the corpus less the slice, fine-tuned, exported beside the run
    split = corpus_split(tiny_run)
    facts = json.loads((tiny_run.run_folder.router_student / "done.json").read_text())
    assert {k: facts[k] for k in ("stage", "kd_texts", "slice_texts")} == {
        "stage": "ft", "kd_texts": split.kd.size, "slice_texts": split.holdout.size}
    shadow = StudentRuntime.load(tiny_run.run_folder.router_student_dir)
    assert shadow.manifest.metrics["student"]["role"] == "router shadow"
    texts = holdout_texts(tiny_run, split)[:50]
    assert not np.allclose(shadow.predict(texts).probabilities,
                           StudentRuntime.load(tiny_run.student_dir).predict(texts).probabilities)
    report = json.loads((Path(tiny_run.evaluate.cascade_report).with_suffix(".json")).read_text())
    assert report["router"]["answers_from"] == "shadow student"
    assert "shadow student distilled without them" in Path(tiny_run.evaluate.cascade_report).with_suffix(
        ".md").read_text()


def test_with_router_student_served_the_slice_stays_out_of_the_served_students_kd(tiny_run: RunConfig,
                                                                                  tmp_path: Path) -> None:
    data = tiny_run.model_dump(mode="json")
    data.update(name="tiny-served", workdir=str(tmp_path / "run"), models_dir=str(tmp_path / "models"),
                reuse_teacher_run=str(tiny_run.run_dir))
    data["distill"]["router_student"] = "served"
    data["scratch"]["enabled"] = False
    data["evaluate"] |= {"fasttext": False, "report": str(tmp_path / "accuracy-served"),
                         "cascade_report": str(tmp_path / "cascade-served")}
    config = config_from_dict(data, "tiny-served")
    run_steps(config, list(STEPS))
    served = json.loads((config.run_dir / "student" / "kd-done.json").read_text())
    assert served["spec"]["inputs_key"] == student_inputs_key(config, "kd")
    assert served["spec"]["inputs_key"] != json.loads(
        (tiny_run.run_dir / "student" / "kd-done.json").read_text())["spec"]["inputs_key"]
    assert not config.run_folder.router_student.exists()
    report = json.loads((tmp_path / "cascade-served.json").read_text())
    assert report["router"]["answers_from"] == "served student"
    assert report["router"]["slice_texts"] == corpus_split(config).holdout.size > 0


def test_a_slice_too_small_for_a_router_is_marked_skipped_and_the_cascade_says_why(tiny_run: RunConfig,
                                                                                   tmp_path: Path) -> None:
    data = tiny_run.model_dump(mode="json")
    data.update(name="tiny-small-slice", workdir=str(tmp_path / "run"), models_dir=str(tmp_path / "models"),
                reuse_teacher_run=str(tiny_run.run_dir))
    data["distill"]["router_holdout"] = 0.005  # a few texts of the 1,500: fewer than a router needs
    data["scratch"]["enabled"] = False
    data["evaluate"] |= {"fasttext": False, "report": str(tmp_path / "accuracy-small"),
                         "cascade_report": str(tmp_path / "cascade-small")}
    config = config_from_dict(data, "tiny-small-slice")
    # a shadow student left from a run with a bigger slice: no longer what the settings make, so removed
    shutil.copytree(tiny_run.run_folder.router_student_dir, config.run_folder.router_student_dir)
    run_steps(config, [s for s in STEPS if s != "cascade"])
    marker = json.loads((config.run_folder.router_student / "done.json").read_text())
    assert marker["slice_texts"] == corpus_split(config).holdout.size < MIN_SLICE_TEXTS
    assert not config.run_folder.router_student_dir.exists()
    (config.run_folder.router_student / "done.json").unlink()  # no marker: the cascade asks for the step
    with pytest.raises(StepInputMissing, match="router-student"):
        run_steps(config, ["cascade"])
    run_steps(config, ["router-student", "cascade"])
    report = json.loads((tmp_path / "cascade-small.json").read_text())
    assert report["router"] is None
    assert report["no_router"] == f"no shadow student: {marker['skipped']}"
    assert "raise distill.router_holdout" in (tmp_path / "cascade-small.md").read_text()


def test_status_of_a_finished_run_and_of_one_cut_short_in_labeling(tiny_run: RunConfig, tmp_path: Path) -> None:
    rows = {r.step: r for r in run_status(tiny_run)}
    assert list(rows) == list(STEPS)
    assert rows.pop("table-init").state == "off"  # student.init = "random": the paper's start
    assert {r.state for r in rows.values()} == {"done"}, rows
    labels = json.loads((tiny_run.run_dir / "labels" / "done.json").read_text())
    assert labels["shards"] > 1
    assert rows["label"].detail.startswith(f"{labels['texts']:,} texts in {labels['shards']} shards")
    assert rows["kd"].recorded_s > 0 and "best epoch" in rows["kd"].detail
    assert "every step is done" in render_status(tiny_run, list(rows.values()))
    # the same run with its label step cut after one shard: part done, how far, where `sd run` goes on
    data = tiny_run.model_dump(mode="json") | {"workdir": str(tmp_path / "run"), "models_dir": str(tmp_path / "m")}
    cut = config_from_dict(data, "tiny-cut")
    shutil.copytree(tiny_run.run_dir / "data", cut.run_dir / "data")
    (cut.run_dir / "labels").mkdir(parents=True)
    for name in ("logits-00000.npy", "logits-00000.sha256"):
        shutil.copy(tiny_run.run_dir / "labels" / name, cut.run_dir / "labels" / name)
    rows = {r.step: r for r in run_status(cut)}
    assert rows["label"].state == "part done"
    assert rows["label"].detail.startswith(f"1 of {labels['shards']} shards of 700 texts")
    assert rows["kd"].state == "not started" and rows["data"].recorded_s == 0
    assert "goes on from teacher" in render_status(cut, list(rows.values()))


def test_a_step_stopped_by_sigterm_records_its_time_and_exits_as_killed(tiny_run: RunConfig, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import signal
    import time

    from training import pipeline
    from training.stages.run_log import step_seconds

    data = tiny_run.model_dump(mode="json") | {"workdir": str(tmp_path / "run"), "models_dir": str(tmp_path / "m")}
    config = config_from_dict(data, "tiny-sigterm")

    def labeling_until_docker_stop(config: RunConfig) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler ends the sleep at once

    monkeypatch.setitem(STEPS, "label", labeling_until_docker_stop)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        pipeline._exit_on_sigterm()
        started = time.monotonic()
        with pytest.raises(SystemExit) as stopped:
            run_steps(config, ["label"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == 128 + signal.SIGTERM and time.monotonic() - started < 10
    saved = json.loads((config.run_dir / "run.json").read_text())
    entry = saved["history"][-1]
    assert entry["step"] == "label" and entry["stopped_by"] == "SystemExit" and "running" not in saved
    assert step_seconds(config.run_dir)["label"] == round(entry["wall_s"], 1)


def test_exported_models_load_without_torch_runtime(tiny_run: RunConfig) -> None:
    student = StudentRuntime.load(tiny_run.student_dir)
    teacher = TeacherRuntime.load(tiny_run.teacher_dir)
    texts = ["a sharp , funny and moving film", "dull and far too long"]
    assert student.predict(texts).probabilities.shape == (2, 2)
    assert teacher.predict(texts).probabilities.shape == (2, 2)
    assert student.manifest.config["name"] == "tiny-pipeline"
    assert student.manifest.metrics["student"]["stage"] == "ft"


def test_training_and_serving_featurizers_give_identical_ids(tiny_run: RunConfig) -> None:
    """The rows the student was trained on are the rows the served student computes for the same text."""
    store = open_features(tiny_run.run_dir / "features")
    runtime = StudentRuntime.load(tiny_run.student_dir)
    texts = next(iter_corpus(tiny_run.run_dir, 300))
    served = runtime.featurizer.rows_per_text(texts)
    for i, rows in enumerate(served):
        trained = np.asarray(store.rows[store.offsets[i] : store.offsets[i + 1]])
        assert sorted(rows.tolist()) == sorted(trained.tolist())


def test_rerun_skips_finished_steps(tiny_run: RunConfig) -> None:
    checkpoints = sorted((tiny_run.run_dir / "student").glob("*-best.pt"))
    before = {p: p.stat().st_mtime_ns for p in checkpoints}
    shard_before = {p: p.stat().st_mtime_ns for p in (tiny_run.run_dir / "labels").glob("*.npy")}
    run_steps(tiny_run, ["data", "teacher", "label", "vocab", "features", "kd", "ft", "scratch"])
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == before
    assert {p: p.stat().st_mtime_ns for p in (tiny_run.run_dir / "labels").glob("*.npy")} == shard_before
    history = json.loads((tiny_run.run_dir / "run.json").read_text())["history"]
    assert [h["step"] for h in history[-8:]] == ["data", "teacher", "label", "vocab", "features", "kd", "ft", "scratch"]


def test_cli_help_lists_every_step() -> None:
    out = subprocess.run([sys.executable, "-m", "training", "--help"], capture_output=True, text=True, check=True)
    for step in STEPS:
        assert step in out.stdout


def test_cli_rejects_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[vocab]\nsise = 3\n')
    out = subprocess.run([sys.executable, "-m", "training", "vocab", "-c", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "sise" in out.stderr


def test_int8_report_reexports_the_student_and_scores_it(tiny_run: RunConfig, tmp_path: Path) -> None:
    from sdcore.model_format import load_student_manifest
    from training.studies.int8_report import int8_report

    # A small hash table for fastText here (its default 2M buckets x 100-d is an 800 MB file).
    report = int8_report(tiny_run, tmp_path / "tiny-int8", tmp_path / "int8", fasttext=True,
                         fasttext_params={"lr": 0.1, "epoch": 5, "wordNgrams": 2, "bucket": 20_000})
    manifest = load_student_manifest(tmp_path / "tiny-int8")
    assert manifest.shard_dtype == "int8" and manifest.config["export"]["dtype"] == "int8"
    assert tiny_run.export.dtype == "float16"  # the run's own config is left as it was
    reference, quantized = report["students"]
    assert reference["dtype"] == "float16" and quantized["dtype"] == "int8"
    # 16-d rows: 16 bytes + a 4-byte scale against 32 bytes of float16 (and two .npy headers a shard).
    assert quantized["table_bytes"] < 0.66 * reference["table_bytes"]
    assert report["comparison"]["agreement"] > 0.9
    assert abs(report["comparison"]["test_acc_change_points"]) <= 5.0
    fasttext = report["fasttext"]
    assert fasttext["quantized"]["bytes"] < fasttext["full"]["bytes"]
    assert 0.0 <= fasttext["quantized"]["test_acc"] <= 1.0
    assert (tmp_path / "int8.md").read_text().startswith("# int8 table")
    assert json.loads((tmp_path / "int8.json").read_text())["comparison"] == report["comparison"]


def test_a_subword_run_reuses_the_labels_and_trains_serves_and_explains_v2(tiny_run: RunConfig,
                                                                          tmp_path: Path) -> None:
    """Spec v2 through every student step (features, KD, FT, scratch, export, evaluate) on the tiny run's
    own teacher labels: the table has the buckets, training ids are serving ids, the kernel answers as
    the numpy path does, and an unknown word moves the answer."""
    from service.runtimes.explain import SUBWORD_SUFFIX, explain

    data = tiny_run.model_dump(mode="json")
    data.update(name="tiny-subwords", workdir=str(tmp_path / "run"), reuse_teacher_run=str(tiny_run.run_dir))
    data["vocab"] |= {"subword_buckets": 3001, "subword_min": 3, "subword_max": 5}
    data["distill"]["router_holdout"] = 0.0
    data["evaluate"]["report"] = str(tmp_path / "accuracy-subwords")
    data["evaluate"]["cascade_report"] = str(tmp_path / "cascade-subwords")
    config = config_from_dict(data, "tiny-subwords")
    run_steps(config, list(STEPS))
    assert (config.run_dir / "vocab").resolve() != (tiny_run.run_dir / "vocab").resolve()
    student = StudentRuntime.load(config.student_dir)
    manifest = student.manifest
    assert manifest.featurizer.spec == "sd-ngram-v2"
    assert manifest.table_rows == manifest.vocab_size + 3001 == sum(s.row_end - s.row_start for s in manifest.shards)
    store = open_features(config.run_dir / "features")
    texts = next(iter_corpus(config.run_dir, 300))
    for i, rows in enumerate(student.featurizer.rows_per_text(texts)):
        np.testing.assert_array_equal(rows, np.asarray(store.rows[store.offsets[i] : store.offsets[i + 1]]))
    assert int(store.rows.max()) >= manifest.vocab_size  # subword rows were trained
    numpy_path = StudentRuntime.load(config.student_dir, RuntimeOptions(backend="numpy"))
    probe = ["a sharp , funny and moving film", "an unwatchabel mess , borringly overlong", "qzxv"]
    kernel_answer, numpy_answer = student.predict(probe), numpy_path.predict(probe)
    np.testing.assert_allclose(kernel_answer.probabilities, numpy_answer.probabilities, atol=1e-5)
    np.testing.assert_array_equal(kernel_answer.coverage, numpy_answer.coverage)
    assert kernel_answer.coverage[2] == 0.0 and kernel_answer.ngrams_found is not None
    assert kernel_answer.ngrams_found[2] == 0  # no word n-gram; its subwords still pool to a vector
    assert student.pool(["qzxv"])[0].any()
    groups = [g.ngram for g in explain(student, ["qzxv film"], top_n=10)[0].effects]
    assert "qzxv" + SUBWORD_SUFFIX in groups
    report = json.loads((tmp_path / "accuracy-subwords.json").read_text())
    assert report["dan_kd_ft"]["test_acc"] > 0.0


def _init_run(tiny_run: RunConfig, tmp_path: Path, name: str, **student: object) -> RunConfig:
    data = tiny_run.model_dump(mode="json")
    data.update(name=name, workdir=str(tmp_path / name), models_dir=str(tmp_path / "models"),
                reuse_teacher_run=str(tiny_run.run_dir))
    data["student"] |= student
    data["distill"]["router_holdout"] = 0.0
    return config_from_dict(data, name)


def test_a_table_started_from_the_teacher_holds_its_ngram_vectors_and_kd_starts_from_it(
        tiny_run: RunConfig, tmp_path: Path) -> None:
    """student.init = "teacher": each vocabulary n-gram's row starts as the teacher's vector of it (PCA to
    the table's width, the random start's spread); KD starts there and is keyed apart from a random start."""
    from training.stages.student_runs import new_student
    from training.stages.table_init import ROWS_FILE, apply_table_init, init_folder, step_table_init
    from training.stages.teacher_model import first_token_vectors, load_classifier

    config = _init_run(tiny_run, tmp_path, "tiny-init", init="teacher")
    run_steps(config, ["vocab", "features", "table-init", "kd"])
    rows = np.load(init_folder(config) / ROWS_FILE)
    vocab = config.run_folder.vocab_size()
    assert rows.shape == (vocab, config.student.embedding_dim) and np.isfinite(rows).all()
    assert np.sqrt(np.mean(rows.var(axis=0))) == pytest.approx(config.student.embedding_dim**-0.5, rel=0.05)
    # the rows keep the teacher's geometry: n-grams the teacher puts close stay close
    ngrams = (config.run_folder.vocab / "vocab" / "ngrams.txt").read_text().split("\n")[:300]
    tokenizer, model = load_classifier(config.run_folder.teacher / "model")
    teacher = first_token_vectors(model, tokenizer, ngrams, batch_size=64, max_length=32)
    teacher -= teacher.mean(axis=0)
    pair_t = np.corrcoef(teacher)[np.triu_indices(300, 1)]
    pair_r = np.corrcoef(rows[:300] - rows[:300].mean(axis=0))[np.triu_indices(300, 1)]
    assert np.corrcoef(pair_t, pair_r)[0, 1] > 0.8
    # KD trained from that start, and is not taken for a random start's KD
    student = new_student(config)
    apply_table_init(config, student.embedding.weight)
    np.testing.assert_array_equal(student.embedding.weight.detach().numpy()[:vocab], rows)
    keys = [json.loads((c.run_dir / "student" / "kd-done.json").read_text())["spec"]["inputs_key"]
            for c in (config, tiny_run)]
    assert keys[0] == student_inputs_key(config, "kd") != keys[1]
    status = {s.step: s for s in run_status(config)}
    assert status["table-init"].state == "done" and f"rows {vocab:,}" in status["table-init"].detail
    assert {s.step: s for s in run_status(tiny_run)}["table-init"].state == "off"
    step_table_init(config)  # done: nothing redone
    assert np.array_equal(np.load(init_folder(config) / ROWS_FILE), rows)


def test_table_init_resumes_at_the_first_missing_chunk_and_caps_its_rows(
        tiny_run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.stages.table_init as table_init
    import training.stages.teacher_model as teacher_model

    monkeypatch.setattr(table_init, "CHUNK_ROWS", 64)
    config = _init_run(tiny_run, tmp_path, "tiny-init-cap", init="teacher", init_rows=300)
    run_steps(config, ["vocab"])
    real, calls = teacher_model.first_token_vectors, []

    def encode(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(len(args[2]))  # type: ignore[arg-type]
        if len(calls) == 3:
            raise KeyboardInterrupt  # cut short while encoding the third chunk
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(teacher_model, "first_token_vectors", encode)
    with pytest.raises(KeyboardInterrupt):
        run_steps(config, ["table-init"])
    folder = table_init.init_folder(config)
    assert not (folder / table_init.ROWS_FILE).exists()
    assert len(list((folder / "parts").rglob("*.npy"))) == 2
    calls.clear()

    def count(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(len(args[2]))  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(teacher_model, "first_token_vectors", count)
    run_steps(config, ["table-init"])
    assert calls == [64, 64, 44]  # the chunks not yet saved, only
    assert not (folder / "parts").exists()
    resumed = np.load(folder / table_init.ROWS_FILE)
    assert resumed.shape == (300, config.student.embedding_dim)
    # the same as an uninterrupted run; past the cap, the table keeps the random start
    fresh = _init_run(tiny_run, tmp_path, "tiny-init-fresh", init="teacher", init_rows=300)
    run_steps(fresh, ["vocab", "table-init"])
    np.testing.assert_allclose(np.load(table_init.init_folder(fresh) / table_init.ROWS_FILE), resumed, atol=1e-5)
    from training.stages.student_runs import new_student

    started, random_start = new_student(config), new_student(config).embedding.weight.detach().clone()
    table_init.apply_table_init(config, started.embedding.weight)
    np.testing.assert_array_equal(started.embedding.weight.detach()[300:], random_start[300:])


def test_project_rows_scales_to_the_random_start_and_pads_past_the_teachers_width() -> None:
    from training.stages.table_init import project_rows

    vectors = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32) * np.array([1.0] * 7 + [4.0])
    wide = project_rows(vectors, 12, seed=3)
    assert wide.shape == (500, 12)
    assert np.sqrt(np.mean(wide.var(axis=0))) == pytest.approx(12**-0.5, rel=0.1)
    np.testing.assert_allclose(wide[:, 8:].std(axis=0), 12**-0.5, rtol=0.15)  # past the input's width: random
    narrow = project_rows(vectors, 4, seed=3)
    # the first component is the widest input axis (the last column), up to sign
    assert abs(np.corrcoef(narrow[:, 0], vectors[:, 7])[0, 1]) > 0.95
