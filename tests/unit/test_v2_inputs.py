"""Open Inference Protocol inputs: a BYTES tensor named "text", flat or nested, checked for shape."""

from __future__ import annotations

from typing import Any

import pytest

from service.api.routes.v2 import texts_of
from service.api.v2_schemas import RequestInput
from service.errors import InvalidInput


def tensor(**overrides: Any) -> RequestInput:
    fields: dict[str, Any] = {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a b", "c d"]}
    return RequestInput(**{**fields, **overrides})


def test_flat_and_nested_data_give_the_same_texts() -> None:
    assert texts_of(tensor()) == ["a b", "c d"]
    assert texts_of(tensor(shape=[2, 1], data=[["a b"], ["c d"]])) == ["a b", "c d"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"name": "INPUT0"}, "named 'text'"),
        ({"datatype": "FP32"}, "BYTES"),
        ({"shape": [3]}, "holds 3 elements"),
        ({"shape": [1, 2]}, r"\[n\] or \[n, 1\]"),
        ({"shape": [0], "data": []}, "no texts"),
        ({"data": ["a", 3]}, r"data\[1\] must be a string"),
        ({"data": ["a", "  "]}, "empty"),
        ({"shape": [2, 1], "data": [["a"], [["b"]]]}, "must be a string"),
    ],
)
def test_malformed_tensors_are_refused_naming_the_problem(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        texts_of(tensor(**overrides))
