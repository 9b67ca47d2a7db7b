"""A model repository in Triton's and KServe's layout, and loading and unloading at run time.

    DIR/<name>/<version>/manifest.json ...     (version: a positive integer folder name)

At start the highest version of each model is loaded (Triton's default version policy, "latest 1").
``load(name)`` loads the model's highest version now, warms it up and only then puts it in the registry
in the place of the old one, which answers what it already holds (``Batcher.drain``) and stops: no
request is dropped. A version that cannot be loaded is refused with the file named, and the version
that served before goes on serving. ``unload(name)`` takes the model out. Models given by path
(``--student``/``--teacher``) are in the index too, but only repository models can be (un)loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sdcore.model_format import ModelFormatError, read_manifest_kind
from service.errors import ModelLoadFailed, ModelNotFound
from service.ops.metrics import ServiceMetrics
from service.repository.layout import model_names, versions_of
from service.repository.registry import WARM_UP_TEXT, ModelRegistry, ServedModel, load_served_model
from service.runtimes.devices import DeviceUnavailable
from service.settings import ServiceSettings

logger = logging.getLogger(__name__)

State = Literal["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: State
    reason: str = ""


class ModelRepository:
    """Loads and unloads the models of one process's registry; one change at a time."""

    def __init__(self, root: Path | None, registry: ModelRegistry, settings: ServiceSettings,
                 metrics: ServiceMetrics) -> None:
        self.root = root
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self._lock = asyncio.Lock()
        self._loading: dict[str, str] = {}  # name -> version being loaded
        self._failed: dict[tuple[str, str], str] = {}  # (name, version) -> why it could not be loaded
        self._retiring: set[asyncio.Task[None]] = set()

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        """Every version of every model in the repository, and the models given by path."""
        entries: list[IndexEntry] = []
        in_repository = set(model_names(self.root)) if self.root is not None else set()
        for name in sorted(in_repository):
            served = self.registry.find(name)
            for v in versions_of(self.root / name) if self.root is not None else []:
                version = str(v)
                if served is not None and served.version == version:
                    entries.append(IndexEntry(name, version, "READY" if served.ready else "LOADING"))
                elif self._loading.get(name) == version:
                    entries.append(IndexEntry(name, version, "LOADING"))
                else:
                    reason = self._failed.get((name, version)) or ("unloaded" if served is None else "not served")
                    entries.append(IndexEntry(name, version, "UNAVAILABLE", reason))
        for model in self.registry.models:
            if model.name not in in_repository:
                entries.append(IndexEntry(model.name, model.version, "READY" if model.ready else "LOADING"))
        return [e for e in entries if e.state == "READY"] if ready_only else entries

    def _folder(self, name: str) -> tuple[str, Path]:
        if self.root is None:
            raise ModelNotFound(f"no model repository: start the server with --model-repository DIR to load {name!r}")
        versions = versions_of(self.root / name) if name in model_names(self.root) else []
        if not versions:
            raise ModelNotFound(f"no model {name!r} with a version folder in the repository {self.root}")
        return str(versions[-1]), self.root / name / str(versions[-1])

    async def load(self, name: str) -> IndexEntry:
        """Serve the highest version of ``name``: loaded and warmed up first, then swapped in."""
        async with self._lock:
            version, folder = self._folder(name)
            current = self.registry.find(name)
            if current is not None and current.version == version and current.served_name == name:
                return IndexEntry(name, version, "READY")  # already served: Triton reloads; nothing changed here
            started = time.perf_counter()
            self._loading[name] = version
            try:
                model = await asyncio.to_thread(self._load, name, version, folder)
                await model.batcher.start()
                try:
                    await model.batcher.submit([WARM_UP_TEXT])
                except Exception:
                    await model.batcher.stop()
                    raise
                model.ready = True
            except Exception as exc:  # whatever the cause, the version that serves now keeps serving
                self._failed[(name, version)] = str(exc)
                if isinstance(exc, ModelFormatError | DeviceUnavailable):
                    logger.error("refused version %s of %r: %s", version, name, exc)
                else:
                    logger.exception("refused version %s of %r", version, name)
                kept = f"; version {current.version} keeps serving" if current is not None else ""
                raise ModelLoadFailed(f"cannot load version {version} of {name!r}: {exc}{kept}") from None
            finally:
                self._loading.pop(name, None)
            self._failed.pop((name, version), None)
            old = self.registry.put(model)
            logger.info("serving version %s of %r (loaded and warmed up in %.2f s)%s", version, name,
                        time.perf_counter() - started, f"; version {old.version} retires" if old else "")
            if old is not None:
                self._retire(old)
            return IndexEntry(name, version, "READY")

    def _load(self, name: str, version: str, folder: Path) -> ServedModel:
        kind = read_manifest_kind(folder)
        plan = self.registry.plan
        if plan is None:  # a registry built by hand (tests): plan it as at start-up
            from service.runtimes.devices import plan_device

            plan = plan_device(self.settings.device, self.settings.allow_cpu_fallback)
        return load_served_model(folder, "student" if kind == "student" else "teacher", self.settings, plan,
                                 self.metrics, served_name=name, version=version)

    async def unload(self, name: str) -> IndexEntry:
        async with self._lock:
            if self.root is None or name not in model_names(self.root):
                raise ModelNotFound(f"no model {name!r} in the model repository (only repository models unload)")
            model = self.registry.find(name)
            if model is None:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self.registry.remove(name)
            logger.info("unloaded version %s of %r", model.version, name)
            await model.batcher.drain()
            return IndexEntry(name, model.version, "UNAVAILABLE", "unloaded")

    def _retire(self, model: ServedModel) -> None:
        """Let the replaced model answer what it holds, then stop it, in the background."""
        task = asyncio.create_task(model.batcher.drain(), name=f"retire-{model.name}-{model.version}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def stop(self) -> None:
        """Wait for replaced models to finish (the app is shutting down)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
