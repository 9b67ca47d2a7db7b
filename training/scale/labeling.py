"""The ``label`` step on Ray: teacher actors label corpus shards; the driver writes them.

Same outputs as ``training.stages.labeling.label_corpus`` by construction: the folder is prepared, shards are
cut, checked for completeness, written and marked done by the same ``ShardBook``
(``training.stages.label_shards``); this module only maps shards to logits on actors. The teacher identity
in ``meta.json`` comes from the same function, and each actor runs the same
``TeacherRuntime.logits`` on the same shard, so the logits differ at most by float rounding (thread
counts differ). Local and Ray runs can resume each other's folders.

How it runs:
- The exported teacher folder is read once and put in Ray's object store; each actor writes it to a
  private temporary folder and loads it with ``TeacherRuntime.load``, which verifies the checksums.
  No shared filesystem is needed.
- The driver streams the corpus, skips shards already on disk, and keeps ``PREFETCH`` shards queued
  per actor (one running, one waiting, so an actor never idles while the driver writes).
- The driver is the only writer: a shard's file is written (atomically) when its logits come back, so
  a shard is written once. When an actor dies, each shard it held goes back to the front of the queue
  for the next free actor, and a new actor replaces it. ``ray.max_retries`` bounds both.
- Progress: a bar over texts; at the end a summary of shards, workers and throughput, also kept in
  the step's done marker under ``"ray"``.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from service.runtimes.contract import RuntimeOptions
from service.runtimes.teacher import TeacherRuntime
from training.config import RunConfig
from training.progress import Progress, progress
from training.scale.session import cluster_capacity, connected_address, ray_session, teacher_workers
from training.stages.label_shards import LabelingError, Shard, ShardBook
from training.stages.labeling import onnx_teacher

PREFETCH = 2  # shards queued per actor
WAIT_SLICE_S = 1.0


@dataclass(frozen=True)
class WorkerInfo:
    pid: int
    node_id: str
    hostname: str
    device: str  # the onnxruntime execution provider that runs the teacher
    threads: int


class TeacherWorker:
    """One exported teacher in one Ray worker process (used as a Ray actor; a plain class, so this
    module imports without Ray)."""

    def __init__(
        self, files: dict[str, bytes], threads: int, batch_size: int, use_gpu: bool, max_tokens: int = 0
    ) -> None:
        # The thread budget covers tokenizing too: the tokenizers library's Rayon pool takes every core
        # of the node unless told otherwise, and it reads this when it first tokenizes (below, in this
        # fresh actor process). onnxruntime gets its budget through TeacherRuntime.load.
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        import onnxruntime as ort
        import ray

        providers = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        with tempfile.TemporaryDirectory(prefix="sd-teacher-") as tmp:
            root = Path(tmp)
            for name, data in files.items():
                relative = PurePosixPath(name)
                if relative.is_absolute() or ".." in relative.parts:
                    raise ValueError(f"teacher file {name!r} is outside the teacher folder")
                path = root / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            # The session and tokenizer are in memory once loaded; the files can go.
            self.runtime = TeacherRuntime.load(root, RuntimeOptions(threads=threads, providers=tuple(providers)))
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.info = WorkerInfo(
            pid=os.getpid(),
            node_id=ray.get_runtime_context().get_node_id(),
            hostname=socket.gethostname(),
            device=self.runtime.session.get_providers()[0],
            threads=threads,
        )

    def describe(self) -> WorkerInfo:
        return self.info

    def label(self, texts: list[str]) -> tuple[np.ndarray, float]:
        """float32 logits [len(texts), labels], and the seconds they took."""
        started = time.perf_counter()
        logits = self.runtime.logits(texts, self.batch_size, max_tokens=self.max_tokens)
        return np.ascontiguousarray(logits, dtype=np.float32), time.perf_counter() - started


@dataclass
class _Worker:
    handle: Any
    number: int
    info: WorkerInfo | None = None  # None while the actor starts
    alive: bool = True
    in_flight: int = 0
    shards: int = 0
    texts: int = 0
    busy_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        rate = round(self.texts / self.busy_s, 1) if self.busy_s > 0 else None
        info = asdict(self.info) if self.info else {}
        return {"worker": self.number, **info, "alive": self.alive, "shards": self.shards, "texts": self.texts,
                "busy_s": round(self.busy_s, 2), "texts_per_s": rate}


@dataclass(frozen=True)
class ShardDone:
    """Passed to ``on_shard`` after a shard's file is written."""

    index: int
    texts: int
    worker: WorkerInfo


