"""Which onnxruntime execution providers a ``device`` setting means on this machine."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import onnxruntime as ort

from sdcore.errors import ProjectError

logger = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


class DeviceUnavailable(ProjectError, RuntimeError):
    """The requested device cannot be used and falling back to the CPU was not allowed."""


@dataclass(frozen=True)
class DevicePlan:
    requested: str
    device: str  # the device actually used
    providers: tuple[str, ...]
    note: str = ""  # why ``device`` differs from ``requested``, if it does


def plan_device(requested: str, allow_cpu_fallback: bool, available: Sequence[str] | None = None) -> DevicePlan:
    """Providers for ``requested`` ("cpu" or "cuda"), given the providers onnxruntime offers."""
    if available is None:
        available = ort.get_available_providers()
    if requested == "cpu":
        return DevicePlan("cpu", "cpu", (CPU,))
    if requested != "cuda":
        raise DeviceUnavailable(f"unknown device {requested!r} (use 'cpu' or 'cuda')")
    if CUDA in available:
        # CPU stays listed: onnxruntime places the few ops CUDA lacks there.
        return DevicePlan("cuda", "cuda", (CUDA, CPU))
    problem = (
        f"device=cuda asked for, but onnxruntime offers no {CUDA} (available: {', '.join(available)}); "
        "install onnxruntime-gpu with a matching CUDA"
    )
    if not allow_cpu_fallback:
        raise DeviceUnavailable(problem + ", or pass --allow-cpu-fallback to run on the CPU")
    logger.warning("%s; falling back to the CPU (allow_cpu_fallback=true)", problem)
    return DevicePlan("cuda", "cpu", (CPU,), note=f"cuda unavailable, running on cpu: {problem}")
