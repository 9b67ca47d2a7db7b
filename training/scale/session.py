"""Connecting to a Ray cluster, and what the cluster offers.

``ray_session`` connects with ``ray.init`` unless this process is already connected (then it reuses
that connection and leaves it open). The address is ``ray.address`` from the run config; empty means
Ray's own rule: the ``RAY_ADDRESS`` environment variable when set, else a new single-machine cluster
started for the step. The workers get this checkout's ``training`` and ``service`` packages through
the job's runtime environment (``py_modules``), so the cluster's Python needs only the project's
dependencies (numpy, onnxruntime, tokenizers, tqdm), not the project itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import service
import training
from training.config import RayConfig

INSTALL_HINT = 'engine = "ray" needs Ray: pip install -e ".[ray]"'


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError(INSTALL_HINT) from exc
    return ray


def code_runtime_env() -> dict[str, Any]:
    """The job's runtime environment: our two packages, shipped to every worker (cached by content)."""
    packages = [str(Path(module.__file__).parent) for module in (training, service) if module.__file__]
    return {"py_modules": packages, "excludes": ["__pycache__", "*.pyc"]}


@contextmanager
def ray_session(settings: RayConfig) -> Iterator[Any]:
    """The ``ray`` module, connected; disconnects at the end only if it connected."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=settings.address or None, runtime_env=code_runtime_env(), log_to_driver=True)
    try:
        yield ray
    finally:
        ray.shutdown()


def connected_address(ray: Any) -> str:
    """The address of the cluster this process is connected to (for the step's summary)."""
    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:  # Ray Client connections have no GCS address to show
        return "(unknown)"


@dataclass(frozen=True)
class Capacity:
    """What the connected cluster holds now (an autoscaling cluster may grow later)."""

    nodes: int
    cpus: float
    gpus: float


def cluster_capacity(ray: Any) -> Capacity:
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return Capacity(nodes=nodes, cpus=float(resources.get("CPU", 0.0)), gpus=float(resources.get("GPU", 0.0)))


def teacher_workers(settings: RayConfig, capacity: Capacity) -> tuple[int, bool]:
    """(number of teacher actors, whether each takes a GPU).

    GPUs when the cluster has any: one actor per GPU. Otherwise one actor per ``cpus_per_worker`` CPUs.
    ``ray.workers`` > 0 overrides the count (e.g. for an autoscaling cluster that is still small).
    """
    use_gpu = capacity.gpus >= 1
    if settings.workers > 0:
        return settings.workers, use_gpu
    if use_gpu:
        return int(capacity.gpus), True
    return max(1, int(capacity.cpus // settings.cpus_per_worker)), False
