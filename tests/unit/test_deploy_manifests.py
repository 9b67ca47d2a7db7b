"""The manifests under deploy/: Kubernetes' own schemas (kubernetes-validate, offline, strict) for the
built-in kinds, and the facts they must share with the service: probe paths that exist, SD_* variables
that are settings, a grace period longer than the drain, selectors that match, resources that exist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from service.app import create_app
from service.settings import ENV_PREFIX, ServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
KUBERNETES_VERSION = "1.33.0"
CUSTOM_KINDS = {"InferenceService", "VolumeSnapshot", "Kustomization"}  # CRDs: no schema is bundled


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(REPO_ROOT)), doc))
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def containers() -> list[dict[str, Any]]:
    found = [c for d in by_kind("Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    return found + [c for d in by_kind("InferenceService") for c in d["spec"]["predictor"]["containers"]]


@pytest.mark.parametrize(("path", "doc"), [d for d in documents() if d[1]["kind"] not in CUSTOM_KINDS],
                         ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}")
def test_built_in_kinds_pass_the_kubernetes_schema(path: str, doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_probes_ask_routes_the_service_has() -> None:
    app = create_app(ServiceSettings(student=[Path("unused")]))  # routes only: nothing is loaded
    paths = set(app.openapi()["paths"])
    probed = [c[probe]["httpGet"]["path"] for c in containers()
              for probe in ("startupProbe", "readinessProbe", "livenessProbe") if probe in c]
    assert probed and set(probed) <= paths, set(probed) - paths


def test_sd_variables_are_settings_and_valid() -> None:
    fields = set(ServiceSettings.model_fields)
    for container in containers():
        env = {e["name"]: e["value"] for e in container["env"] if e["name"].startswith(ENV_PREFIX)}
        assert {name.removeprefix(ENV_PREFIX).lower() for name in env} <= fields, env
        values = {name.removeprefix(ENV_PREFIX).lower(): value for name, value in env.items()}
        ServiceSettings.model_validate(values)  # each value parses


def test_the_grace_period_outlasts_the_drain() -> None:
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e["value"] for c in pod["containers"] for e in c.get("env", [])}
        drain = float(env["SD_DRAIN_DELAY_S"]) + float(env["SD_GRACEFUL_TIMEOUT_S"])
        assert pod["terminationGracePeriodSeconds"] > drain
        readiness = pod["containers"][0]["readinessProbe"]
        # the readiness probe turns the pod unready well within the delay
        assert readiness["periodSeconds"] * readiness["failureThreshold"] < float(env["SD_DRAIN_DELAY_S"])


def test_selectors_claims_and_targets_match() -> None:
    deployment = next(d for d in by_kind("Deployment") if d["metadata"]["name"] == "sd-api")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("Service", "PodDisruptionBudget"):
        for doc in by_kind(kind):
            selector = doc["spec"]["selector"]
            assert selector.get("matchLabels", selector).items() <= labels.items(), kind
    hpa = by_kind("HorizontalPodAutoscaler")[0]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sd-api"
    claims = {d["metadata"]["name"]: d for d in by_kind("PersistentVolumeClaim")}
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    models = next(v for v in volumes if "persistentVolumeClaim" in v)["persistentVolumeClaim"]
    assert models["readOnly"] is True and claims[models["claimName"]]["spec"]["accessModes"] == ["ReadOnlyMany"]
    snapshot = by_kind("VolumeSnapshot")[0]
    assert snapshot["spec"]["source"]["persistentVolumeClaimName"] in claims
    assert claims["sd-models"]["spec"]["dataSource"]["name"] == snapshot["metadata"]["name"]


def test_the_kustomization_lists_files_that_exist() -> None:
    kustomization = by_kind("Kustomization")[0]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource
