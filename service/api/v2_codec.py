"""Open Inference Protocol bodies over HTTP: JSON, and Triton's binary tensor data extension.

A request body is JSON, or (with the ``Inference-Header-Content-Length: N`` header) N bytes of JSON
followed by the binary data of the inputs whose ``parameters.binary_data_size`` says how many bytes are
theirs, in input order. A BYTES tensor in binary is its elements one after the other, each a 4-byte
little-endian length and then the bytes; an FP32 tensor is its little-endian floats in row-major order.
Answers go binary the same way for the outputs asked so (``parameters.binary_data_output`` on the
request, or ``parameters.binary_data`` on an output, which wins). The body is parsed whatever the
Content-Type says: Triton's clients send none or ``application/octet-stream``.

Pure functions of bytes and pydantic models; the route and the gRPC servicer share ``texts_from``.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from service.api.schemas import is_valid_unicode
from service.api.v2_schemas import InferenceRequest, RequestInput, ResponseOutput
from service.errors import InvalidInput, InvalidJSON, PayloadTooLarge

HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/octet-stream"


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body under its Content-Encoding (gzip or deflate, as Triton's clients send), bounded by ``limit``
    bytes once inflated, so a small compressed body cannot expand without bound."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")
    inflater = zlib.decompressobj(31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"request body inflates beyond the limit (max_body_bytes) of {limit} bytes")
    return out


def parse_infer_body(body: bytes, header_length: str | None) -> tuple[InferenceRequest, bytes]:
    """The inference request and the binary data after its JSON header (empty without one)."""
    if header_length is None:
        head, rest = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} must be a byte count within the body "
                f"({len(body)} bytes)"
            )
        split = int(header_length)
        head, rest = body[:split], body[split:]
    try:
        obj = json.loads(head)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and bad JSON
        raise InvalidJSON("request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidInput("the request must be a JSON object (Open Inference Protocol inference request)")
    try:
        return InferenceRequest.model_validate(obj), rest
    except ValidationError as exc:  # reported like FastAPI's own validation errors
        raise RequestValidationError(exc.errors()) from None


def _binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput(f"input {tensor.name!r}: parameters.binary_data_size must be a byte count, got {size!r}")
    return size


def split_binary(inputs: list[RequestInput], rest: bytes) -> list[bytes | None]:
    """Each input's binary data (None for one given as JSON ``data``), checked against the body."""
    parts: list[bytes | None] = []
    offset = 0
    for tensor in inputs:
        size = _binary_size(tensor)
        if size is None:
            if tensor.data is None:
                raise InvalidInput(f"input {tensor.name!r} has neither data nor parameters.binary_data_size")
            parts.append(None)
            continue
        if tensor.data is not None:
            raise InvalidInput(f"input {tensor.name!r} has both data and parameters.binary_data_size")
        if offset + size > len(rest):
            raise InvalidInput(
                f"input {tensor.name!r} says {size} bytes of binary data; the body has {len(rest) - offset} left"
            )
        parts.append(rest[offset : offset + size])
        offset += size
    if offset != len(rest):
        raise InvalidInput(f"{len(rest) - offset} bytes of binary data after the last input's")
    return parts


def decode_bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """The ``count`` elements of a BYTES tensor in binary form (4-byte little-endian length, then bytes)."""
    out: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidInput(f"BYTES element {len(out)}: its 4-byte length is cut off")
        size = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(raw):
            raise InvalidInput(f"BYTES element {len(out)} says {size} bytes; only {len(raw) - offset} are left")
        out.append(bytes(view[offset : offset + size]))
        offset += size
    if len(out) != count:
        raise InvalidInput(f"input shape holds {count} elements, the binary data has {len(out)}")
    return out


def encode_bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def _flatten(data: list[Any]) -> list[Any]:
    """Row-major elements of a [n] or [n, 1] tensor given flat or nested one level."""
    flat: list[Any] = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    return flat


def check_text(i: int, text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInput(f"input data[{i}] must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInput(f"input data[{i}] is empty or only whitespace")
    if not is_valid_unicode(text):
        raise InvalidInput(f"input data[{i}] holds a lone UTF-16 surrogate: not valid Unicode")
    return text


def texts_from(shape: list[int], data: list[Any] | None, raw: bytes | None) -> list[str]:
    """The texts of a [n] or [n, 1] BYTES tensor, from JSON data or binary; InvalidInput naming the problem."""
    if len(shape) == 2 and shape[1] != 1:
        raise InvalidInput(f"input shape must be [n] or [n, 1], got {shape}")
    if len(shape) not in (1, 2) or any(d < 1 for d in shape):
        raise InvalidInput(f"input shape must be [n] or [n, 1] with n >= 1, got {shape}")
    count = math.prod(shape)
    if raw is not None:
        items: list[Any] = []
        for i, element in enumerate(decode_bytes_elements(raw, count)):
            try:
                items.append(element.decode("utf-8"))
            except UnicodeDecodeError:
                raise InvalidInput(f"input element {i} is not valid UTF-8") from None
    else:
        items = _flatten(data or [])
        if count != len(items):
            raise InvalidInput(f"input shape {shape} holds {count} elements, data has {len(items)}")
    return [check_text(i, text) for i, text in enumerate(items)]


def texts_of(tensor: RequestInput, raw: bytes | None = None) -> list[str]:
    """The texts of the request's input tensor (name and datatype checked by its schema)."""
    return texts_from(list(tensor.shape), tensor.data, raw)


@dataclass(frozen=True)
class Tensor:
    """One output: FP32 (a numpy array) or BYTES (strings)."""

    name: str
    datatype: str
    shape: list[int]
    values: np.ndarray | list[str]

    def json_data(self) -> list[float] | list[str]:
        if isinstance(self.values, np.ndarray):
            return list(self.values.astype(np.float32).ravel().tolist())
        return list(self.values)

    def raw(self) -> bytes:
        if isinstance(self.values, np.ndarray):
            return self.values.astype("<f4").tobytes()
        return encode_bytes_elements([v.encode("utf-8") for v in self.values])


def wants_binary(request: InferenceRequest, name: str) -> bool:
    """Output ``name`` in binary? Its own ``binary_data`` wins over the request's ``binary_data_output``."""
    for output in request.outputs or []:
        if output.name == name and output.parameters and "binary_data" in output.parameters:
            return output.parameters["binary_data"] is True
    return (request.parameters or {}).get("binary_data_output") is True


def encode_response(
    header: dict[str, Any], tensors: list[Tensor], request: InferenceRequest
) -> tuple[bytes, dict[str, str]]:
    """The response body and its content headers; binary outputs after the JSON header when asked."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in tensors:
        out = ResponseOutput(name=tensor.name, shape=tensor.shape, datatype=tensor.datatype, parameters=None)
        if wants_binary(request, tensor.name):
            blob = tensor.raw()
            blobs.append(blob)
            out.parameters = {"binary_data_size": len(blob)}
        else:
            out.data = tensor.json_data()
        outputs.append(out.model_dump(exclude_none=True))
    head = json.dumps({**header, "outputs": outputs}, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(head))}
