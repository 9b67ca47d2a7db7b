"""POST /v1/cascade/classify: the student answers every text; the texts it is unsure of go on to the teacher.

The rule is ``sdcore.router.defer_texts``, the one the offline evaluation (``training.stages.cascade``) scored:
the student's learned router when its folder has one (``router.json``: defer where the predicted chance
that the student disagrees with the teacher is at least its threshold), else the thresholds: a text is
deferred when the student's calibrated confidence or its n-gram coverage is below a threshold. A
threshold set by the request or the server settings wins over the router; each threshold comes from the
request, else the server settings, else the operating point stored in the student's manifest, else 0
(never defer); the answer says which (``policy.rule``, ``policy.sources``).

Decisions, so clients can rely on them:
- A teacher is required even when a request defers nothing (404 ``teacher_unavailable`` otherwise): whether
  a request works must not depend on which texts it holds.
- The deferred texts go to the teacher's batcher as one request, so they batch with other teacher traffic.
  If that leg fails (queue full, deadline), the whole request fails with its error; it never quietly
  falls back to the student's answers.
- The timing headers add the two legs' queue and inference times: they run one after the other.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Request, Response

from sdcore.cascade import confidence
from sdcore.router import DeferralRule, defer_texts
from service.api.deps import RegistryDep, StateDep, check_limits
from service.api.inference import (
    Timed,
    answer_options,
    json_answer,
    run_model,
    student_results,
    teacher_results,
    until_client_leaves,
)
from service.api.responses import CASCADE_ERRORS
from service.api.schemas import (
    CascadePolicySources,
    CascadePolicyUsed,
    CascadePrediction,
    CascadeRequest,
    CascadeResponse,
)
from service.cascade_policy import Thresholds, resolve_policy
from service.errors import InvalidInput, TeacherUnavailable
from service.repository.registry import ModelRegistry, ServedModel

router = APIRouter(prefix="/v1", tags=["v1"], responses=CASCADE_ERRORS)


@router.post(
    "/cascade/classify",
    response_model=CascadeResponse,
    summary="Classify with the student; defer the texts it is unsure of to the teacher",
)
async def classify_cascade(
    body: CascadeRequest, request: Request, registry: RegistryDep, state: StateDep
) -> Response:
    """Every text is answered by the student unless its calibrated confidence or its n-gram coverage is
    below the threshold; those are answered by the teacher (label and scores), keeping the student's
    coverage. Thresholds: the request's, else the server's `--cascade-*-threshold` settings, else the
    operating point in the student's manifest, else 0 (defer nothing). Needs a loaded teacher (404
    `teacher_unavailable` without one)."""
    settings = state.settings
    check_limits(body.texts, settings)
    student = registry.get("student", body.model)
    teacher = teacher_for(registry, body.teacher, student)
    resolved = resolve_policy(
        student.facts.cascade,
        Thresholds(settings.cascade_confidence_threshold, settings.cascade_coverage_threshold),
        Thresholds(body.confidence_threshold, body.coverage_threshold),
        student.facts.router,
    )
    policy = resolved.policy
    s, t, defer = await until_client_leaves(request, run_cascade(student, teacher, body.texts, resolved.rule))

    deferred = int(defer.sum())
    counter = state.metrics.cascade_texts
    counter.labels(student.name, "student").inc(len(body.texts) - deferred)
    counter.labels(student.name, "teacher").inc(deferred)

    student_confidence = confidence(s.predictions.probabilities, policy.temperature)
    options = answer_options(body)
    teacher_rows = iter(teacher_results(t.predictions, teacher.labels, options) if t else [])
    results = []
    own_rows = student_results(s.predictions, student.labels, options)
    for own, d, conf in zip(own_rows, defer, student_confidence, strict=True):
        answer = next(teacher_rows).model_dump() if d else own.model_dump(exclude={"coverage", "ngrams_found"})
        results.append(CascadePrediction(
            **answer, coverage=own.coverage, ngrams_found=own.ngrams_found,
            answered_by="teacher" if d else "student", student_confidence=float(conf),
        ))
    body_out = CascadeResponse(
        model=student.name,
        teacher_model=teacher.name,
        results=results,
        teacher_share=deferred / len(body.texts),
        policy=CascadePolicyUsed(
            **policy.to_dict(), sources=CascadePolicySources.model_validate(resolved.sources),
            rule=resolved.rule_name, router_threshold=resolved.router.threshold if resolved.router else None,
        ),
    )
    queue_ms = s.queue_ms + (t.queue_ms if t else 0.0)
    return json_answer(body_out, queue_ms, s.inference_ms + (t.inference_ms if t else 0.0))


def teacher_for(registry: ModelRegistry, name: str | None, student: ServedModel) -> ServedModel:
    if name is None and not any(m.kind == "teacher" for m in registry.models):
        raise TeacherUnavailable(
            "the cascade needs a teacher for the texts it defers, and none is loaded (start the server "
            "with --teacher DIR)"
        )
    teacher = registry.get("teacher", name)  # a named teacher that is not loaded: 404
    if student.labels != teacher.labels:
        raise InvalidInput(
            f"student {student.name!r} labels {student.labels} differ from teacher {teacher.name!r} "
            f"labels {teacher.labels}; the teacher cannot answer for the student"
        )
    return teacher


async def run_cascade(
    student: ServedModel, teacher: ServedModel, texts: list[str], rule: DeferralRule
) -> tuple[Timed, Timed | None, np.ndarray]:
    """The student on every text, then the teacher on the deferred ones (None when there are none)."""
    s = await run_model(student, texts)
    defer = defer_texts(rule, s.predictions.student_signals())
    deferred = [text for text, d in zip(texts, defer, strict=True) if d]
    t = await run_model(teacher, deferred) if deferred else None
    return s, t, defer
