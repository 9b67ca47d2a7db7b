"""The loaded models of one process: each a runtime behind its own batcher, found by kind and name.

Loading checks everything that can be checked before the first request (manifests, sizes and
checksums, the device, duplicate names), so a bad model stops start-up with a message naming the file.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from sdcore.errors import ProjectError
from sdcore.model_format import MANIFEST, ModelFormatError, read_manifest_kind
from service.batcher import Batcher
from service.errors import ModelNotFound
from service.ops.metrics import ServiceMetrics
from service.repository.layout import latest_versions
from service.runtimes.contract import Kind, ModelFacts, Predictions, Runtime, RuntimeOptions
from service.runtimes.devices import DevicePlan, DeviceUnavailable, plan_device
from service.runtimes.student import StudentRuntime
from service.runtimes.teacher import TeacherRuntime
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

WARM_UP_TEXT = "a warm-up request through the whole path, so the first client does not pay for it"


class StartupError(ProjectError, RuntimeError):
    """The service cannot start with these settings (the message says why)."""


@dataclass
class ServedModel:
    """A loaded runtime, the batcher in front of it, and where it really runs."""

    runtime: Runtime
    batcher: Batcher[Predictions]
    device: str  # where it actually runs
    providers: list[str]  # onnxruntime providers the session really uses
    device_note: str = ""
    ready: bool = False
    version: str = "1"  # its version folder in a model repository; "1" for a folder given by path
    served_name: str | None = None  # its folder name in a model repository (else the manifest's name)

    @property
    def facts(self) -> ModelFacts:
        return self.runtime.facts

    @property
    def name(self) -> str:
        return self.served_name or self.runtime.facts.name

    @property
    def kind(self) -> Kind:
        return self.runtime.facts.kind

    @property
    def labels(self) -> list[str]:
        return self.runtime.facts.labels


class ModelRegistry:
    def __init__(self, models: list[ServedModel], plan: DevicePlan | None = None) -> None:
        self.models = models
        self.plan = plan  # the device plan later loads use (service.repository.model_repository)
        self._by_name = {m.name: m for m in models}
        if len(self._by_name) != len(models):
            names = [m.name for m in models]
            raise StartupError(f"two models share a name: {sorted({n for n in names if names.count(n) > 1})}")

    @classmethod
    def load(cls, settings: ServiceSettings, metrics: ServiceMetrics) -> ModelRegistry:
        """Load every model of ``settings`` (blocking: call it off the event loop)."""
        plan = plan_device(settings.device, settings.allow_cpu_fallback)
        models = [_load_one(root, "student", settings, plan, metrics) for root in settings.student]
        models += [_load_one(root, "teacher", settings, plan, metrics) for root in settings.teacher]
        if settings.model_repository is not None:
            for name, version, root in latest_versions(settings.model_repository):
                kind: Kind = "student" if read_manifest_kind(root) == "student" else "teacher"
                models.append(_load_one(root, kind, settings, plan, metrics, served_name=name, version=version))
        return cls(models, plan)

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.ready for m in self.models)

    def get(self, kind: Kind, name: str | None = None) -> ServedModel:
        """The named model of ``kind``, or the first of that kind; ModelNotFound otherwise."""
        of_kind = [m for m in self.models if m.kind == kind]
        if name is None:
            if not of_kind:
                raise ModelNotFound(f"no {kind} model is loaded")
            return of_kind[0]
        model = self._by_name.get(name)
        if model is None or model.kind != kind:
            known = ", ".join(m.name for m in of_kind) or "none"
            raise ModelNotFound(f"no {kind} model named {name!r} (loaded {kind}s: {known})")
        return model

    def put(self, model: ServedModel) -> ServedModel | None:
        """Serve ``model`` under its name from now on, in the place of the one it replaces (returned)."""
        old = self._by_name.get(model.name)
        if old is None:
            self.models.append(model)
        else:
            self.models[self.models.index(old)] = model
        self._by_name[model.name] = model
        return old

    def remove(self, name: str) -> ServedModel:
        model = self.by_name(name)
        self.models.remove(model)
        del self._by_name[name]
        return model

    def find(self, name: str) -> ServedModel | None:
        return self._by_name.get(name)

    def by_name(self, name: str) -> ServedModel:
        model = self._by_name.get(name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r} (loaded: {', '.join(self._by_name)})")
        return model

    async def start(self) -> None:
        for model in self.models:
            await model.batcher.start()

    async def warm_up(self) -> None:
        """One request through each model's batcher, thread and runtime; then it is ready."""
        for model in self.models:
            started = time.perf_counter()
            await model.batcher.submit([WARM_UP_TEXT])
            model.ready = True
            logger.info("model %r (%s) warmed up in %.1f ms", model.name, model.kind,
                        (time.perf_counter() - started) * 1000.0)

    async def stop(self) -> None:
        for model in self.models:
            model.ready = False
        await asyncio.gather(*(m.batcher.stop() for m in self.models))


