"""The gRPC server of the Open Inference Protocol, in the HTTP app's process and event loop.

It runs on the same registry and batchers as the HTTP routes (gRPC and HTTP requests batch together),
starts once the models are warmed up and stops before they do. What HTTP enforces holds here too: the
API key (``authorization: Bearer <key>`` metadata; the two health calls are open, as on HTTP), the limits
on texts (and ``max_body_bytes`` as the largest message), and the same errors, mapped to gRPC status
codes by ``GRPC_STATUS``. A client that cancels its call is dropped from its batch, as on HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np
from fastapi import FastAPI

from service.api.deps import AppState, check_limits
from service.api.v2_codec import Tensor, encode_bytes_elements, texts_from
from service.api.v2_infer import EXTENSIONS, SERVER_NAME, SERVER_VERSION, find_model, metadata_of, plan_infer, run_infer
from service.errors import ErrorType, InvalidInput, NotReady, ServiceError, Unauthorized, internal_error
from service.grpc_api import kserve_pb2 as pb
from service.grpc_api import kserve_pb2_grpc as pb_grpc
from service.ops.logging_setup import access_log, request_context
from service.repository.registry import ModelRegistry

logger = logging.getLogger(__name__)

# The one table from the service's error types to gRPC status codes (HTTP's is errors.STATUS).
GRPC_STATUS: dict[ErrorType, grpc.StatusCode] = {
    ErrorType.INVALID_JSON: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorType.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorType.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,  # as gRPC's own message-size limit
    ErrorType.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorType.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorType.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorType.MODEL_LOAD_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorType.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorType.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorType.QUEUE_FULL: grpc.StatusCode.UNAVAILABLE,  # gRPC's "retry later"
    ErrorType.SHUTTING_DOWN: grpc.StatusCode.UNAVAILABLE,
    ErrorType.TEACHER_UNAVAILABLE: grpc.StatusCode.NOT_FOUND,
    ErrorType.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorType.CLIENT_CLOSED: grpc.StatusCode.CANCELLED,
    ErrorType.INFERENCE_FAILED: grpc.StatusCode.INTERNAL,
    ErrorType.INTERNAL: grpc.StatusCode.INTERNAL,
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


def parameter_value(p: Any) -> Any:
    """An InferParameter or ModelRepositoryParameter as a Python value (None when unset)."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def set_parameter(p: pb.InferParameter, value: bool | int | float | str) -> None:
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = value


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each call reads the app's state as it is then (the registry can change by load and unload)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.service
        return state

    def registry(self) -> ModelRegistry:
        registry = self.state.registry
        if registry is None or not registry.ready:
            raise NotReady("models are not loaded and warmed up yet")
        return registry

    def check_key(self, context: Context) -> None:
        key = self.state.settings.api_key
        if key is None:
            return
        sent = dict(context.invocation_metadata() or ()).get("authorization")
        if sent is None:
            raise Unauthorized("missing 'authorization: Bearer <api key>' metadata")
        scheme, _, token = str(sent).partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode("utf-8"), key.get_secret_value().encode("utf-8")
        ):
            raise Unauthorized("invalid API key")

    async def _call(
        self, method: str, context: Context, work: Callable[[], Awaitable[Resp]], protected: bool = True
    ) -> Resp:
        """Run one call with its request id, auth, error mapping, metrics and access line."""
        metadata = dict(context.invocation_metadata() or ())
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        with request_context(metadata.get("x-request-id")) as info:
            await context.send_initial_metadata((("x-request-id", info.request_id),))
            try:
                if protected:
                    self.check_key(context)
                return await work()
            except ServiceError as exc:
                code = GRPC_STATUS[exc.type]
                await context.abort(code, exc.message)
            except asyncio.CancelledError:  # the client cancelled: its texts are skipped by the batcher
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    raise
                logger.exception("unhandled error in gRPC %s", method)
                code = grpc.StatusCode.INTERNAL
                await context.abort(code, internal_error().message)
            finally:
                self.state.metrics.grpc_requests.labels(method, code.name).inc()
                access_log(f"grpc {method}", code.name, info, (time.perf_counter() - started) * 1000.0)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    # --- health and metadata -------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        async def work() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._call("ServerLive", context, work, protected=False)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        async def work() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.state.ready)

        return await self._call("ServerReady", context, work, protected=False)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        async def work() -> pb.ModelReadyResponse:
            registry = self.state.registry
            if registry is None:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=find_model(registry, request.name, request.version).ready)

        return await self._call("ModelReady", context, work)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        async def work() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

        return await self._call("ServerMetadata", context, work)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        async def work() -> pb.ModelMetadataResponse:
            meta = metadata_of(find_model(self.registry(), request.name, request.version))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta.name, versions=meta.versions, platform=meta.platform,
                inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
                outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
            )

        return await self._call("ModelMetadata", context, work)

    # --- inference -----------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        return await self._call("ModelInfer", context, lambda: self._infer(request))

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        registry = self.registry()
        settings = self.state.settings
        model = find_model(registry, request.model_name, request.model_version)
        parameters = {k: parameter_value(v) for k, v in request.parameters.items()}
        plan = plan_infer(registry, model, len(request.inputs), [o.name for o in request.outputs], parameters)
        texts = _texts_of(request)
        check_limits(texts, settings)
        outcome = await run_infer(plan, texts, settings, self.state.metrics)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        raw = bool(request.raw_input_contents)  # answer in the form the client used (Triton: always raw)
        for tensor in outcome.tensors:
            out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if raw:
                response.raw_output_contents.append(tensor.raw())
            else:
                _fill_contents(out.contents, tensor)
        return response

    # --- model repository ----------------------------------------------------------------------------

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> pb.RepositoryIndexResponse:
        async def work() -> pb.RepositoryIndexResponse:
            entries = self.app.state.repository.index(ready_only=request.ready)
            index = pb.RepositoryIndexResponse.ModelIndex
            return pb.RepositoryIndexResponse(models=[
                index(name=e.name, version=e.version, state=e.state, reason=e.reason) for e in entries
            ])

        return await self._call("RepositoryIndex", context, work)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> pb.RepositoryModelLoadResponse:
        async def work() -> pb.RepositoryModelLoadResponse:
            await self.app.state.repository.load(request.model_name)
            return pb.RepositoryModelLoadResponse()

        return await self._call("RepositoryModelLoad", context, work)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> pb.RepositoryModelUnloadResponse:
        async def work() -> pb.RepositoryModelUnloadResponse:
            await self.app.state.repository.unload(request.model_name)
            return pb.RepositoryModelUnloadResponse()

        return await self._call("RepositoryModelUnload", context, work)


