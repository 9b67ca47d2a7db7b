"""The model repository's folders on disk, read without loading anything (Triton's and KServe's layout):

    DIR/<name>/<version>/manifest.json ...     (version: a positive integer folder name)

The registry (start-up loads) and the repository (load and unload at run time) both read it here.
"""

from __future__ import annotations

from pathlib import Path

from sdcore.model_format import ModelFormatError


def versions_of(model_dir: Path) -> list[int]:
    """The version folders of one model, ascending (folders whose name is a positive integer)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


def model_names(root: Path) -> list[str]:
    if not root.is_dir():
        raise ModelFormatError(root, "model repository folder does not exist")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def latest_versions(root: Path) -> list[tuple[str, str, Path]]:
    """(name, version, folder) of the highest version of each model that has one."""
    out = []
    for name in model_names(root):
        versions = versions_of(root / name)
        if versions:
            out.append((name, str(versions[-1]), root / name / str(versions[-1])))
    return out
