"""Error responses declared in the OpenAPI schema (all share ``errors.ErrorBody``)."""

from __future__ import annotations

from typing import Any

from service.errors import ErrorBody, V2ErrorBody

_E: dict[str, Any] = {"model": ErrorBody}

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**_E, "description": "Missing or wrong API key (when the server has one)"},
}
METADATA_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {**_E, "description": "Unknown model"},
    503: {**_E, "description": "Models not loaded yet"},
}
INFERENCE_ERRORS: dict[int | str, dict[str, Any]] = {
    **METADATA_ERRORS,
    400: {**_E, "description": "Body is not valid JSON"},
    413: {**_E, "description": "Body, text count or a text over the server's limits"},
    422: {**_E, "description": "Invalid input (empty list, empty or non-string text, unknown field...)"},
    503: {**_E, "description": "Queue full (with Retry-After) or models not loaded yet"},
    504: {**_E, "description": "Not answered within the request timeout"},
}

CASCADE_ERRORS: dict[int | str, dict[str, Any]] = {
    **INFERENCE_ERRORS,
    404: {**_E, "description": "Unknown model, or no teacher loaded (teacher_unavailable)"},
}

# The same statuses under /v2, with the Open Inference Protocol's error body ``{"error": "<message>"}``.
_V2: dict[str, Any] = {"model": V2ErrorBody}


def _as_v2(errors: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    return {status: {**spec, **_V2} for status, spec in errors.items()}


V2_METADATA_ERRORS = _as_v2(METADATA_ERRORS)
V2_INFERENCE_ERRORS = _as_v2({
    **INFERENCE_ERRORS,
    404: {"description": "Unknown model or version; or the cascade asked and no teacher loaded"},
})
V2_REPOSITORY_ERRORS = _as_v2({
    **AUTH_ERRORS,
    400: {"description": "The model cannot be loaded (the message names the damaged file)"},
    404: {"description": "No such model in the repository, or no repository"},
    422: {"description": "Invalid request body"},
})
