"""Export of a real trained DAN: the served student (numpy + ONNX) equals PyTorch; damaged models are refused."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from sdcore.featurizer import FeaturizerSettings
from sdcore.model_format import HEAD_FILE, MANIFEST, ModelFormatError, load_student_manifest, read_ngrams
from service.runtimes.contract import RuntimeOptions
from service.runtimes.student import EmbeddingTable, StudentRuntime, mean_pool
from training.data.task_data import TaskData
from training.stages import export as export_module
from training.stages.distill import BagSource, TrainSpec, train_student
from training.stages.export import export_student
from training.stages.features import featurize_corpus
from training.stages.student import DAN, Bags, featurize_bags, predict_logits, select_bags
from training.stages.vocab import build_vocab_from_chunks, load_vocab_featurizer
from training.testing.quick import copy_model, make_tiny_student

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]

VOCAB_SIZE = 3000

# Texts the student did not train on: unknown words, an empty text, punctuation only, repeats, case.
EXTRA_TEXTS = [
    "",
    "!!! ... ???",
    "zxqv blorf snargle",
    "a",
    "The MOVIE is GOOD. the movie is good! the movie is good?",
    "bad bad bad bad bad bad bad",
    "an utterly predictable, boring and overlong film",
    "a warm , funny and moving story with great performances",
]


@dataclass
class Trained:
    model: DAN
    settings: FeaturizerSettings
    vocab_dir: Path
    labels: list[str]
    texts: list[str]  # dev + test + extra: texts the model never saw in training


@pytest.fixture(scope="module")
def trained(mr_small: TaskData, tmp_path_factory: pytest.TempPathFactory, torch_single_thread: None) -> Trained:
    """A small DAN trained by the real code on MR sentences, kept in memory for comparison."""
    work = tmp_path_factory.mktemp("trained")
    settings = FeaturizerSettings()
    texts = mr_small.train.texts
    build_vocab_from_chunks(lambda: [texts], settings, VOCAB_SIZE, work / "vocab", partitions=2, memory_mb=16)
    featurizer = load_vocab_featurizer(work / "vocab", settings)
    bags = featurize_bags(featurizer, texts)
    labels = np.asarray(mr_small.train.labels, dtype=np.int64)
    dev_bags = featurize_bags(featurizer, mr_small.dev.texts)
    dev_labels = np.asarray(mr_small.dev.labels, dtype=np.int64)
    torch.manual_seed(0)
    model = DAN(VOCAB_SIZE, 24, 16, 2, dropout=0.1)
    spec = TrainSpec(mode="scratch", epochs=5, batch_size=16, lr=3e-2, feature_dropout=0.1, seed=0)
    train_student(model, spec, BagSource.from_bags(bags, labels), dev_bags, dev_labels, work / "ckpt", "t")
    model.eval()
    return Trained(
        model, settings, work / "vocab", list(mr_small.label_names),
        [*mr_small.dev.texts, *mr_small.test.texts, *EXTRA_TEXTS],
    )


def export(trained: Trained, out: Path, **kwargs: object) -> Path:
    return export_student(
        trained.model,
        name=out.name,
        labels=trained.labels,
        settings=trained.settings,
        vocab_dir=trained.vocab_dir,
        out_dir=out,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def float32_model(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(trained, tmp_path_factory.mktemp("exports") / "f32", dtype="float32")


def torch_probabilities(trained: Trained, texts: list[str], keep_rows: int | None = None) -> np.ndarray:
    """The PyTorch DAN on the training-side featurizer (vocabulary folder of the training run)."""
    bags = featurize_bags(load_vocab_featurizer(trained.vocab_dir, trained.settings), texts)
    if keep_rows is not None:  # what a student pruned to the first keep_rows rows sees
        owner = np.repeat(np.arange(len(bags)), np.diff(np.append(bags.offsets, bags.rows.size)))
        kept = bags.rows < keep_rows
        counts = np.bincount(owner[kept], minlength=len(bags))
        bags = Bags(bags.rows[kept], np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64))
    return torch.softmax(torch.from_numpy(predict_logits(trained.model, bags)), dim=-1).numpy()


def test_the_trained_model_learned_something(trained: Trained, mr_small: TaskData) -> None:
    # Guards the comparisons below against a degenerate model (e.g. constant outputs).
    probs = torch_probabilities(trained, mr_small.train.texts)
    assert (probs.argmax(axis=1) == np.asarray(mr_small.train.labels)).mean() > 0.8
    assert probs[:, 1].std() > 0.05


def test_float32_student_equals_pytorch(trained: Trained, float32_model: Path) -> None:
    runtime = StudentRuntime.load(float32_model, RuntimeOptions(threads=1))
    out = runtime.predict(trained.texts)
    expected = torch_probabilities(trained, trained.texts)
    np.testing.assert_allclose(out.probabilities, expected, atol=1e-5, rtol=0)
    assert runtime.labels == trained.labels
    manifest = runtime.manifest
    assert (manifest.vocab_size, manifest.embedding_dim, manifest.hidden_dim) == (VOCAB_SIZE, 24, 16)
    assert manifest.shard_dtype == "float32"
    assert manifest.featurizer.settings() == trained.settings
    # The shards hold the table bit for bit.
    table = np.concatenate([np.load(float32_model / s.path) for s in manifest.shards])
    assert np.array_equal(table, trained.model.embedding.weight.detach().numpy())


def test_training_and_serving_featurizers_give_the_same_ids(
    trained: Trained, float32_model: Path, mr_small: TaskData, tmp_path: Path
) -> None:
    """DESIGN.md section 2, "One featurizer": the rows a served text gets are the rows training used,
    whether training featurized texts in memory (labeled sets) or streamed the corpus to disk (KD)."""
    texts = [*mr_small.train.texts, *trained.texts]
    training_side = featurize_bags(load_vocab_featurizer(trained.vocab_dir, trained.settings), texts)
    serving = StudentRuntime.load(float32_model, RuntimeOptions(threads=1)).featurizer.occurrences(texts)
    assert np.array_equal(serving.rows, training_side.rows)
    assert np.array_equal(serving.offsets(), training_side.offsets)

    featurizer = load_vocab_featurizer(trained.vocab_dir, trained.settings)
    chunks = [texts[lo : lo + 97] for lo in range(0, len(texts), 97)]
    store = featurize_corpus(featurizer, chunks, tmp_path / "features", "key", total=len(texts))
    assert len(store) == len(texts) and store.rows.dtype == np.int32
    everything = select_bags(store.rows, store.offsets, np.arange(len(texts), dtype=np.int64))
    assert np.array_equal(everything.rows, training_side.rows)
    assert np.array_equal(everything.offsets, training_side.offsets)
    done = json.loads((tmp_path / "features" / "done.json").read_text())
    assert done["texts"] == len(texts) and done["occurrences"] == training_side.rows.size
    assert done["mean_coverage"] == pytest.approx(float(serving.coverage.mean()))


def test_float16_student_is_close_to_pytorch(trained: Trained, tmp_path: Path) -> None:
    out_dir = export(trained, tmp_path / "f16")  # float16 is the default
    runtime = StudentRuntime.load(out_dir, RuntimeOptions(threads=1))
    assert runtime.manifest.shard_dtype == "float16"
    probs = runtime.predict(trained.texts).probabilities
    np.testing.assert_allclose(probs, torch_probabilities(trained, trained.texts), atol=2e-3, rtol=0)


def test_empty_and_unknown_texts_pool_to_zeros_like_embedding_bag(trained: Trained, float32_model: Path) -> None:
    runtime = StudentRuntime.load(float32_model, RuntimeOptions(threads=1))
    texts = ["", "zxqv blorf snargle", "!!!"]
    pooled, _ = runtime.pool(texts)
    assert np.array_equal(pooled, np.zeros((3, 24), dtype=np.float32))
    out = runtime.predict(texts)
    assert out.coverage.tolist() == [0.0, 0.0, 0.0]
    assert out.ngrams_found.tolist() == [0, 0, 0]
    # torch's EmbeddingBag gives an empty bag the zero vector too: the same probabilities.
    np.testing.assert_allclose(out.probabilities, torch_probabilities(trained, texts), atol=1e-6, rtol=0)
    with torch.no_grad():
        zero = torch.softmax(trained.model.head(torch.zeros(1, 24)), dim=-1).numpy()
    np.testing.assert_allclose(out.probabilities, np.repeat(zero, 3, axis=0), atol=1e-6, rtol=0)


def test_pooling_is_the_mean_with_multiplicity(trained: Trained, float32_model: Path) -> None:
    runtime = StudentRuntime.load(float32_model, RuntimeOptions(threads=1))
    texts = ["bad bad bad movie", trained.texts[0]]
    pooled, _ = runtime.pool(texts)
    bags = featurize_bags(load_vocab_featurizer(trained.vocab_dir, trained.settings), texts)
    with torch.no_grad():
        expected = trained.model.pool(*bags.tensors()).numpy()
    np.testing.assert_allclose(pooled, expected, atol=1e-6, rtol=0)


def test_multi_shard_table_equals_single_shard(trained: Trained, float32_model: Path, tmp_path: Path) -> None:
    out_dir = export(trained, tmp_path / "sharded", dtype="float32", shard_rows=700)
    sharded = StudentRuntime.load(out_dir, RuntimeOptions(threads=1))
    shards = sharded.manifest.shards
    assert [(s.row_start, s.row_end) for s in shards] == [(0, 700), (700, 1400), (1400, 2100), (2100, 2800),
                                                           (2800, 3000)]
    assert [s.path for s in shards] == [f"embeddings/shard-{i:05d}.npy" for i in range(5)]
    single = StudentRuntime.load(float32_model, RuntimeOptions(threads=1))
    a, b = sharded.predict(trained.texts), single.predict(trained.texts)
    np.testing.assert_array_equal(sharded.pool(trained.texts)[0], single.pool(trained.texts)[0])
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.coverage, b.coverage)


def test_pruning_keeps_the_first_k_rows(trained: Trained, tmp_path: Path) -> None:
    keep = 400
    out_dir = export(trained, tmp_path / "pruned", dtype="float32", prune_top_k=keep, shard_rows=150)
    runtime = StudentRuntime.load(out_dir, RuntimeOptions(threads=1))
    manifest = runtime.manifest
    assert manifest.vocab_size == keep
    assert manifest.shards[-1].row_end == keep
    assert read_ngrams(out_dir) == read_ngrams(trained.vocab_dir)[:keep]
    words = (out_dir / "vocab" / "words.txt").read_text(encoding="utf-8").splitlines()
    assert words == sorted({w for g in read_ngrams(out_dir) for w in g.split(" ")})
    assert runtime.featurizer.vocab_size == keep
    table = np.concatenate([np.load(out_dir / s.path) for s in manifest.shards])
    assert np.array_equal(table, trained.model.embedding.weight.detach().numpy()[:keep])
    # The pruned student is the PyTorch DAN that only sees the first `keep` rows.
    out = runtime.predict(trained.texts)
    np.testing.assert_allclose(out.probabilities, torch_probabilities(trained, trained.texts, keep), atol=1e-5)
    full = StudentRuntime.load(export(trained, tmp_path / "full", dtype="float32"), RuntimeOptions(threads=1))
    assert np.all(out.coverage <= full.predict(trained.texts).coverage)
    # A prune_top_k above the vocabulary keeps everything.
    big = load_student_manifest(export(trained, tmp_path / "big", prune_top_k=10 * VOCAB_SIZE))
    assert big.vocab_size == VOCAB_SIZE


def test_int8_student_round_trip(trained: Trained, tmp_path: Path) -> None:
    """export.dtype = "int8": int8 shards + one float32 scale per row, listed and checked in the manifest;
    the served student is the float32 one with its table quantized, on both backends."""
    from sdcore.quantize import dequantize_rows, quantize_rows

    f16_dir = export(trained, tmp_path / "f16", shard_rows=1000)
    int8_dir = export(trained, tmp_path / "q8", dtype="int8", shard_rows=1000)
    manifest = load_student_manifest(int8_dir)
    assert manifest.shard_dtype == "int8" and manifest.featurizer.spec == "sd-ngram-v1"
    assert all(s.scale is not None and s.scale.path == f"embeddings/scale-{i:05d}.npy"
               for i, s in enumerate(manifest.shards))
    weight = trained.model.embedding.weight.detach().numpy()
    codes = np.concatenate([np.load(int8_dir / s.path) for s in manifest.shards])
    scales = np.concatenate([np.load(int8_dir / s.scale.path) for s in manifest.shards if s.scale])
    expected_codes, expected_scales = quantize_rows(weight)
    np.testing.assert_array_equal(codes, expected_codes)
    np.testing.assert_array_equal(scales, expected_scales)
    # Half the bytes of float16 (plus 4 bytes of scale a row).
    shard_bytes = {d: sum((d / s.path).stat().st_size for s in load_student_manifest(d).shards)
                   for d in (f16_dir, int8_dir)}
    assert shard_bytes[int8_dir] < 0.55 * shard_bytes[f16_dir]

    kernel = StudentRuntime.load(int8_dir, RuntimeOptions(threads=1))
    reference = StudentRuntime.load(int8_dir, RuntimeOptions(threads=1, backend="numpy"))
    pooled, _ = kernel.pool(trained.texts)
    np.testing.assert_allclose(pooled, reference.pool(trained.texts)[0], rtol=1e-5, atol=1e-6)
    # Pooling the dequantized table in float32 gives the same vectors.
    dequantized = EmbeddingTable([dequantize_rows(codes, scales)], [0], threads=1)
    np.testing.assert_allclose(pooled, mean_pool(reference.featurizer.occurrences(trained.texts), dequantized),
                               rtol=1e-5, atol=1e-6)
    probs = kernel.predict(trained.texts).probabilities
    torch_probs = torch_probabilities(trained, trained.texts)
    np.testing.assert_allclose(probs, torch_probs, atol=3e-2, rtol=0)
    assert (probs.argmax(1) == torch_probs.argmax(1)).mean() > 0.97


def test_a_damaged_int8_scale_file_is_refused(trained: Trained, tmp_path: Path) -> None:
    root = export(trained, tmp_path / "q8", dtype="int8", shard_rows=1000)
    scale = root / "embeddings" / "scale-00001.npy"
    data = bytearray(scale.read_bytes())
    data[-3] ^= 0x10
    scale.write_bytes(bytes(data))
    assert_refused(root, scale, "sha256")


def test_the_kernel_and_the_numpy_reference_serve_the_same_probabilities(trained: Trained, tmp_path: Path) -> None:
    root = export(trained, tmp_path / "f16", shard_rows=900)
    kernel = StudentRuntime.load(root, RuntimeOptions(threads=2))
    reference = StudentRuntime.load(root, RuntimeOptions(threads=1, backend="numpy"))
    assert kernel.backend == "kernel" and reference.backend == "numpy"
    a, b = kernel.predict(trained.texts), reference.predict(trained.texts)
    np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(a.coverage, b.coverage)
    np.testing.assert_array_equal(a.ngrams_found, b.ngrams_found)


def test_a_model_made_by_another_featurizer_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    manifest = root / MANIFEST
    data = json.loads(manifest.read_text(encoding="utf-8"))
    assert data["featurizer"]["spec"] == "sd-ngram-v1"
    data["featurizer"]["spec"] = "sd-ngram-v9"
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert_refused(root, manifest, "made by featurizer 'sd-ngram-v9'")
    data["featurizer"]["spec"] = "sd-ngram-v2"  # a known spec whose settings say another one
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert_refused(root, manifest, "spec 'sd-ngram-v2' with settings of 'sd-ngram-v1'")
    del data["featurizer"]["spec"]  # a manifest from before the spec was recorded: the same featurizer
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert StudentRuntime.load(root, RuntimeOptions(threads=1)).manifest.featurizer.spec == "sd-ngram-v1"


# --- make_tiny_student ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(mr_small: TaskData, tmp_path_factory: pytest.TempPathFactory, torch_single_thread: None) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "tiny-mr"
    return make_tiny_student(out, mr_small.train.texts, mr_small.train.labels, mr_small.label_names, epochs=4)


def test_tiny_student_is_a_working_model(tiny_model: Path, mr_small: TaskData) -> None:
    runtime = StudentRuntime.load(tiny_model, RuntimeOptions(threads=1))
    manifest = runtime.manifest
    assert manifest.name == "tiny-mr" and manifest.labels == ["negative", "positive"]
    assert manifest.shard_dtype == "float16"
    assert len(manifest.shards) == -(-manifest.vocab_size // 512)
    out = runtime.predict(mr_small.train.texts)
    assert (out.probabilities.argmax(axis=1) == np.asarray(mr_small.train.labels)).mean() > 0.8
    np.testing.assert_allclose(out.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(out.coverage > 0) and np.all(out.coverage <= 1)


def test_batched_predict_equals_one_by_one(tiny_model: Path, trained: Trained) -> None:
    runtime = StudentRuntime.load(tiny_model, RuntimeOptions(threads=1))
    texts = trained.texts[:60] + EXTRA_TEXTS
    batch = runtime.predict(texts)
    for i, text in enumerate(texts):
        single = runtime.predict([text])
        np.testing.assert_allclose(single.probabilities[0], batch.probabilities[i], atol=1e-6, rtol=0)
        assert single.coverage[0] == batch.coverage[i]
        assert single.ngrams_found[0] == batch.ngrams_found[i]
    empty = runtime.predict([])
    assert empty.probabilities.shape == (0, 2) and empty.coverage.shape == (0,)


# --- Damaged models are refused, naming the file ------------------------------------------------------


def damaged_copy(src: Path, tmp_path: Path) -> Path:
    return copy_model(src, tmp_path / "copy")


def assert_refused(root: Path, bad_file: Path, problem: str) -> None:
    with pytest.raises(ModelFormatError, match=problem) as caught:
        StudentRuntime.load(root, RuntimeOptions(threads=1))
    assert caught.value.path == bad_file
    assert str(bad_file) in str(caught.value)


def test_a_flipped_byte_in_a_shard_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    shard = root / "embeddings" / "shard-00001.npy"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01  # inside the table, not the header: the size is unchanged
    shard.write_bytes(bytes(data))
    assert_refused(root, shard, "sha256")
    StudentRuntime.load(root, RuntimeOptions(threads=1, verify_checksums=False))  # only the checksum could see it


def test_a_truncated_shard_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    shard = root / "embeddings" / "shard-00000.npy"
    shard.write_bytes(shard.read_bytes()[:-64])
    assert_refused(root, shard, "size is")


def test_a_missing_head_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    (root / HEAD_FILE).unlink()
    assert_refused(root, root / HEAD_FILE, "missing")


def test_a_damaged_vocabulary_file_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    words = root / "vocab" / "words.txt"
    words.write_text(words.read_text(encoding="utf-8").replace("movie", "mauve"), encoding="utf-8")
    assert_refused(root, words, "sha256")


def test_a_manifest_that_is_not_json_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    manifest = root / MANIFEST
    manifest.write_text(manifest.read_text(encoding="utf-8")[:-20], encoding="utf-8")
    assert_refused(root, manifest, "not valid JSON")


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_a_wrong_format_version_is_refused(tiny_model: Path, tmp_path: Path, version: object) -> None:
    root = damaged_copy(tiny_model, tmp_path)
    manifest = root / MANIFEST
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["format_version"] = version
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert_refused(root, manifest, "unsupported format version")


def test_a_missing_model_folder_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path / "nope", tmp_path / "nope", "does not exist")


# --- Atomic export ------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_failed_export_leaves_nothing_behind(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_head(head: object, path: Path) -> None:
        path.write_bytes(b"half a head")
        raise RuntimeError("disk full while writing the head")

    monkeypatch.setattr(export_module, "export_head", broken_head)
    with pytest.raises(RuntimeError, match="disk full"):
        export(trained, tmp_path / "new-model")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_the_previous_one_untouched(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = export(trained, tmp_path / "model", dtype="float32", shard_rows=1000)
    before = snapshot(out_dir)
    probs_before = StudentRuntime.load(out_dir, RuntimeOptions(threads=1)).predict(trained.texts).probabilities

    def broken_head(head: object, path: Path) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(export_module, "export_head", broken_head)
    with pytest.raises(RuntimeError, match="interrupted"):
        export(trained, out_dir, dtype="float16", prune_top_k=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert snapshot(out_dir) == before
    after = StudentRuntime.load(out_dir, RuntimeOptions(threads=1)).predict(trained.texts).probabilities
    np.testing.assert_array_equal(after, probs_before)

    monkeypatch.undo()  # a later successful export replaces it whole
    export(trained, out_dir, prune_top_k=100)
    assert load_student_manifest(out_dir).vocab_size == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert not (out_dir / "embeddings" / "shard-00002.npy").exists()
    shutil.rmtree(out_dir)


def test_threads_go_to_the_kernel_and_the_head_runs_on_one(trained: Trained, float32_model: Path) -> None:
    runtime = StudentRuntime.load(float32_model, RuntimeOptions(threads=2))
    assert runtime.kernel_threads == 2
    assert runtime.head.get_session_options().intra_op_num_threads == 1
    one = StudentRuntime.load(float32_model, RuntimeOptions(threads=1)).predict(trained.texts).probabilities
    np.testing.assert_array_equal(runtime.predict(trained.texts).probabilities, one)  # same answers either way
