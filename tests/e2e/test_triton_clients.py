"""Triton's own clients, ``tritonclient.http`` and ``tritonclient.grpc``, against a real ``python -m service``
process serving HTTP and gRPC on loopback ports, with an API key read from a file.

One server for the module (a tiny student, built in seconds): readiness, metadata, inference with JSON
and with binary BYTES, the errors the clients show, auth, limits, and the same answers on both protocols
as on /v1.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from training.data.task_data import TaskData
from training.testing.quick import make_tiny_student

pytestmark = pytest.mark.e2e

tritonhttp = pytest.importorskip("tritonclient.http")
tritongrpc = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-secret-key"


def auth() -> dict[str, str]:
    """The key's header, a new dict each call: tritonclient adds its own headers to the dict it is given."""
    return {"authorization": f"Bearer {KEY}"}


TEXTS = ["a gripping, beautifully acted film", "dull, lifeless and far too long", "naïve but charming 🎬"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    def __init__(self, http_port: int, grpc_port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.http = f"127.0.0.1:{http_port}"
        self.grpc = f"127.0.0.1:{grpc_port}"
        self.process = process
        self.log = log


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, mr_small: TaskData) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("triton-e2e")
    student = make_tiny_student(root / "mr-tiny", mr_small.train.texts, mr_small.train.labels, mr_small.label_names)
    key_file = root / "api-key"
    key_file.write_text(KEY + "\n")
    http_port, grpc_port = free_port(), free_port()
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--student", str(student), "--host", "127.0.0.1",
             "--port", str(http_port), "--grpc-port", str(grpc_port), "--api-key-file", str(key_file),
             "--threads", "1", "--max-texts-per-request", "8"],
            cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    served = Served(http_port, grpc_port, process, log)
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        try:
            if httpx.get(f"http://{served.http}/readyz", timeout=1.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # poll interval of a health check
    yield served
    process.kill()
    process.wait(10)


def v1_results(server: Served, texts: list[str]) -> list[dict[str, object]]:
    r = httpx.post(f"http://{server.http}/v1/classify", json={"texts": texts}, headers=auth(), timeout=30)
    assert r.status_code == 200, r.text
    results: list[dict[str, object]] = r.json()["results"]
    return results


def expected_probabilities(results: list[dict[str, object]]) -> np.ndarray:
    return np.array([[r["scores"]["negative"], r["scores"]["positive"]] for r in results])  # type: ignore[index]


# --- HTTP --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_infers_with_binary_and_json_tensors(server: Served, binary: bool) -> None:
    client = tritonhttp.InferenceServerClient(server.http)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mr-tiny", headers=auth())
    assert client.is_model_ready("mr-tiny", "1", headers=auth())
    meta = client.get_model_metadata("mr-tiny", headers=auth())
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert "binary_tensor_data" in client.get_server_metadata(headers=auth())["extensions"]

    text = tritonhttp.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_), binary_data=binary)
    outputs = [tritonhttp.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "label")]
    result = client.infer("mr-tiny", [text], outputs=outputs, request_id="r-1", headers=auth())
    v1 = v1_results(server, TEXTS)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected_probabilities(v1), atol=1e-6)
    # BYTES come back as bytes from binary data, as str from JSON
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")]
    assert labels == [r["label"] for r in v1]
    assert result.get_response()["id"] == "r-1"
    # No outputs named: tritonclient asks for every output in binary (parameters.binary_data_output).
    every = client.infer("mr-tiny", [text], model_version="1", headers=auth())
    assert every.as_numpy("coverage").shape == (len(TEXTS),)
    client.close()


def test_tritonclient_http_shows_the_servers_errors(server: Served) -> None:
    client = tritonhttp.InferenceServerClient(server.http)
    text = tritonhttp.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"a film"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="no model named 'nope'") as unknown:
        client.infer("nope", [text], headers=auth())
    assert unknown.value.status() == "404"
    wide = tritonhttp.InferInput("text", [1, 2], "BYTES")
    wide.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"\[n\] or \[n, 1\]") as shape:
        client.infer("mr-tiny", [wide], headers=auth())
    assert shape.value.status() == "422"
    with pytest.raises(InferenceServerException, match=r"(?i)api key"):
        client.infer("mr-tiny", [text])
    many = tritonhttp.InferInput("text", [9], "BYTES")
    many.set_data_from_numpy(np.array([b"a film"] * 9, dtype=np.object_))
    with pytest.raises(InferenceServerException, match="max_texts_per_request"):
        client.infer("mr-tiny", [many], headers=auth())
    client.close()


# --- gRPC --------------------------------------------------------------------------------------------


def grpc_input(texts: list[str]) -> object:
    text = tritongrpc.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return text


