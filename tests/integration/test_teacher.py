"""The teacher path end to end on tiny real models of both families: fine-tune, export, serve, label.

Invariants checked (STYLE.md 9): ONNX == PyTorch on the same inputs, the serving tokenizer == the
training tokenizer, batched == one-by-one, an interrupted labeling resumes to the same logits, and a
damaged model file is refused with an error naming it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from transformers import AutoConfig, AutoTokenizer

from sdcore.model_format import ModelFormatError, load_teacher_manifest, verify_teacher
from service.runtimes.contract import RuntimeOptions
from service.runtimes.teacher import TeacherRuntime, load_tokenizer
from training.config import RunConfig
from training.data.task_data import TaskData, count_corpus, iter_corpus, load_label_names, load_split
from training.stages.label_shards import LABELS_DIR, load_teacher_logits, shard_path
from training.stages.labeling import label_corpus
from training.stages.run_folder import DONE, StepInputMissing
from training.stages.teacher import finetune_teacher
from training.stages.teacher_checkpoint import resolve_base_model
from training.stages.teacher_export import save_serving_tokenizer
from training.stages.teacher_model import METRICS_FILE, TEACHER_DIR, load_classifier, max_input_tokens, predict_logits

ATOL = 1e-4
pytestmark = pytest.mark.usefixtures("torch_single_thread")  # tiny models: threads only add overhead
Family = Literal["bert", "roberta"]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def run(request: pytest.FixtureRequest, tiny_teacher_run: Callable[[Family], RunConfig]) -> RunConfig:
    config: RunConfig = tiny_teacher_run(request.param)
    return config


def probe_texts(run_dir: Path) -> list[str]:
    """Dev texts of many lengths, plus one far longer than max_length and a one-word text."""
    dev = load_split(run_dir, "dev").texts
    return [*dev[:40], " ".join(dev[40:60]), "Wonderful."]


def copy_run(config: RunConfig, dest: Path) -> RunConfig:
    """A private copy of a run and its exported teacher, to change or damage freely."""
    shutil.copytree(config.run_dir, dest / "run")
    shutil.copytree(config.teacher_dir, dest / "models" / config.teacher_dir.name)
    return config.model_copy(update=dict(workdir=str(dest / "run"), models_dir=str(dest / "models")))


def metrics(config: RunConfig) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((config.run_dir / TEACHER_DIR / METRICS_FILE).read_text())
    return data


@pytest.mark.slow
def test_finetune_keeps_the_best_dev_epoch_and_is_skipped_when_done(run: RunConfig) -> None:
    found = metrics(run)
    dev_accs = [e["dev_acc"] for e in found["epochs"]]
    assert len(dev_accs) == run.teacher.epochs
    assert found["best_epoch"] == 1 + int(np.argmax(dev_accs))
    assert found["dev_acc"] == max(dev_accs) >= 0.55  # it learned something from 400 sentences
    assert found["test_acc"] is not None
    model_dir = run.run_dir / TEACHER_DIR / "model"
    tokenizer, model = load_classifier(model_dir)
    assert model.config.id2label == dict(enumerate(load_label_names(run.run_dir)))
    dev = load_split(run.run_dir, "dev")
    logits = predict_logits(model, tokenizer, dev.texts, run.teacher.batch_size, found["max_length"])
    assert np.mean(logits.argmax(1) == np.asarray(dev.labels)) == pytest.approx(found["dev_acc"])

    stamp = (run.run_dir / TEACHER_DIR / METRICS_FILE).stat().st_mtime_ns
    assert finetune_teacher(run) == model_dir
    assert (run.run_dir / TEACHER_DIR / METRICS_FILE).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_manifest_records_inputs_metrics_config_and_a_capped_max_length(run: RunConfig) -> None:
    manifest = load_teacher_manifest(run.teacher_dir)
    verify_teacher(run.teacher_dir, manifest)
    family = run.name.removeprefix("tiny-")
    assert manifest.input_names == (
        ["input_ids", "attention_mask", "token_type_ids"] if family == "bert" else ["input_ids", "attention_mask"]
    )
    # teacher.max_length is 512; the tiny models take 128 tokens (RoBERTa: 130 positions - pad - 1).
    model_limit = max_input_tokens(AutoConfig.from_pretrained(run.teacher.base_model))
    assert run.teacher.max_length > model_limit == manifest.max_length == metrics(run)["max_length"] == 128
    assert manifest.labels == load_label_names(run.run_dir)
    assert manifest.metrics["dev_acc"] == metrics(run)["dev_acc"]
    assert manifest.config == json.loads(json.dumps(run.to_dict()))
    assert {"model.onnx", "tokenizer/tokenizer.json"} <= {f.path for f in manifest.files}


@pytest.mark.slow
def test_onnx_logits_equal_torch_at_several_lengths_and_batch_sizes(run: RunConfig) -> None:
    runtime = TeacherRuntime.load(run.teacher_dir, RuntimeOptions(threads=1))
    tokenizer, model = load_classifier(run.run_dir / TEACHER_DIR / "model")
    texts = probe_texts(run.run_dir)
    seen_lengths = set()
    for batch_size in (1, 3, 8, 42):
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            # The whole batch padded to its longest, as the HF tokenizer does it, fed to both.
            encoded = tokenizer(
                batch, padding=True, truncation=True, max_length=runtime.max_length, return_tensors="np"
            )
            feed = {name: encoded[name].astype(np.int64) for name in runtime.input_names}
            (onnx_logits,) = runtime.session.run(["logits"], feed)
            torch_logits = (
                model(
                    **tokenizer(
                        batch, padding=True, truncation=True, max_length=runtime.max_length, return_tensors="pt"
                    )
                )
                .logits.detach()
                .numpy()
            )
            np.testing.assert_allclose(onnx_logits, torch_logits, rtol=0, atol=ATOL)
            seen_lengths.add(feed["input_ids"].shape[1])
    assert runtime.max_length in seen_lengths  # the long text was truncated at max_length
    assert len(seen_lengths) > 10


@pytest.mark.slow
def test_runtime_equals_torch_and_batched_equals_one_by_one(run: RunConfig) -> None:
    runtime = TeacherRuntime.load(run.teacher_dir, RuntimeOptions(threads=1))
    tokenizer, model = load_classifier(run.run_dir / TEACHER_DIR / "model")
    texts = probe_texts(run.run_dir)
    assert [e.ids for e in runtime.encode(texts)] == tokenizer(texts, truncation=True, max_length=runtime.max_length)[
        "input_ids"
    ]
    batched = runtime.logits(texts, batch_size=16)
    expected = predict_logits(model, tokenizer, texts, 5, runtime.max_length)
    np.testing.assert_allclose(batched, expected, rtol=0, atol=ATOL)
    one_by_one = np.concatenate([runtime.logits([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-5)
    assert batched.dtype == np.float32 and batched.shape == (len(texts), len(runtime.labels))
    # Logits that barely vary between texts would make the comparisons above prove nothing.
    assert np.std(batched[:, 0]) > 10 * ATOL
    probabilities = runtime.predict(texts).probabilities
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert runtime.logits([]).shape == (0, len(runtime.labels))


@pytest.mark.slow
def test_labeling_resumes_after_an_interruption(
    run: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = copy_run(run, tmp_path)
    labels_dir = label_corpus(config)
    reference = load_teacher_logits(config.run_dir)
    corpus = [t for chunk in iter_corpus(config.run_dir, 1000) for t in chunk]
    assert reference.shape == (count_corpus(config.run_dir), 2) == (len(corpus), 2)
    shards = sorted(labels_dir.glob("logits-*.npy"))
    assert len(shards) == -(-len(corpus) // config.labeling.shard_size)
    assert np.load(shards[-1]).shape[0] == len(corpus) - (len(shards) - 1) * config.labeling.shard_size
    runtime = TeacherRuntime.load(config.teacher_dir)
    np.testing.assert_allclose(reference, runtime.logits(corpus), rtol=0, atol=ATOL)

    # Kill the run while it labels the fourth shard.
    shutil.rmtree(labels_dir)
    real_logits = TeacherRuntime.logits
    calls = {"n": 0}

    def interrupted(self: TeacherRuntime, *args: Any, **kwargs: Any) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_logits(self, *args, **kwargs)

    monkeypatch.setattr(TeacherRuntime, "logits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        label_corpus(config)
    monkeypatch.undo()
    assert sorted(p.name for p in labels_dir.glob("logits-*.npy")) == [shard_path(labels_dir, i).name for i in range(3)]
    assert not (labels_dir / DONE).exists()
    with pytest.raises(StepInputMissing, match="made by the label step"):
        load_teacher_logits(config.run_dir)
    kept = {i: shard_path(labels_dir, i).stat().st_mtime_ns for i in range(3)}

    capsys.readouterr()
    label_corpus(config)
    done = json.loads((labels_dir / DONE).read_text())
    assert done["computed_shards"] == len(shards) - 3
    # The kept shards count in the progress line's position (the rate leaves them out: test_progress).
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"label corpus: {len(corpus)}/{len(corpus)} texts (100%)")
    assert {i: shard_path(labels_dir, i).stat().st_mtime_ns for i in range(3)} == kept
    np.testing.assert_array_equal(load_teacher_logits(config.run_dir), reference)

    # A lost last shard: only that one is labeled again.
    shard_path(labels_dir, len(shards) - 1).unlink()
    label_corpus(config)
    assert json.loads((labels_dir / DONE).read_text())["computed_shards"] == 1
    np.testing.assert_array_equal(load_teacher_logits(config.run_dir), reference)


@pytest.mark.slow
def test_torch_backend_labels_equal_the_onnx_labels(run: RunConfig, tmp_path: Path) -> None:
    config = copy_run(run, tmp_path)
    label_corpus(config)
    onnx_logits = load_teacher_logits(config.run_dir)
    torch_config = config.model_copy(update=dict(labeling=config.labeling.model_copy(update=dict(backend="torch"))))
    label_corpus(torch_config)
    done = json.loads((config.run_dir / LABELS_DIR / DONE).read_text())
    assert done["teacher"]["backend"] == "torch"
    assert done["computed_shards"] == done["shards"]  # another teacher: nothing of the old labels is kept
    np.testing.assert_allclose(load_teacher_logits(config.run_dir), onnx_logits, rtol=0, atol=ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip_a_byte", "truncate"])
@pytest.mark.parametrize("victim", ["model.onnx", "tokenizer/tokenizer.json"])
def test_a_damaged_file_is_refused_with_its_name(run: RunConfig, tmp_path: Path, damage: str, victim: str) -> None:
    root = shutil.copytree(run.teacher_dir, tmp_path / "teacher")
    path = root / victim
    data = bytearray(path.read_bytes())
    if damage == "flip_a_byte":
        data[len(data) // 2] ^= 0xFF
    else:
        del data[-10:]
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="damaged file") as caught:
        TeacherRuntime.load(root)
    assert caught.value.path == path


def test_serving_tokenizer_equals_the_hf_tokenizer_of_the_default_teacher(tmp_path: Path, mr_small: TaskData) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(""), local_files_only=True)
    save_serving_tokenizer(tokenizer, tmp_path / "tokenizer", max_length=64)
    fast, pad_id = load_tokenizer(tmp_path, max_length=64)
    assert pad_id == tokenizer.pad_token_id
    texts = [*mr_small.dev.texts[:50], " ".join(mr_small.dev.texts[:20]), "Café NAÏVE résumé — 10/10!!", ""]
    expected = tokenizer(texts, truncation=True, max_length=64)
    encodings = fast.encode_batch_fast(texts)
    assert [e.ids for e in encodings] == expected["input_ids"]
    assert [e.type_ids for e in encodings] == expected["token_type_ids"]
    assert max(len(e.ids) for e in encodings) == 64


def test_the_serving_runtime_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, service.runtimes.teacher; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
