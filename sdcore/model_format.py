"""The model repository format, version 1 (DESIGN.md section 3; models/README.md): the manifests and
the reader, which verifies sizes and checksums and names the damaged file. The writer is
``sdcore.model_writer``.

This is the only contract between training (which writes models) and serving (which reads them).
It depends on numpy and pydantic only, so the service can use it without torch.

A student folder::

    manifest.json              kind "student", labels, featurizer, shards, head, metrics, config
    vocab/words.txt            one word per line; line i is word id i
    vocab/keys.npy             uint64, strictly increasing n-gram keys (see sdcore.featurizer)
    vocab/rows.npy             int64, the embedding row of each key
    vocab/ngrams.txt           the n-gram of each row, in row order (most frequent first)
    embeddings/shard-NNNNN.npy row-range shards of the table, float16, float32 or int8
    embeddings/scale-NNNNN.npy int8 tables only: the float32 scale of each row of the shard (sdcore.quantize)
    head.onnx                  pooled [batch, dim] float32 -> logits [batch, labels]
    router.json                optional: the learned cascade router (sdcore/router.py), written by the cascade step

A teacher folder::

    manifest.json              kind "teacher", labels, max_length, files
    model.onnx                 input_ids, attention_mask (+ token_type_ids) -> logits
    tokenizer/                 the Hugging Face tokenizer files (tokenizer.json is required)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdcore.cascade import CascadeSection
from sdcore.errors import ProjectError
from sdcore.featurizer import FeaturizerError, FeaturizerSettings, NgramFeaturizer
from sdcore.spec import FEATURIZER_SPEC, SPECS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VOCAB_DIR = "vocab"
WORDS_FILE = f"{VOCAB_DIR}/words.txt"
KEYS_FILE = f"{VOCAB_DIR}/keys.npy"
ROWS_FILE = f"{VOCAB_DIR}/rows.npy"
NGRAMS_FILE = f"{VOCAB_DIR}/ngrams.txt"
SHARD_DIR = "embeddings"
HEAD_FILE = "head.onnx"
TEACHER_ONNX = "model.onnx"
TEACHER_TOKENIZER_DIR = "tokenizer"


class ModelFormatError(ProjectError):
    """A model folder that is missing, damaged or of an unknown format; the message names the file."""

    def __init__(self, path: Path | str, problem: str, *, hint: str | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}", hint=hint)


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str


class ShardEntry(FileEntry):
    row_start: int
    row_end: int
    scale: FileEntry | None = None  # int8 tables: the shard's per-row float32 scales


SHARD_DTYPES = ("float16", "float32", "int8")


class FeaturizerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lowercase: bool
    token_pattern: str
    ngram_min: int
    ngram_max: int
    # Spec v2's subwords (sdcore/spec.py); a v1 manifest has none of these fields.
    subword_min: int | None = None
    subword_max: int | None = None
    subword_buckets: int | None = None
    subword_scope: str | None = None
    # Which featurizer made the model (sdcore/spec.py). Manifests written before it was recorded were
    # made by v1, hence the default.
    spec: str = FEATURIZER_SPEC

    @field_validator("spec")
    @classmethod
    def _known_spec(cls, value: str) -> str:
        if value not in SPECS:
            raise ValueError(f"made by featurizer {value!r}; this code implements {' and '.join(SPECS)}")
        return value

    @model_validator(mode="after")
    def _settings_follow_the_spec(self) -> FeaturizerSpec:
        try:
            settings = self.settings()
        except FeaturizerError as exc:
            raise ValueError(str(exc)) from exc
        if settings.spec != self.spec:
            raise ValueError(f"spec {self.spec!r} with settings of {settings.spec!r} (subword_buckets "
                             f"{settings.subword_buckets})")
        return self

    def settings(self) -> FeaturizerSettings:
        return FeaturizerSettings.from_dict(self.model_dump(exclude={"spec"}, exclude_none=True))

    @classmethod
    def of(cls, settings: FeaturizerSettings) -> FeaturizerSpec:
        return cls(**settings.to_dict(), spec=settings.spec)


class StudentManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    kind: Literal["student"] = "student"
    name: str
    labels: list[str] = Field(min_length=2)
    featurizer: FeaturizerSpec
    vocab_size: int
    embedding_dim: int
    hidden_dim: int
    shard_dtype: Literal["float16", "float32", "int8"]
    shards: list[ShardEntry]
    vocab_files: list[FileEntry]
    head: FileEntry
    metrics: dict[str, Any] = Field(default_factory=dict)
    cascade: CascadeSection | None = None  # written by the cascade step (training/stages/cascade.py)
    router: FileEntry | None = None  # router.json, the learned cascade router (sdcore/router.py)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: str

    @property
    def table_rows(self) -> int:
        """Rows of the embedding table: the vocabulary's n-grams (``vocab_size``), plus v2's subword buckets."""
        return self.featurizer.settings().table_rows(self.vocab_size)


class TeacherManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    kind: Literal["teacher"] = "teacher"
    name: str
    labels: list[str] = Field(min_length=2)
    max_length: int
    input_names: list[str]
    base_model: str
    files: list[FileEntry]
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    created_at: str


def read_manifest_kind(root: Path) -> str:
    data = _read_manifest_json(root)
    kind = data.get("kind")
    if kind not in ("student", "teacher"):
        raise ModelFormatError(root / MANIFEST, f"unknown model kind {kind!r}")
    return str(kind)


def _read_manifest_json(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise ModelFormatError(root, "model folder does not exist", hint="export one with `sd run export`")
    if not path.is_file():
        raise ModelFormatError(path, "manifest is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(path, f"manifest is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(path, "manifest is not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(path, f"unsupported format version {version!r} (this code reads {FORMAT_VERSION})")
    return data


def load_student_manifest(root: Path) -> StudentManifest:
    try:
        return StudentManifest.model_validate(_read_manifest_json(root))
    except ValidationError as exc:
        if all(e["loc"][:1] == ("cascade",) for e in exc.errors()):  # a load stops here, not at a request
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ModelFormatError(root / MANIFEST, f"its cascade section is invalid ({problem})") from exc
        raise ModelFormatError(root / MANIFEST, f"invalid student manifest: {exc}") from exc


def load_teacher_manifest(root: Path) -> TeacherManifest:
    try:
        return TeacherManifest.model_validate(_read_manifest_json(root))
    except ValidationError as exc:
        raise ModelFormatError(root / MANIFEST, f"invalid teacher manifest: {exc}") from exc


def verify_file(root: Path, entry: FileEntry, checksum: bool = True) -> Path:
    """Check one listed file's size (and sha256) and return its path; raise naming the file."""
    path = root / entry.path
    if not path.is_file():
        raise ModelFormatError(path, "file listed in the manifest is missing")
    size = path.stat().st_size
    if size != entry.bytes:
        raise ModelFormatError(path, f"size is {size} bytes, the manifest says {entry.bytes} (damaged file)")
    if checksum and sha256_of(path) != entry.sha256:
        raise ModelFormatError(path, "sha256 does not match the manifest (damaged file)")
    return path


