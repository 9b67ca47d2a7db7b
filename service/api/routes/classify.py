"""POST /v1/classify (student), /v1/teacher/classify and /v1/compare."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from service.api.deps import RegistryDep, SettingsDep, check_limits
from service.api.inference import (
    answer_options,
    gather_or_cancel,
    json_answer,
    run_model,
    student_results,
    teacher_results,
    until_client_leaves,
)
from service.api.responses import INFERENCE_ERRORS
from service.api.schemas import (
    ClassifyRequest,
    CompareItem,
    CompareRequest,
    CompareResponse,
    RouteLatency,
    StudentClassifyResponse,
    TeacherClassifyResponse,
)
from service.errors import InvalidInput

router = APIRouter(prefix="/v1", tags=["v1"], responses=INFERENCE_ERRORS)


@router.post("/classify", response_model=StudentClassifyResponse, summary="Classify texts with the student")
async def classify(
    body: ClassifyRequest, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    check_limits(body.texts, settings)
    model = registry.get("student", body.model)
    timed = await until_client_leaves(request, run_model(model, body.texts))
    results = student_results(timed.predictions, model.labels, answer_options(body))
    return json_answer(StudentClassifyResponse(model=model.name, results=results), timed.queue_ms, timed.inference_ms)


@router.post(
    "/teacher/classify", response_model=TeacherClassifyResponse, summary="Classify texts with the teacher"
)
async def classify_teacher(
    body: ClassifyRequest, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    check_limits(body.texts, settings)
    model = registry.get("teacher", body.model)
    timed = await until_client_leaves(request, run_model(model, body.texts))
    results = teacher_results(timed.predictions, model.labels, answer_options(body))
    return json_answer(TeacherClassifyResponse(model=model.name, results=results), timed.queue_ms, timed.inference_ms)


@router.post("/compare", response_model=CompareResponse, summary="Student and teacher on the same texts")
async def compare(
    body: CompareRequest, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    """Both models run concurrently; the timing headers give the slower leg's queue and inference time."""
    check_limits(body.texts, settings)
    student = registry.get("student", body.student)
    teacher = registry.get("teacher", body.teacher)
    if student.labels != teacher.labels:
        raise InvalidInput(
            f"student {student.name!r} labels {student.labels} differ from teacher {teacher.name!r} "
            f"labels {teacher.labels}; they cannot be compared"
        )
    s, t = await until_client_leaves(
        request, gather_or_cancel(run_model(student, body.texts), run_model(teacher, body.texts))
    )
    items = [
        CompareItem(student=sp, teacher=tp, agree=sp.label == tp.label)
        for sp, tp in zip(student_results(s.predictions, student.labels),
                          teacher_results(t.predictions, teacher.labels), strict=True)
    ]
    compared = CompareResponse(
        student_model=student.name,
        teacher_model=teacher.name,
        results=items,
        agreement_rate=sum(i.agree for i in items) / len(items),
        latency_ms=RouteLatency(student=round(s.wall_ms, 3), teacher=round(t.wall_ms, 3)),
    )
    return json_answer(compared, max(s.queue_ms, t.queue_ms), max(s.inference_ms, t.inference_ms))
