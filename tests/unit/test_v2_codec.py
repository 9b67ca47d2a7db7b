"""The binary tensor data extension's encoding: BYTES as 4-byte little-endian length + bytes, the JSON
header split by Inference-Header-Content-Length, binary outputs when asked."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError

from service.api.v2_codec import (
    Tensor,
    decode_bytes_elements,
    decompress,
    encode_bytes_elements,
    encode_response,
    parse_infer_body,
    split_binary,
    texts_from,
)
from service.api.v2_schemas import InferenceRequest
from service.errors import InvalidInput, InvalidJSON, PayloadTooLarge


def test_bytes_elements_round_trip_with_little_endian_lengths() -> None:
    items = [b"a film", b"", "naïve — 🎬".encode()]
    raw = encode_bytes_elements(items)
    assert raw[:4] == struct.pack("<I", 6) and raw[4:10] == b"a film"
    assert decode_bytes_elements(raw, 3) == items


@pytest.mark.parametrize(
    ("raw", "count", "fragment"),
    [(b"\x05\x00\x00", 1, "cut off"), (b"\x05\x00\x00\x00abc", 1, "says 5 bytes"),
     (encode_bytes_elements([b"a", b"b"]), 3, "has 2")],
)
def test_malformed_bytes_elements_are_refused(raw: bytes, count: int, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=fragment):
        decode_bytes_elements(raw, count)


def test_header_and_binary_inputs_are_split_as_declared() -> None:
    texts = encode_bytes_elements([b"good", b"bad"])
    head = json.dumps({"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(texts)}}]}).encode()
    request, rest = parse_infer_body(head + texts, str(len(head)))
    (raw,) = split_binary(request.inputs, rest)
    assert texts_from([2], None, raw) == ["good", "bad"]
    with pytest.raises(InvalidInput, match="bytes of binary data after"):
        split_binary(request.inputs, rest + b"x")
    with pytest.raises(InvalidInput, match="Inference-Header-Content-Length"):
        parse_infer_body(head, str(len(head) + 1))


@pytest.mark.parametrize("body", [b"{", b"\xff", b"[" * 50_000])
def test_unparsable_json_is_invalid_json(body: bytes) -> None:
    with pytest.raises(InvalidJSON):
        parse_infer_body(body, None)


def test_schema_errors_are_reported_like_fastapi_validation() -> None:
    with pytest.raises(RequestValidationError):
        parse_infer_body(b'{"inputs": []}', None)


def test_texts_must_be_valid_unicode() -> None:
    with pytest.raises(InvalidInput, match="surrogate"):
        texts_from([1], ["\ud800"], None)
    with pytest.raises(InvalidInput, match="UTF-8"):
        texts_from([1], None, encode_bytes_elements([b"\xff\xfe"]))


def test_outputs_go_binary_per_output_or_for_the_request() -> None:
    probs = np.array([[0.25, 0.75]], dtype=np.float32)
    tensors = [Tensor("probabilities", "FP32", [1, 2], probs), Tensor("label", "BYTES", [1], ["positive"])]
    request = InferenceRequest.model_validate({
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "probabilities"}, {"name": "label", "parameters": {"binary_data": False}}],
    })
    body, headers = encode_response({"model_name": "m"}, tensors, request)
    split = int(headers["inference-header-content-length"])
    head = json.loads(body[:split])
    assert headers["content-type"] == "application/octet-stream"
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 8} and "data" not in head["outputs"][0]
    assert head["outputs"][1]["data"] == ["positive"]
    assert np.frombuffer(body[split:], "<f4").tolist() == [0.25, 0.75]


def test_json_only_when_nothing_asks_for_binary() -> None:
    request = InferenceRequest.model_validate(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]})
    body, headers = encode_response({"model_name": "m"}, [Tensor("label", "BYTES", [1], ["a"])], request)
    assert headers == {"content-type": "application/json"}
    assert json.loads(body)["outputs"] == [{"name": "label", "shape": [1], "datatype": "BYTES", "data": ["a"]}]


def test_compressed_bodies_inflate_within_the_limit() -> None:
    body = b'{"x": 1}'
    assert decompress(gzip.compress(body), "gzip", 100) == body
    assert decompress(zlib.compress(body), "deflate", 100) == body
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(b"a" * 10_000), "gzip", 1000)
    with pytest.raises(InvalidInput, match="Content-Encoding"):
        decompress(body, "br", 100)
