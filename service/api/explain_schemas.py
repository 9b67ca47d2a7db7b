"""Request and response bodies of ``POST /v1/explain`` (kept beside, not inside, the v1 schemas)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from service.api.schemas import _TEXTS, ModelName, Text
from service.runtimes.explain import MAX_TOP_N


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Text] = _TEXTS
    model: ModelName | None = Field(None, description="Student name; the default student if absent. "
                                    "Explanations are for students only (a teacher's name is 422).")
    top_n: StrictInt = Field(10, ge=1, le=MAX_TOP_N, description="N-grams returned per text, by effect.")


class NgramEffect(BaseModel):
    ngram: str = Field(description="The n-gram as the featurizer sees it: lowercased tokens joined by spaces.")
    count: int = Field(description="Its occurrences in the text (all are left out together).")
    spans: list[tuple[int, int]] = Field(
        description="[start, end) character offsets of each occurrence in the text as sent (Python str "
        "indices, i.e. Unicode code points)."
    )
    effect: float = Field(
        description="Its effect on the predicted label: p(label | text) - p(label | text without it). "
        "Positive: it pushed the text towards the label."
    )
    deltas: dict[str, float] = Field(description="The same difference for every label.")


class TextExplanation(BaseModel):
    label: str = Field(description="The most probable label (as /v1/classify answers).")
    score: float = Field(description="Its probability.")
    scores: dict[str, float] = Field(description="Probability of every label.")
    coverage: float = Field(description="Share of the text's n-grams found in the vocabulary.")
    ngrams_found: int = Field(description="In-vocabulary n-grams of the text, with repeats.")
    distinct_ngrams: int = Field(description="Distinct in-vocabulary n-grams, each of which was left out once; for a "
                                 "subword model, each unknown word's subword group too.")
    ngrams: list[NgramEffect] = Field(
        description="The top_n n-grams by the size of their effect on the predicted label, largest first."
    )


class ExplainResponse(BaseModel):
    model: str
    results: list[TextExplanation]