def check_model_folders(settings: ServiceSettings) -> None:
    """Before the server starts: every model folder exists and holds a manifest of the right kind
    (ModelFormatError naming the folder otherwise), so a wrong path is one line, not a failed start-up."""
    for kind, roots in (("student", settings.student), ("teacher", settings.teacher)):
        for root in roots:
            found = read_manifest_kind(root)
            if found != kind:
                raise ModelFormatError(root / MANIFEST, f"is a {found} model, but was given as a {kind}")


def load_runtime(root: Path, expected: Kind, options: RuntimeOptions) -> Runtime:
    """Load one model folder; raise ModelFormatError naming the file if it is missing or damaged."""
    kind = read_manifest_kind(root)
    if kind != expected:
        raise ModelFormatError(root / MANIFEST, f"is a {kind} model, but was given as a {expected}")
    runtime: Runtime = (StudentRuntime if expected == "student" else TeacherRuntime).load(root, options)
    return runtime


def _load_one(root: Path, kind: Kind, settings: ServiceSettings, plan: DevicePlan,
              metrics: ServiceMetrics, served_name: str | None = None, version: str = "1") -> ServedModel:
    started = time.perf_counter()
    options = RuntimeOptions(settings.threads, tuple(plan.providers), settings.verify_checksums,
                             settings.teacher_onnx_batch_size)
    runtime = load_runtime(root, kind, options)
    active = runtime.providers()
    device, note = plan.device, plan.note
    if plan.device == "cuda" and "CUDAExecutionProvider" not in active:
        # onnxruntime lists CUDA yet silently fell back (e.g. CUDA libraries missing).
        problem = f"{root}: onnxruntime could not start CUDA for this model (session uses {active})"
        if not settings.allow_cpu_fallback:
            raise DeviceUnavailable(problem + "; pass --allow-cpu-fallback to run on the CPU")
        logger.warning("%s; running on the CPU", problem)
        device, note = "cpu", f"cuda unavailable, running on cpu: {problem}"
    name = served_name or runtime.facts.name
    batch_size = settings.max_batch_size if kind == "student" else settings.teacher_max_batch_size
    batcher: Batcher[Predictions] = Batcher(
        name,
        runtime.predict,
        max_batch_size=batch_size,
        max_wait_ms=settings.max_wait_ms,
        max_queue_size=settings.max_queue_size,
        timeout_s=settings.request_timeout_s,
        retry_after_s=settings.retry_after_s,
        inline_max_chars=settings.student_inline_max_chars if kind == "student" else 0,
        observer=metrics.for_model(name),
    )
    metrics.model_info.labels(name, kind, device).set(1)
    if kind == "student":  # the cascade's series exist from the start, so rate() sees the first texts
        for answered_by in ("student", "teacher"):
            metrics.cascade_texts.labels(name, answered_by)
    logger.info("loaded %s %r from %s on %s in %.2f s", kind, name, root, device, time.perf_counter() - started)
    return ServedModel(runtime, batcher, device, active, note, version=version, served_name=served_name)


load_served_model = _load_one  # for service.repository.model_repository
