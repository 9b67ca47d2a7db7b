"""The error hierarchy, its one status table and the one body shape."""

from __future__ import annotations

import json

import pytest
from fastapi.exceptions import RequestValidationError

from service import errors
from service.errors import STATUS, ErrorType, ServiceError, describe_validation_error, error_response


def test_every_error_type_has_a_status() -> None:
    assert set(STATUS) == set(ErrorType)


@pytest.mark.parametrize(
    "cls", [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ServiceError)]
)
def test_every_error_class_answers_the_one_body_shape(cls: type[ServiceError]) -> None:
    exc = cls("boom", 2) if cls is errors.QueueFull else cls("boom")
    response = error_response(exc)
    assert response.status_code == STATUS[exc.type]
    assert json.loads(bytes(response.body)) == {"error": {"type": exc.type.value, "message": "boom"}}


def test_queue_full_says_when_to_retry_and_unauthorized_says_how() -> None:
    assert error_response(errors.QueueFull("full", 5)).headers["retry-after"] == "5"
    assert error_response(errors.Unauthorized("no")).headers["www-authenticate"] == "Bearer"


def test_unparsable_json_is_400_and_schema_errors_are_422() -> None:
    bad_json = RequestValidationError([{"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error"}])
    assert describe_validation_error(bad_json).status == 400
    schema = RequestValidationError(
        [{"type": "value_error", "loc": ("body", "texts", 2), "msg": "Value error, text is empty"}]
    )
    exc = describe_validation_error(schema)
    assert exc.status == 422 and exc.message == "texts[2]: text is empty"
