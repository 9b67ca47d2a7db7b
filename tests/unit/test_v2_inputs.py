"""Open Inference Protocol inputs: a BYTES tensor named "text", flat or nested, checked for shape."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.api.routes.v2 import texts_of
from service.api.v2_schemas import RequestInput
from service.errors import InvalidInput

GOOD: dict[str, Any] = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a b", "c d"]}


def tensor(**overrides: Any) -> RequestInput:
    return RequestInput(**{**GOOD, **overrides})


def test_flat_and_nested_data_give_the_same_texts() -> None:
    assert texts_of(tensor()) == ["a b", "c d"]
    assert texts_of(tensor(shape=[2, 1], data=[["a b"], ["c d"]])) == ["a b", "c d"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": "INPUT0"}, "name"),
        ({"datatype": "FP32"}, "datatype"),
        ({"shape": [0], "data": []}, "shape"),
        ({"shape": [-1]}, "shape"),
        ({"shape": [1, 1, 1]}, "shape"),
        ({"data": []}, "data"),
    ],
)
def test_the_schema_refuses_other_names_types_and_shapes(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        tensor(**overrides)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"shape": [3]}, "holds 3 elements"),
        ({"shape": [1, 2]}, r"\[n\] or \[n, 1\]"),
        ({"data": ["a", 3]}, r"data\[1\] must be a string"),
        ({"data": ["a", "  "]}, "empty"),
        ({"shape": [2, 1], "data": [["a"], [["b"]]]}, "must be a string"),
    ],
)
def test_malformed_tensors_are_refused_naming_the_problem(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        texts_of(tensor(**overrides))
