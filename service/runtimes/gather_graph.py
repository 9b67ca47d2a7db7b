"""The two-node ONNX graph ``out = Cast(Gather(table, rows, axis=0), to=float32)`` as model bytes.

Why a graph at all: onnxruntime's gather with its vectorised cast reads float16 rows several times
faster than numpy converts them (service/runtimes/student.py). Why bytes written here rather than
``onnx.helper``: the serving side has onnxruntime but not the ``onnx`` package (the serving image
stays small), and the graph depends on the shard dtype only, so it is not worth a file in every model
folder (which would change the model format and leave existing exports without it).
tests/unit/test_bench_speedups.py checks these bytes against ``onnx.helper``'s serialisation of the
same graph, so the hand-written encoding cannot drift from the real one.
"""

from __future__ import annotations

FLOAT, INT64, FLOAT16 = 1, 7, 10  # onnx.TensorProto element types


def _field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: a varint for an int, length-delimited bytes for a str or bytes."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def gather_cast_model(elem_type: int = FLOAT16) -> bytes:
    """ONNX model bytes: ``out = Cast(Gather(table, rows, axis=0), to=float32)``.

    ``table`` [rows, dim] of ONNX type ``elem_type``, ``rows`` [n] int64, ``out`` [n, dim] float32;
    opset 18, IR version 8. Field numbers are those of onnx.proto (ModelProto, GraphProto, NodeProto,
    AttributeProto, ValueInfoProto, TypeProto).
    """
    f = _field

    def value_info(name: str, elem: int, dims: list[str]) -> bytes:
        shape = b"".join(f(1, f(2, d)) for d in dims)  # TensorShapeProto.dim[].dim_param
        return f(1, name) + f(2, f(1, f(1, elem) + f(2, shape)))  # name, type.tensor_type{elem_type, shape}

    def node(inputs: list[str], output: str, op: str, attribute: str, value: int) -> bytes:
        attr = f(1, attribute) + f(3, value) + f(20, 2)  # AttributeProto name, i, type = INT
        return b"".join(f(1, i) for i in inputs) + f(2, output) + f(4, op) + f(5, attr)

    graph = (
        f(1, node(["table", "rows"], "gathered", "Gather", "axis", 0))
        + f(1, node(["gathered"], "out", "Cast", "to", FLOAT))
        + f(2, "gather_rows")
        + f(11, value_info("table", elem_type, ["vocab", "dim"]))
        + f(11, value_info("rows", INT64, ["n"]))
        + f(12, value_info("out", FLOAT, ["n", "dim"]))
    )
    return f(1, 8) + f(7, graph) + f(8, f(1, "") + f(2, 18))
