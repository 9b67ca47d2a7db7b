"""device=cpu|cuda -> onnxruntime providers, with and without the CPU fallback."""

from __future__ import annotations

import pytest

from service.runtimes.devices import CPU, CUDA, DeviceUnavailable, plan_device


def test_cpu_uses_the_cpu_provider() -> None:
    plan = plan_device("cpu", allow_cpu_fallback=False, available=[CUDA, CPU])
    assert plan.device == "cpu" and plan.providers == (CPU,) and not plan.note


def test_cuda_uses_cuda_first_when_onnxruntime_has_it() -> None:
    plan = plan_device("cuda", allow_cpu_fallback=False, available=[CUDA, CPU])
    assert plan.device == "cuda" and plan.providers == (CUDA, CPU)


def test_cuda_without_the_provider_stops_start_up_with_a_clear_message() -> None:
    with pytest.raises(DeviceUnavailable, match=r"CUDAExecutionProvider.*allow-cpu-fallback"):
        plan_device("cuda", allow_cpu_fallback=False, available=[CPU])


def test_cuda_without_the_provider_falls_back_when_allowed_and_says_so() -> None:
    plan = plan_device("cuda", allow_cpu_fallback=True, available=[CPU])
    assert plan.requested == "cuda" and plan.device == "cpu" and plan.providers == (CPU,)
    assert "cuda unavailable" in plan.note


def test_this_machine_offers_the_cpu_provider() -> None:
    assert plan_device("cpu", allow_cpu_fallback=False).providers == (CPU,)
