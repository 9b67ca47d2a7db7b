"""engine = "ray" on a real Ray cluster of this machine: a head node and a worker node (two raylets,
each with its own worker processes), on loopback (training/scale/local_cluster.py).

Invariants (STYLE.md 9): Ray labels == local labels (float tolerance) in the same files, Ray vocabulary
== local vocabulary byte for byte, a labeling worker killed mid-run loses and duplicates no shard, a
partial folder resumes. The teacher is the session's tiny BERT teacher (tests/integration/conftest.py).
"""

from __future__ import annotations

import filecmp
import importlib.util
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.config import ConfigError, RayConfig, RunConfig, config_from_dict
from training.pipeline import run_steps
from training.scale.local_cluster import LocalCluster
from training.scale.session import Capacity, teacher_workers
from training.stages.label_shards import LABELS_DIR, META_FILE, load_teacher_logits, shard_path
from training.stages.labeling import label_corpus
from training.stages.run_folder import DONE
from training.stages.vocab import build_vocab_from_chunks, count_top_ngrams

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason='ray is not installed (pip install -e ".[ray]")'
)
ATOL = 1e-5
SHARD_SIZE = 48  # about 17 shards over the tiny run's 800 corpus texts


# --- The cluster and the runs -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Head + one worker node, one CPU each, 200 MB object stores; connected for the module."""
    from training.scale.session import ray_session

    with LocalCluster(nodes=2, cpus_per_node=1, object_store_mb=200) as running, \
            ray_session(RayConfig(address=running.address)):
        yield running


@pytest.fixture(scope="module")
def base_run(tiny_teacher_run: Callable[[str], RunConfig]) -> RunConfig:
    return tiny_teacher_run("bert")


def copy_run(base: RunConfig, dest: Path, **changes: Any) -> RunConfig:
    """A private copy of the run (data, teacher) and its exported teacher, without labels or vocab."""
    shutil.copytree(base.run_dir, dest / "run", ignore=shutil.ignore_patterns(LABELS_DIR, "vocab"))
    shutil.copytree(base.teacher_dir, dest / "models" / base.teacher_dir.name)
    labeling = base.labeling.model_copy(update=dict(shard_size=SHARD_SIZE))
    return base.model_copy(update=dict(workdir=str(dest / "run"), models_dir=str(dest / "models"),
                               labeling=labeling, **changes))


def on_ray(config: RunConfig, cluster: LocalCluster) -> RunConfig:
    return config.model_copy(update=dict(engine="ray", ray=RayConfig(address=cluster.address)))