def _texts_of(request: pb.ModelInferRequest) -> list[str]:
    """The texts of the one BYTES input named ``text``, from ``raw_input_contents`` or ``contents``."""
    (tensor,) = request.inputs  # plan_infer checked there is exactly one
    if tensor.name != "text" or tensor.datatype != "BYTES":
        raise InvalidInput(f"the input must be a BYTES tensor named 'text', got {tensor.datatype} {tensor.name!r}")
    shape = list(tensor.shape)
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise InvalidInput(f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input")
        return texts_from(shape, None, request.raw_input_contents[0])
    # contents: the elements are bytes; as raw data they go through the same checks.
    return texts_from(shape, None, encode_bytes_elements(list(tensor.contents.bytes_contents)))


def _fill_contents(contents: pb.InferTensorContents, tensor: Tensor) -> None:
    if isinstance(tensor.values, np.ndarray):
        contents.fp32_contents.extend(tensor.values.astype(np.float32).ravel().tolist())
    else:
        contents.bytes_contents.extend(v.encode("utf-8") for v in tensor.values)


async def start_grpc(app: FastAPI, host: str, port: int, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server on ``host:port`` (0: any free port); returns it and the port it bound."""
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.so_reuseport", 1),  # --workers N: every worker process serves the same port
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(app), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"gRPC cannot bind {host}:{port}")
    await server.start()
    logger.info("gRPC (Open Inference Protocol) on %s:%d", host, bound)
    return server, bound