@dataclass
class _Run:
    """The scheduling state of one labeling run."""

    ray: Any
    actor: Any  # the TeacherWorker actor class
    actor_args: tuple[Any, ...]
    max_retries: int
    workers: list[_Worker] = field(default_factory=list)
    starting: dict[Any, _Worker] = field(default_factory=dict)  # describe() ref -> worker
    pending: dict[Any, tuple[_Worker, Shard]] = field(default_factory=dict)  # label() ref -> ...
    retry: deque[Shard] = field(default_factory=deque)
    lost_workers: int = 0
    failed_starts: int = 0
    retried: list[int] = field(default_factory=list)  # shard indices, once per loss
    first_ready: float | None = None  # perf_counter() when the first actor was ready
    last_written: float | None = None

    def start_worker(self) -> None:
        worker = _Worker(self.actor.remote(*self.actor_args), number=len(self.workers))
        self.workers.append(worker)
        self.starting[worker.handle.describe.remote()] = worker

    def lose(self, worker: _Worker, error: Exception) -> None:
        """A worker died: replace it, once (each of its refs reports the same death).

        Deaths while labeling are bounded by the shards' own retry counts; deaths at start (a teacher
        that cannot load there) would repeat forever, so they are bounded here.
        """
        if not worker.alive:
            return
        worker.alive = False
        self.lost_workers += 1
        if worker.info is None:
            self.failed_starts += 1
            if self.failed_starts > self.max_retries:
                raise LabelingError(f"{self.failed_starts} teacher workers failed to start; the last: {error}")
        self.start_worker()

    def ready(self) -> list[_Worker]:
        return [w for w in self.workers if w.alive and w.info is not None]


def _teacher_files(root: Path) -> dict[str, bytes]:
    """Every file of the exported teacher folder, by relative path (shipped to the actors)."""
    if not root.is_dir():
        raise LabelingError(f"{root}: no exported teacher; run the teacher-export step first")
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def label_corpus_ray(config: RunConfig, on_shard: Callable[[ShardDone], object] | None = None) -> Path:
    """Label the whole transfer corpus on Ray; returns ``<run_dir>/labels`` (see the module docstring)."""
    started = time.perf_counter()
    if config.labeling.backend != "onnx":
        raise LabelingError("engine = 'ray' labels with the exported ONNX teacher; set labeling.backend = 'onnx'")
    teacher = onnx_teacher(config)  # checks the export; gives the identity the local step records
    book = ShardBook(config.run_dir, teacher.labels, teacher.identity, config.labeling.shard_size)
    del teacher
    book.open()
    total = book.total

    with ray_session(config.ray) as ray:
        capacity = cluster_capacity(ray)
        address = connected_address(ray)
        count, use_gpu = teacher_workers(config.ray, capacity)
        threads = config.ray.cpus_per_worker
        actor = ray.remote(TeacherWorker).options(
            num_cpus=threads, num_gpus=1 if use_gpu else 0, max_restarts=0, scheduling_strategy="SPREAD"
        )
        files = ray.put(_teacher_files(config.teacher_dir))
        worker_args = (files, threads, config.labeling.batch_size, use_gpu, config.labeling.max_tokens)
        run = _Run(ray, actor, worker_args, config.ray.max_retries)
        for _ in range(count):
            run.start_worker()
        bar = progress(total=total, desc=f"label corpus (ray, {count} workers)", unit=" texts")
        try:
            _schedule(run, book, bar, on_shard)
        finally:
            bar.close()
            for worker in run.workers:
                ray.kill(worker.handle)

    seconds = time.perf_counter() - started
    computed = sum(w.shards for w in run.workers)
    labeled = sum(w.texts for w in run.workers)
    labeling_s = run.last_written - run.first_ready if run.last_written and run.first_ready else 0.0
    summary = {
        "address": address,
        "nodes": capacity.nodes,
        "cluster_cpus": capacity.cpus,
        "cluster_gpus": capacity.gpus,
        "actors": len(run.workers),
        "workers_lost": run.lost_workers,
        "shards_retried": len(run.retried),
        "retried_shard_indices": run.retried[:1000],
        # From the first ready actor to the last shard written: the rate without start-up costs.
        "labeling_s": round(labeling_s, 3),
        "labeling_texts_per_s": round(labeled / labeling_s, 1) if labeling_s > 0 else None,
        "workers": [w.summary() for w in run.workers],
    }
    out = book.finish(computed_shards=computed, texts_labeled=labeled, seconds=round(seconds, 2),
                      texts_per_second=round(labeled / seconds, 1) if seconds > 0 else None, engine="ray",
                      ray=summary)
    print(format_summary(book.shards_seen, computed, labeled, seconds, summary), flush=True)
    return out


