"""Request and response bodies of the v1 API (input and output schemas kept apart)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)

from service.cascade_policy import PolicySource


def _has_content(text: str) -> str:
    if not text.strip():
        raise ValueError("text is empty or only whitespace")
    if not is_valid_unicode(text):
        raise ValueError("text holds a lone UTF-16 surrogate (e.g. \\ud800): not valid Unicode")
    return text


def is_valid_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON's "\\ud800" decodes to one): it has no UTF-8 form,
    so the featurizer and tokenizer would see something other than what the client meant."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# The validator enforces the rule with a clear message; the pattern states the same rule in the schema
# (JSON Schema patterns search: "has a character that Python's str.isspace() does not call space").
Text = Annotated[
    StrictStr,
    AfterValidator(_has_content),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"[^\s\x1c-\x1f\x85]"}),
]
ModelName = Annotated[StrictStr, Field(min_length=1, max_length=200)]

_TEXTS = Field(
    min_length=1,
    description="Texts to classify, each non-empty; the server's limits on count and length apply (413).",
    examples=[["a gripping, beautifully acted film", "dull and far too long"]],
)


_Threshold = Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)]
TopK = Annotated[StrictInt, Field(ge=1)]


class AnswerFields(BaseModel):
    """The answer options of the classify routes (service/answers.py); absent, an answer is as before."""

    top_k: TopK | None = Field(
        None,
        description="Keep at most this many labels in `scores`, best first. Absent: every label, in the model's "
        "order. `label` and `score` are the best label's either way.",
        examples=[1],
    )
    threshold: _Threshold | None = Field(
        None,
        description="Keep only labels whose probability is at least this in `scores` (best first; may leave "
        "none). Absent: no label dropped.",
        examples=[0.2],
    )
    raw: StrictBool = Field(False, description="Also answer `logits`: every label's raw logit, before the softmax.")


class ClassifyRequest(AnswerFields):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = _TEXTS
    model: ModelName | None = Field(None, description="Model name; the default model of the route if absent.")


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = _TEXTS
    student: ModelName | None = Field(None, description="Student name; the default student if absent.")
    teacher: ModelName | None = Field(None, description="Teacher name; the default teacher if absent.")


class CascadeRequest(AnswerFields):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = _TEXTS
    model: ModelName | None = Field(None, description="Student name; the default student if absent.")
    teacher: ModelName | None = Field(None, description="Teacher name; the default teacher if absent.")
    confidence_threshold: _Threshold | None = Field(
        None,
        description="Defer a text whose calibrated student confidence is below this (1 defers every text). "
        "Absent: the server's setting, else the student manifest's operating point, else 0 (never).",
        examples=[0.8],
    )
    coverage_threshold: _Threshold | None = Field(
        None,
        description="Defer a text whose n-gram coverage is below this. Absent: the server's setting, else the "
        "student manifest's operating point, else 0 (never).",
        examples=[0.3],
    )


class TeacherPrediction(BaseModel):
    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(
        description="Probability of every label (of the labels kept, best first, with top_k or threshold)."
    )
    logits: dict[str, float] | None = Field(
        None,
        description="Every label's raw logit (only with raw=true).",
        exclude_if=lambda value: value is None,  # absent, not null: answers without raw stay as they were
    )


class StudentPrediction(TeacherPrediction):
    coverage: float = Field(
        description="Share of the text's n-grams found in the vocabulary (low coverage: less reliable)."
    )
    ngrams_found: int = Field(description="In-vocabulary n-grams of the text, with repeats.")


class StudentClassifyResponse(BaseModel):
    model: str
    results: list[StudentPrediction]


class TeacherClassifyResponse(BaseModel):
    model: str
    results: list[TeacherPrediction]


class CompareItem(BaseModel):
    student: StudentPrediction
    teacher: TeacherPrediction
    agree: bool = Field(description="Both models chose the same label.")


class RouteLatency(BaseModel):
    student: float
    teacher: float


class CompareResponse(BaseModel):
    student_model: str
    teacher_model: str
    results: list[CompareItem]
    agreement_rate: float = Field(description="Share of texts on which the two models agree.")
    latency_ms: RouteLatency = Field(description="Wall time of each route's part (queue + inference).")


class CascadePrediction(StudentPrediction):
    """label, score and scores are the model's that answered; coverage and ngrams_found the student's."""

    answered_by: Literal["student", "teacher"]
    student_confidence: float = Field(
        description="The student's calibrated confidence (max probability at the policy's temperature): what "
        "the confidence threshold is compared with."
    )


class CascadePolicySources(BaseModel):
    temperature: Literal["manifest", "none"] = Field(description="none: no calibration stored, 1.0 used.")
    confidence_threshold: PolicySource = Field(description="none: no layer set it, 0 (never defers) used.")
    coverage_threshold: PolicySource = Field(description="none: no layer set it, 0 (never defers) used.")


class CascadePolicyUsed(BaseModel):
    temperature: float
    confidence_threshold: float
    coverage_threshold: float
    sources: CascadePolicySources = Field(
        description="Which layer set each value: the request, the server settings, the student's manifest, none."
    )
    rule: Literal["router", "thresholds"] = Field(
        "thresholds",
        description="router: the student's learned router decided (its folder has one and neither the request "
        "nor the server set a threshold); thresholds: the confidence and coverage thresholds above.",
    )
    router_threshold: float | None = Field(
        None, description="With the router: texts whose predicted student-teacher disagreement is at least this "
        "went to the teacher.",
    )


class CascadeResponse(BaseModel):
    model: str = Field(description="The student.")
    teacher_model: str
    results: list[CascadePrediction]
    teacher_share: float = Field(description="Share of this request's texts answered by the teacher.")
    policy: CascadePolicyUsed


class CascadeOperatingPoint(BaseModel):
    """The cascade calibrated on dev and stored in the student's manifest (``sd run --step cascade``)."""

    temperature: float
    confidence_threshold: float
    coverage_threshold: float
    dev_acc: float | None = Field(None, description="The cascade's dev accuracy at this point.")
    teacher_share: float | None = Field(None, description="Share of dev texts sent to the teacher at this point.")
    teacher_dev_acc: float | None = None
    tolerance: float | None = Field(None, description="How far below the teacher's dev accuracy it may be.")


class ModelInfo(BaseModel):
    name: str
    kind: Literal["student", "teacher"]
    default: bool = Field(description="Answers requests of its kind that name no model.")
    ready: bool
    labels: list[str]
    vocab_size: int | None = None
    embedding_dim: int | None = None
    hidden_dim: int | None = None
    dtype: str | None = None
    max_length: int | None = None
    device: str
    providers: list[str]
    device_note: str | None = Field(None, description="Why the device differs from the one asked for.")
    max_batch_size: int
    metrics: dict[str, Any]
    created_at: str
    cascade: CascadeOperatingPoint | None = Field(
        None, description="Student only: its stored cascade operating point, the default of /v1/cascade/classify."
    )


class ModelsResponse(BaseModel):
    device_requested: str
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    models: list[str]
