"""Which cascade policy a request runs under (service.cascade_policy.resolve_policy), and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from sdcore.cascade import CascadePolicy
from sdcore.router import CascadeRouter, RouterPolicy
from service.cascade_policy import Thresholds, resolve_policy
from service.settings import ServiceSettings

STORED = CascadePolicy(temperature=1.7, confidence_threshold=0.8, coverage_threshold=0.3)


def test_nothing_set_defers_nothing_at_temperature_one() -> None:
    resolved = resolve_policy(None, Thresholds(), Thresholds())
    assert resolved.policy == CascadePolicy()
    assert resolved.sources == dict.fromkeys(("temperature", "confidence_threshold", "coverage_threshold"), "none")


def test_the_manifest_is_used_when_nothing_overrides_it() -> None:
    resolved = resolve_policy(STORED, Thresholds(), Thresholds())
    assert resolved.policy == STORED
    assert set(resolved.sources.values()) == {"manifest"}


def test_each_threshold_comes_from_the_first_layer_that_sets_it() -> None:
    resolved = resolve_policy(STORED, Thresholds(coverage_threshold=0.1), Thresholds(confidence_threshold=0.0))
    assert resolved.policy == CascadePolicy(1.7, 0.0, 0.1)  # a request's 0 is a value, not "unset"
    assert resolved.sources == {
        "temperature": "manifest", "confidence_threshold": "request", "coverage_threshold": "settings"
    }
    both = resolve_policy(STORED, Thresholds(0.5, 0.5), Thresholds(0.9, 0.2))
    assert both.policy == CascadePolicy(1.7, 0.9, 0.2)


def test_without_a_manifest_settings_apply_at_temperature_one() -> None:
    resolved = resolve_policy(None, Thresholds(confidence_threshold=0.6), Thresholds())
    assert resolved.policy == CascadePolicy(1.0, 0.6, 0.0)
    assert resolved.sources == {"temperature": "none", "confidence_threshold": "settings", "coverage_threshold": "none"}


ROUTER = CascadeRouter(temperature=1.2, mean=[0.0] * 6, scale=[1.0] * 6, coef=[-1.0, 0, 0, -0.5, 0, 0],
                       intercept=0.3, threshold=0.4)


def test_the_router_decides_unless_the_request_or_the_settings_set_a_threshold() -> None:
    routed = resolve_policy(STORED, Thresholds(), Thresholds(), ROUTER)
    assert routed.rule == RouterPolicy(ROUTER, 0.4) and routed.rule_name == "router"
    for settings, request in ((Thresholds(), Thresholds(coverage_threshold=0.0)),
                              (Thresholds(confidence_threshold=0.9), Thresholds())):
        resolved = resolve_policy(STORED, settings, request, ROUTER)
        assert resolved.rule_name == "thresholds" and resolved.rule == resolved.policy
    assert resolve_policy(STORED, Thresholds(), Thresholds(), None).rule == STORED


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SD_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_settings_read_the_thresholds_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings(student=[Path("m")]).cascade_confidence_threshold is None
    monkeypatch.setenv("SD_CASCADE_CONFIDENCE_THRESHOLD", "0.75")
    monkeypatch.setenv("SD_CASCADE_COVERAGE_THRESHOLD", "")  # empty: not set
    s = ServiceSettings(student=[Path("m")])
    assert (s.cascade_confidence_threshold, s.cascade_coverage_threshold) == (0.75, None)
    assert s.to_env()["SD_CASCADE_CONFIDENCE_THRESHOLD"] == "0.75"
    assert "SD_CASCADE_COVERAGE_THRESHOLD" not in s.to_env()


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_settings_refuse_a_threshold_outside_zero_one(bad: float) -> None:
    with pytest.raises(ValidationError, match="cascade_coverage_threshold"):
        ServiceSettings(student=[Path("m")], cascade_coverage_threshold=bad)