@pytest.fixture(scope="module")
def local_labels(base_run: RunConfig, tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    """The reference: the local step's labels of a private copy."""
    config = copy_run(base_run, tmp_path_factory.mktemp("local-labels"))
    label_corpus(config)
    return config


def shard_files(config: RunConfig) -> list[Path]:
    return sorted((config.run_dir / LABELS_DIR).glob("logits-*.npy"))


def labels_done(config: RunConfig) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((config.run_dir / LABELS_DIR / DONE).read_text())
    return data


# --- Labeling ---------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_ray
def test_ray_labels_equal_the_local_labels_in_the_same_files(
    cluster: LocalCluster, local_labels: RunConfig, base_run: RunConfig, tmp_path: Path
) -> None:
    config = on_ray(copy_run(base_run, tmp_path), cluster)
    run_steps(config, ["label"])  # through the pipeline's hook
    done = labels_done(config)
    reference = labels_done(local_labels)
    assert done["engine"] == "ray"
    for key in ("texts", "shards", "shard_size", "labels", "teacher"):
        assert done[key] == reference[key]
    # The same files: meta.json (so each engine resumes the other's folder) and every shard's sidecar
    # byte for byte; the shards themselves within float tolerance (thread counts differ).
    ray_dir, local_dir = config.run_dir / LABELS_DIR, local_labels.run_dir / LABELS_DIR
    names = sorted(p.name for p in local_dir.iterdir())
    assert sorted(p.name for p in ray_dir.iterdir()) == names
    exact = [n for n in names if not n.endswith(".npy") and n != DONE]
    assert META_FILE in exact and any(n.endswith(".sha256") for n in exact)
    assert filecmp.cmpfiles(ray_dir, local_dir, exact, shallow=False)[1:] == ([], [])
    np.testing.assert_allclose(load_teacher_logits(config.run_dir), load_teacher_logits(local_labels.run_dir),
                               rtol=0, atol=ATOL)
    summary = done["ray"]
    # One 1-CPU teacher actor per node. Both start, but with greedy scheduling the first one up may
    # label every shard of so small a corpus, so which node did what is not asserted.
    assert (summary["nodes"], summary["actors"], summary["workers_lost"], summary["shards_retried"]) == (2, 2, 0, 0)
    assert sum(w["shards"] for w in summary["workers"]) == done["computed_shards"] == done["shards"]
    assert os.getpid() not in {w.get("pid") for w in summary["workers"]}  # labeled in worker processes


@pytest.mark.slow
@needs_ray
def test_ray_resumes_a_partial_local_folder(
    cluster: LocalCluster, local_labels: RunConfig, base_run: RunConfig, tmp_path: Path
) -> None:
    config = on_ray(copy_run(base_run, tmp_path), cluster)
    shutil.copytree(local_labels.run_dir / LABELS_DIR, config.run_dir / LABELS_DIR)
    (config.run_dir / LABELS_DIR / DONE).unlink()
    dropped = [1, 2, len(shard_files(config)) - 1]
    for index in dropped:
        shard_path(config.run_dir / LABELS_DIR, index).unlink()
    kept = {p: p.stat().st_mtime_ns for p in shard_files(config)}

    run_steps(config, ["label"])
    done = labels_done(config)
    assert done["computed_shards"] == len(dropped)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the shards on disk were not labeled again
    np.testing.assert_allclose(load_teacher_logits(config.run_dir), load_teacher_logits(local_labels.run_dir),
                               rtol=0, atol=ATOL)


@pytest.mark.slow
@needs_ray
def test_a_worker_killed_mid_run_loses_and_duplicates_no_shard(
    cluster: LocalCluster, local_labels: RunConfig, base_run: RunConfig, tmp_path: Path
) -> None:
    from training.scale.labeling import ShardDone, label_corpus_ray

    config = on_ray(copy_run(base_run, tmp_path), cluster)
    written: list[tuple[int, int]] = []  # (shard, worker pid) per shard file written
    killed: list[int] = []

    def on_shard(event: ShardDone) -> None:
        written.append((event.index, event.worker.pid))
        if not killed:
            # The worker that labeled the first shard holds its next one (two are queued per worker), and
            # the driver gives it more until it learns of the death: the kill always hits work.
            killed.append(event.worker.pid)
            os.kill(event.worker.pid, signal.SIGKILL)

    label_corpus_ray(config, on_shard=on_shard)
    done = labels_done(config)
    shards = done["shards"]
    assert sorted(index for index, _ in written) == list(range(shards))  # each shard written exactly once
    assert len(shard_files(config)) == shards
    summary = done["ray"]
    assert summary["workers_lost"] == 1 and summary["actors"] == 3  # the dead one was replaced
    retried = summary["retried_shard_indices"]
    assert len(retried) >= 1
    writer = dict(written)
    assert all(writer[index] != killed[0] for index in retried)  # a lost shard was labeled elsewhere
    np.testing.assert_allclose(load_teacher_logits(config.run_dir), load_teacher_logits(local_labels.run_dir),
                               rtol=0, atol=ATOL)


# --- Counting ---------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_ray
def test_ray_vocabulary_equals_the_local_vocabulary_exactly(
    cluster: LocalCluster, base_run: RunConfig, tmp_path: Path
) -> None:
    # Many chunks, a vocabulary cut inside a long run of equal counts (ties decided by key), and a
    # memory budget so small that the reducers split their spill files (the local bounded-memory path).
    vocab = base_run.vocab.model_copy(update=dict(size=3000, chunk_texts=60, partitions=3, memory_mb=0.01))
    config = on_ray(copy_run(base_run, tmp_path / "ray", vocab=vocab), cluster)
    run_steps(config, ["vocab"])

    local = copy_run(base_run, tmp_path / "local", vocab=vocab)
    from training.data.task_data import count_corpus, iter_corpus

    expected = build_vocab_from_chunks(
        lambda: iter_corpus(local.run_dir, vocab.chunk_texts), vocab.featurizer_settings(), vocab.size,
        local.run_dir / "vocab", vocab.partitions, vocab.memory_mb, count_corpus(local.run_dir),
    )
    _, every_count = count_top_ngrams(iter_corpus(local.run_dir, 500), vocab.featurizer_settings(), 10**9,
                                      tmp_path / "spill")
    cut = expected.counts[-1]
    assert len(expected.ngrams) == vocab.size
    assert (every_count == cut).sum() > (expected.counts == cut).sum()  # the cut falls inside a tie
    ray_dir, local_dir = config.run_dir / "vocab", local.run_dir / "vocab"
    names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    assert sorted(p.relative_to(ray_dir).as_posix() for p in ray_dir.rglob("*") if p.is_file() and
                  p.name != "done.json") == names
    mismatch = filecmp.cmpfiles(ray_dir, local_dir, names, shallow=False)[1:]
    assert mismatch == ([], [])
    assert json.loads((ray_dir / "done.json").read_text())["size"] == vocab.size


# --- Config and sizing (no cluster) -----------------------------------------------------------------


def test_engine_and_ray_settings_are_validated() -> None:
    base = {"name": "x"}
    assert config_from_dict(base).engine == "local"
    config = config_from_dict({**base, "engine": "ray", "ray": {"address": "10.0.0.1:6379", "workers": 4}})
    assert (config.engine, config.ray.address, config.ray.workers) == ("ray", "10.0.0.1:6379", 4)
    for bad, match in (
        ({"engine": "spark"}, "engine"),
        ({"ray": {"workers": -1}}, "ray.workers"),
        ({"ray": {"cpus_per_worker": 0}}, "ray.cpus_per_worker"),
        ({"ray": {"adress": "x"}}, "adress"),
        ({"engine": "ray", "labeling": {"backend": "torch"}}, "backend"),
    ):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**base, **bad})


def test_teacher_actors_follow_gpus_else_cpus() -> None:
    assert teacher_workers(RayConfig(), Capacity(nodes=2, cpus=16, gpus=4)) == (4, True)
    assert teacher_workers(RayConfig(cpus_per_worker=4), Capacity(nodes=2, cpus=16, gpus=0)) == (4, False)
    assert teacher_workers(RayConfig(cpus_per_worker=4), Capacity(nodes=1, cpus=2, gpus=0)) == (1, False)
    assert teacher_workers(RayConfig(workers=3), Capacity(nodes=1, cpus=2, gpus=0)) == (3, False)