def test_tritonclient_grpc_health_metadata_and_infer(server: Served) -> None:
    client = tritongrpc.InferenceServerClient(server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mr-tiny", headers=auth()) and client.is_model_ready("mr-tiny", "1", headers=auth())
    meta = client.get_model_metadata("mr-tiny", headers=auth(), as_json=True)
    assert meta["versions"] == ["1"] and meta["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": ["-1"]}
    assert "binary_tensor_data" in client.get_server_metadata(headers=auth(), as_json=True)["extensions"]
    # raw_input_contents: what tritonclient sends by default
    result = client.infer("mr-tiny", [grpc_input(TEXTS)], request_id="g-1", headers=auth())
    v1 = v1_results(server, TEXTS)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected_probabilities(v1), atol=1e-6)
    assert [b.decode() for b in result.as_numpy("label")] == [r["label"] for r in v1]
    assert result.get_response().id == "g-1" and result.get_response().model_version == "1"
    client.close()


def test_grpc_contents_and_raw_contents_give_the_same_answer(server: Served) -> None:
    import grpc

    from service.grpc_api import kserve_pb2 as pb
    from service.grpc_api import kserve_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="mr-tiny")
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(TEXTS)])
        tensor.contents.bytes_contents.extend(t.encode() for t in TEXTS)
        answer = stub.ModelInfer(request, metadata=tuple(auth().items()))
    outputs = {o.name: o for o in answer.outputs}
    v1 = v1_results(server, TEXTS)
    np.testing.assert_allclose(np.reshape(outputs["probabilities"].contents.fp32_contents, (len(TEXTS), 2)),
                               expected_probabilities(v1), atol=1e-6)
    assert [b.decode() for b in outputs["label"].contents.bytes_contents] == [r["label"] for r in v1]
    assert not answer.raw_output_contents  # answered in the form it was asked


def test_tritonclient_grpc_errors_auth_and_limits_map_to_status_codes(server: Served) -> None:
    client = tritongrpc.InferenceServerClient(server.grpc)
    with pytest.raises(InferenceServerException, match="no model named 'nope'") as unknown:
        client.infer("nope", [grpc_input(["a film"])], headers=auth())
    assert unknown.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match=r"(?i)api key") as no_key:
        client.infer("mr-tiny", [grpc_input(["a film"])])
    assert no_key.value.status() == "StatusCode.UNAUTHENTICATED"
    with pytest.raises(InferenceServerException, match="invalid API key"):
        client.infer("mr-tiny", [grpc_input(["a film"])], headers={"authorization": "Bearer wrong"})
    with pytest.raises(InferenceServerException, match="max_texts_per_request") as many:
        client.infer("mr-tiny", [grpc_input(["a film"] * 9)], headers=auth())
    assert many.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    with pytest.raises(InferenceServerException, match="empty") as blank:
        client.infer("mr-tiny", [grpc_input(["  "])], headers=auth())
    assert blank.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_live()  # health needs no key, as on HTTP
    client.close()


def test_both_clients_see_the_model_repository(server: Served) -> None:
    http = tritonhttp.InferenceServerClient(server.http)
    grpc_client = tritongrpc.InferenceServerClient(server.grpc)
    assert http.get_model_repository_index(headers=auth()) == [
        {"name": "mr-tiny", "version": "1", "state": "READY", "reason": ""}]
    index = grpc_client.get_model_repository_index(headers=auth(), as_json=True)
    assert index["models"] == [{"name": "mr-tiny", "version": "1", "state": "READY"}]
    # Started without --model-repository: models given by path cannot be (un)loaded, and both say why.
    with pytest.raises(InferenceServerException, match="--model-repository"):
        http.load_model("mr-tiny", headers=auth())
    with pytest.raises(InferenceServerException, match="only repository models unload") as grpc_error:
        grpc_client.unload_model("mr-tiny", headers=auth())
    assert grpc_error.value.status() == "StatusCode.NOT_FOUND"
    http.close()
    grpc_client.close()


def test_request_ids_are_echoed_and_logged(server: Served) -> None:
    r = httpx.post(f"http://{server.http}/v1/classify", json={"texts": ["a film"]},
                   headers={**auth(), "x-request-id": "trace-abc-123"}, timeout=30)
    generated = httpx.get(f"http://{server.http}/healthz", timeout=5)
    assert r.headers["x-request-id"] == "trace-abc-123"
    assert len(generated.headers["x-request-id"]) == 32
    deadline = time.monotonic() + 10
    while "[trace-abc-123]" not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, server.log.read_text(errors="replace")
        time.sleep(0.05)  # the log file is written by another process
    line = next(line for line in server.log.read_text().splitlines() if "[trace-abc-123]" in line)
    assert "POST /v1/classify 200 texts=1" in line and "queue_ms=" in line and "inference_ms=" in line