def verify_student(root: Path, manifest: StudentManifest, checksum: bool = True) -> None:
    scales = [s.scale for s in manifest.shards if s.scale is not None]
    for entry in [*manifest.vocab_files, manifest.head, *manifest.shards, *scales]:
        verify_file(root, entry, checksum)
    if manifest.shard_dtype == "int8" and len(scales) != len(manifest.shards):
        raise ModelFormatError(root / MANIFEST, "an int8 table needs a scale file for every shard")
    expected = 0
    for shard in manifest.shards:
        if shard.row_start != expected or shard.row_end <= shard.row_start:
            raise ModelFormatError(root / shard.path, "shard row ranges are not contiguous")
        expected = shard.row_end
    if expected != manifest.table_rows:
        raise ModelFormatError(root / MANIFEST, f"shards cover {expected} rows, the table has {manifest.table_rows} "
                               f"(vocab_size {manifest.vocab_size} + {manifest.table_rows - manifest.vocab_size} "
                               "subword buckets)")


def verify_teacher(root: Path, manifest: TeacherManifest, checksum: bool = True) -> None:
    for entry in manifest.files:
        verify_file(root, entry, checksum)


# --- vocabulary ---------------------------------------------------------------------------------


def load_featurizer(root: Path, settings: FeaturizerSettings) -> NgramFeaturizer:
    """Load a vocabulary folder's words, keys and rows into the shared featurizer."""
    try:
        words = (root / WORDS_FILE).read_text(encoding="utf-8").split("\n")[:-1]
        keys = np.load(root / KEYS_FILE, allow_pickle=False)
        rows = np.load(root / ROWS_FILE, allow_pickle=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(root / VOCAB_DIR, f"vocabulary cannot be read: {exc}") from exc
    if keys.dtype != np.uint64 or rows.dtype != np.int64:
        raise ModelFormatError(root / KEYS_FILE, f"unexpected dtypes keys={keys.dtype} rows={rows.dtype}")
    try:
        return NgramFeaturizer(settings, words, keys, rows)
    except ValueError as exc:
        raise ModelFormatError(root / KEYS_FILE, str(exc)) from exc


def read_ngrams(root: Path) -> list[str]:
    return (root / NGRAMS_FILE).read_text(encoding="utf-8").split("\n")[:-1]


# --- embeddings ---------------------------------------------------------------------------------


def open_shards(root: Path, manifest: StudentManifest) -> list[np.ndarray]:
    """Memory-map every shard (pages are shared between processes and loaded on first touch)."""
    maps: list[np.ndarray] = []
    for shard in manifest.shards:
        path = root / shard.path
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(path, f"shard cannot be memory-mapped: {exc}") from exc
        expected = (shard.row_end - shard.row_start, manifest.embedding_dim)
        if table.shape != expected or table.dtype != np.dtype(manifest.shard_dtype):
            raise ModelFormatError(
                path, f"shard is {table.shape} {table.dtype}, expected {expected} {manifest.shard_dtype}"
            )
        maps.append(table)
    return maps


def open_scales(root: Path, manifest: StudentManifest) -> list[np.ndarray] | None:
    """The per-row float32 scales of an int8 table, one memory-mapped array per shard (None otherwise)."""
    if manifest.shard_dtype != "int8":
        return None
    out: list[np.ndarray] = []
    for shard in manifest.shards:
        if shard.scale is None:
            raise ModelFormatError(root / shard.path, "int8 shard without a scale file")
        path = root / shard.scale.path
        try:
            scale = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelFormatError(path, f"scales cannot be memory-mapped: {exc}") from exc
        rows = shard.row_end - shard.row_start
        if scale.shape != (rows,) or scale.dtype != np.float32:
            raise ModelFormatError(path, f"scales are {scale.shape} {scale.dtype}, expected ({rows},) float32")
        out.append(scale)
    return out
