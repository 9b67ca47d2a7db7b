"""Speed-ups found by ``make bench``, proven to change nothing: the student's float16 gather through
onnxruntime (same floats as numpy), its chunked embedding-bag pooling (the same means as a plain
per-text loop) and the featurizer's bucketed key lookup (same positions as ``np.searchsorted``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdcore.featurizer import FeaturizerSettings, NgramFeaturizer, NgramOccurrences, mix_keys
from service.runtimes.student import EmbeddingTable, gather_cast_model, mean_pool


def test_gather_cast_model_bytes_match_the_onnx_package() -> None:
    onnx = pytest.importorskip("onnx")  # a training dependency; the service builds the bytes itself
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "rows"], ["gathered"], axis=0),
         helper.make_node("Cast", ["gathered"], ["out"], to=TensorProto.FLOAT)],
        "gather_rows",
        [helper.make_tensor_value_info("table", TensorProto.FLOAT16, ["vocab", "dim"]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", "dim"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.checker.check_model(onnx.load_from_string(gather_cast_model()))
    assert gather_cast_model() == model.SerializeToString()


def _shards(tmp_path: Path, dtype: str, sizes: list[int], dim: int) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    rng = np.random.default_rng(0)
    full = rng.standard_normal((sum(sizes), dim)).astype(dtype)
    full[0, :3] = [0.0, -0.0, 6.1e-5]  # zero, negative zero, a float16 subnormal
    shards, starts, start = [], [], 0
    for i, size in enumerate(sizes):
        path = tmp_path / f"shard-{i}.npy"
        np.save(path, full[start : start + size])
        shards.append(np.load(path, mmap_mode="r"))
        starts.append(start)
        start += size
    return full, shards, starts


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("sizes", [[50], [7, 20, 1, 22]])
def test_gather_equals_numpy(tmp_path: Path, dtype: str, sizes: list[int]) -> None:
    full, shards, starts = _shards(tmp_path, dtype, sizes, dim=9)
    table = EmbeddingTable(shards, starts, threads=1)
    assert (table._ort_gather is not None) == (dtype == "float16")
    def gather(index: np.ndarray) -> np.ndarray:
        out = np.full((index.size, 9), np.nan, dtype=np.float32)
        table.gather_into(index, out)
        return out

    for rows in ([0], [0, 6, 7, 26, 27, 49], list(range(50)), [49]):
        index = np.asarray(rows, dtype=np.int64)
        np.testing.assert_array_equal(gather(index), full[index].astype(np.float32))
    assert np.signbit(gather(np.array([0], dtype=np.int64))[0, 1])  # -0.0 stays -0.0
    assert gather(np.empty(0, dtype=np.int64)).shape == (0, 9)


@pytest.mark.parametrize("chunk_rows", [1, 3, 1024])
@pytest.mark.parametrize("sizes", [[50], [7, 20, 1, 22]])
def test_mean_pool_equals_a_per_text_loop(tmp_path: Path, chunk_rows: int, sizes: list[int]) -> None:
    full, shards, starts = _shards(tmp_path, "float16", sizes, dim=9)
    table = EmbeddingTable(shards, starts, threads=1)
    rng = np.random.default_rng(chunk_rows)
    # Five texts: the second has no n-gram in the vocabulary, the fourth repeats one row three times.
    per_text = [rng.integers(0, 50, 12), np.array([], dtype=np.int64), rng.integers(0, 50, 1),
                np.array([5, 5, 5, 40]), rng.integers(0, 50, 30)]
    occ = NgramOccurrences(
        text_index=np.concatenate([np.full(r.size, t) for t, r in enumerate(per_text)]).astype(np.int64),
        rows=np.concatenate(per_text).astype(np.int64),
        total=np.array([r.size + 2 for r in per_text], dtype=np.int64),
        num_texts=len(per_text),
    )
    got = mean_pool(occ, table, chunk_rows=chunk_rows)
    assert got.dtype == np.float32 and got.shape == (5, 9)
    for t, rows in enumerate(per_text):
        expected = full[rows].astype(np.float64).mean(axis=0) if rows.size else np.zeros(9)
        np.testing.assert_allclose(got[t], expected, rtol=1e-5, atol=1e-6)
    assert not got[1].any()  # no n-gram found: the zero vector, as EmbeddingBag gives


def test_mean_pool_of_a_batch_with_no_ngram_found(tmp_path: Path) -> None:
    _, shards, starts = _shards(tmp_path, "float16", [10], dim=4)
    empty = np.empty(0, dtype=np.int64)
    occ = NgramOccurrences(text_index=empty, rows=empty, total=np.array([3, 0]), num_texts=2)
    got = mean_pool(occ, EmbeddingTable(shards, starts, threads=1))
    assert got.shape == (2, 4) and not got.any()


def _featurizer(keys: np.ndarray) -> NgramFeaturizer:
    keys = np.unique(keys.astype(np.uint64))
    return NgramFeaturizer(FeaturizerSettings(), ["w"], keys, np.arange(keys.size, dtype=np.int64))


@pytest.mark.parametrize("size", [0, 1, 2, 1000, 50_000])
def test_lower_bound_equals_searchsorted(size: int) -> None:
    rng = np.random.default_rng(size)
    words = rng.integers(0, 10**6, size=(size, 2)).astype(np.uint64)
    featurizer = _featurizer(mix_keys([words[:, 0], words[:, 1]]))  # hash-spread, like real vocabularies
    known = featurizer.sorted_keys
    queries = np.concatenate([known, known - np.uint64(1), known + np.uint64(1),
                              rng.integers(0, 2**63, 5000).astype(np.uint64) * np.uint64(2),
                              np.array([0, 2**64 - 1], dtype=np.uint64)])
    rng.shuffle(queries)
    np.testing.assert_array_equal(featurizer.lower_bound(queries), np.searchsorted(known, queries))


def test_lower_bound_falls_back_for_clustered_keys() -> None:
    featurizer = _featurizer(np.arange(1, 500, dtype=np.uint64))  # all in bucket 0: not hash-spread
    queries = np.arange(0, 600, dtype=np.uint64)
    np.testing.assert_array_equal(featurizer.lower_bound(queries), np.searchsorted(featurizer.sorted_keys, queries))


def test_gather_into_refuses_an_output_it_cannot_write_in_place(tmp_path: Path) -> None:
    _, shards, starts = _shards(tmp_path, "float16", [10], dim=4)
    table = EmbeddingTable(shards, starts, threads=1)
    rows = np.array([1, 2], dtype=np.int64)
    for bad in (np.empty((2, 4), dtype=np.float64), np.empty((3, 4), dtype=np.float32),
                np.empty((4, 2), dtype=np.float32).T):
        with pytest.raises(ValueError, match="C-contiguous float32"):
            table.gather_into(rows, bad)
    with pytest.raises(ValueError, match="chunk_rows"):
        empty = np.empty(0, dtype=np.int64)
        mean_pool(NgramOccurrences(empty, empty, np.array([0]), 1), table, chunk_rows=0)