def _schedule(
    run: _Run,
    book: ShardBook,
    bar: Progress,
    on_shard: Callable[[ShardDone], object] | None,
) -> None:
    """Feed the shards that are not done yet to ready workers until every shard is on disk."""
    ray = run.ray
    from ray.exceptions import RayActorError

    source = book.shards()
    exhausted = False

    def next_shard() -> Shard | None:
        nonlocal exhausted
        if run.retry:
            return run.retry.popleft()
        while not exhausted:
            shard = next(source, None)
            if shard is None:
                exhausted = True
                break
            if not book.is_complete(shard):
                return shard
            bar.skip(len(shard.texts))  # done by an earlier run
        return None

    while True:
        for worker in run.ready():
            while worker.in_flight < PREFETCH:
                shard = next_shard()
                if shard is None:
                    break
                run.pending[worker.handle.label.remote(shard.texts)] = (worker, shard)
                worker.in_flight += 1
        if not run.pending and exhausted and not run.retry:
            return
        # In slices, so that Ctrl-C reaches Python (a wait without timeout blocks in Ray's C++ code).
        ready: list[Any] = []
        while not ready:
            ready, _ = ray.wait([*run.pending, *run.starting], num_returns=1, timeout=WAIT_SLICE_S)
        ref = ready[0]
        if ref in run.starting:
            worker = run.starting.pop(ref)
            try:
                worker.info = ray.get(ref)
                if run.first_ready is None:
                    run.first_ready = time.perf_counter()
            except RayActorError as exc:  # it could not start (e.g. no teacher files, a bad node)
                run.lose(worker, exc)
            continue
        worker, shard = run.pending.pop(ref)
        worker.in_flight -= 1
        try:
            logits, seconds = ray.get(ref)
        except RayActorError as exc:
            shard.attempts += 1
            run.retried.append(shard.index)
            if shard.attempts > run.max_retries:
                raise LabelingError(f"shard {shard.index} was lost with {shard.attempts} workers: {exc}") from exc
            run.retry.appendleft(shard)
            run.lose(worker, exc)
            continue
        book.write(shard, logits)
        run.last_written = time.perf_counter()
        worker.shards += 1
        worker.texts += len(shard.texts)
        worker.busy_s += seconds
        bar.update(len(shard.texts))
        bar.set_postfix(workers=len(run.ready()), retried=len(run.retried), refresh=False)
        if on_shard is not None and worker.info is not None:
            on_shard(ShardDone(shard.index, len(shard.texts), worker.info))


def format_summary(shards: int, computed: int, labeled: int, seconds: float, summary: dict[str, Any]) -> str:
    rate = labeled / seconds if seconds > 0 else 0.0
    lines = [
        f"ray labeling: {shards} shards ({computed} labeled now, {shards - computed} already done), "
        f"{labeled} texts in {seconds:.1f} s = {rate:.1f} texts/s "
        f"({summary['labeling_texts_per_s'] or 0:.1f} texts/s once the first worker was up); "
        f"{summary['nodes']} nodes, {summary['actors']} teacher actors, {summary['workers_lost']} lost, "
        f"{summary['shards_retried']} shard(s) retried",
        f"{'worker':>6} {'node':>10} {'pid':>8} {'device':>22} {'shards':>6} {'texts':>8} {'busy s':>8} {'texts/s':>8}",
    ]
    for w in summary["workers"]:
        lines.append(
            f"{w['worker']:>6} {str(w.get('node_id', '?'))[:10]:>10} {w.get('pid', '?'):>8} "
            f"{w.get('device', '(never started)')!s:>22} {w['shards']:>6} {w['texts']:>8} {w['busy_s']:>8} "
            f"{w['texts_per_s'] if w['texts_per_s'] is not None else '-':>8}"
        )
    return "\n".join(lines)
