"""Error responses declared in the OpenAPI schema (all share ``errors.ErrorBody``)."""

from __future__ import annotations

from typing import Any

from service.errors import ErrorBody

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
    503: {**_E, "description": "Queue full (with Retry-After), models not loaded yet, or no teacher loaded "
          "(teacher_unavailable)"},
}
