"""KServe v2 over gRPC: the ``inference.GRPCInferenceService`` on the frontend's loop.

Theory of operation: a ``grpc.aio`` server whose servicer answers from
``kserve.Gateway``. The protobuf messages are the generated modules that ship inside
``tritonclient`` (``tritonclient.grpc.service_pb2``/``model_config_pb2``), so the wire
is exactly what tritonclient and perf_analyzer speak. Infer inputs arrive either as
``raw_input_contents`` (one buffer per input, in order; tritonclient's default, passed
on untouched) or as typed ``contents``; outputs always go back as
``raw_output_contents``. ``ModelStreamInfer`` answers each request on the stream in
order of completion.

Errors are gRPC status codes: INVALID_ARGUMENT (bad request), NOT_FOUND (unknown
model), UNAVAILABLE, RESOURCE_EXHAUSTED (overloaded), DEADLINE_EXCEEDED, INTERNAL
(execution failed), each with the reason as details, plus a ``baton-status`` trailing
metadata entry naming Baton's status so the SDK's gRPC client can raise the same typed
error as over ZMQ. Calls Baton does not implement (repository control, shared memory,
trace and log settings) answer UNIMPLEMENTED, as the generated base class does.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from central.frontend.kserve import (
    Gateway,
    KServeError,
    check_shape,
    slo_ns_from,
    to_kserve_dtype,
    to_numpy_dtype,
)
from central.protocol import Status
from central.protocol.arrays import encode_bytes

__all__ = ["GrpcServer", "GRPC_CODE", "STATUS_KEY"]

log = logging.getLogger("baton.kserve.grpc")

STATUS_KEY = "baton-status"
GRPC_CODE = {
    Status.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Status.REJECTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.FAILED: grpc.StatusCode.INTERNAL,
    Status.UNAUTHORIZED: grpc.StatusCode.UNAUTHENTICATED,
}

# typed contents field per numpy dtype (when a client does not send raw contents)
_CONTENTS = {
    "bool": "bool_contents", "int8": "int_contents", "int16": "int_contents",
    "int32": "int_contents", "int64": "int64_contents", "uint8": "uint_contents",
    "uint16": "uint_contents", "uint32": "uint_contents", "uint64": "uint64_contents",
    "float32": "fp32_contents", "float64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def _code(exc: KServeError) -> grpc.StatusCode:
    return grpc.StatusCode.NOT_FOUND if exc.not_found else GRPC_CODE.get(exc.status, grpc.StatusCode.INTERNAL)


async def _abort(context: grpc.aio.ServicerContext, exc: KServeError) -> None:
    context.set_trailing_metadata(((STATUS_KEY, exc.status.name),))
    await context.abort(_code(exc), exc.message)


def _params(request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, p in request.parameters.items():
        which = p.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(p, which)
    return out


def parse_request(request: pb.ModelInferRequest) -> tuple[tuple[Any, ...], list[Any]]:
    """(metas, buffers) from a ModelInferRequest; KServeError(BAD_REQUEST) if malformed."""
    if not request.inputs:
        raise KServeError(Status.BAD_REQUEST, "a request needs at least one input tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise KServeError(
            Status.BAD_REQUEST, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs"
        )
    metas: list[Any] = []
    buffers: list[Any] = []
    for i, t in enumerate(request.inputs):
        dtype = to_numpy_dtype(t.datatype)
        shape = check_shape(t.name, list(t.shape))
        if raw:
            buffers.append(raw[i])
        else:
            field = _CONTENTS.get(dtype)
            if field is None:
                raise KServeError(
                    Status.BAD_REQUEST, f"input {t.name!r}: {t.datatype} needs raw_input_contents"
                )
            values = list(getattr(t.contents, field))
            if len(values) != math.prod(shape):
                raise KServeError(
                    Status.BAD_REQUEST, f"input {t.name!r}: {len(values)} values for shape {list(shape)}"
                )
            if dtype == "BYTES":
                buffers.append(encode_bytes(np.array(values, dtype=object)))
            else:
                try:
                    buffers.append(np.array(values, dtype=dtype).tobytes())
                except (OverflowError, ValueError) as exc:
                    raise KServeError(Status.BAD_REQUEST, f"input {t.name!r}: {exc}") from None
        metas.append((t.name, dtype, shape))
    return tuple(metas), buffers


def build_response(
    request: pb.ModelInferRequest, metas: tuple[Any, ...], buffers: Any
) -> pb.ModelInferResponse:
    wanted = [o.name for o in request.outputs]
    by_name = {m[0]: (m, b) for m, b in zip(metas, buffers)}
    for name in wanted:
        if name not in by_name:
            raise KServeError(
                Status.BAD_REQUEST, f"unknown output {name!r}; the model gives {sorted(by_name)}"
            )
    chosen = [by_name[n] for n in wanted] if wanted else list(zip(metas, buffers))
    resp = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    for (name, dtype, shape), buf in chosen:
        out = resp.outputs.add()
        out.name, out.datatype = name, to_kserve_dtype(dtype)
        out.shape.extend(shape)
        resp.raw_output_contents.append(bytes(buf))
    return resp


class _Servicer(pbg.GRPCInferenceServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.g = gateway

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.g.live())

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.g.ready())

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.g.model_ready(request.name))

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self.g.server_metadata(), pb.ServerMetadataResponse())

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            self.g.require_model(request.name, request.version)
            doc = self.g.model_metadata(request.name)
        except KServeError as exc:
            await _abort(context, exc)
        return json_format.ParseDict(doc, pb.ModelMetadataResponse())

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            self.g.require_model(request.name, request.version)
            doc = self.g.model_config(request.name)
        except KServeError as exc:
            await _abort(context, exc)
        config = json_format.ParseDict(doc, mc.ModelConfig(), ignore_unknown_fields=True)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        try:
            doc = self.g.statistics(request.name)
        except KServeError as exc:
            await _abort(context, exc)
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        resp = pb.RepositoryIndexResponse()
        for name in sorted(self.g.frontend.models):
            resp.models.add(name=name, version="1", state="READY")
        return resp

    async def _infer_one(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        self.g.require_model(request.model_name, request.model_version)
        metas, buffers = parse_request(request)
        out_metas, out_buffers = await self.g.infer(
            request.model_name, metas, buffers, slo_ns_from(_params(request))
        )
        return build_response(request, out_metas, out_buffers)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            return await self._infer_one(request)
        except KServeError as exc:
            await _abort(context, exc)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        """Each request answered on the stream as it completes; errors in-band."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pending = 0
        done_reading = False
        running: set[asyncio.Future[None]] = set()  # the loop holds tasks only weakly

        async def one(req: Any) -> None:
            try:
                queue.put_nowait(pb.ModelStreamInferResponse(infer_response=await self._infer_one(req)))
            except KServeError as exc:
                queue.put_nowait(pb.ModelStreamInferResponse(error_message=exc.message))

        async def reader() -> None:
            nonlocal pending, done_reading
            async for req in request_iterator:
                pending += 1
                task = asyncio.ensure_future(one(req))
                running.add(task)
                task.add_done_callback(running.discard)
            done_reading = True
            queue.put_nowait(None)

        read_task = asyncio.ensure_future(reader())
        try:
            while not (done_reading and pending == 0):
                item = await queue.get()
                if item is None:
                    continue
                pending -= 1
                yield item
        finally:
            read_task.cancel()
            for task in list(running):
                task.cancel()


_OPEN_METHODS = ("/inference.GRPCInferenceService/ServerLive", "/inference.GRPCInferenceService/ServerReady")


class _TokenCheck(grpc.aio.ServerInterceptor):
    """Refuse calls without ``authorization: Bearer <token>`` (health probes excepted)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if details.method in _OPEN_METHODS:
            return handler
        header = dict(details.invocation_metadata or ()).get("authorization")
        if self.gateway.authorized(header):
            return handler

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            context.set_trailing_metadata(((STATUS_KEY, Status.UNAUTHORIZED.name),))
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "unauthorized: send authorization: Bearer <token>"
            )

        if handler is None:
            return None
        if handler.request_streaming:

            async def deny_stream(it: Any, context: grpc.aio.ServicerContext) -> Any:
                await deny(None, context)

            return grpc.stream_stream_rpc_method_handler(
                deny_stream, handler.request_deserializer, handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            deny, handler.request_deserializer, handler.response_serializer
        )


class GrpcServer:
    """The gRPC endpoint of one frontend."""

    def __init__(self, gateway: Gateway, host: str, port: int, max_message_bytes: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._max = max_message_bytes
        self._server: grpc.aio.Server | None = None

    async def start(self) -> None:
        opts = [
            ("grpc.max_receive_message_length", self._max),
            ("grpc.max_send_message_length", self._max),
            ("grpc.so_reuseport", 0),
        ]
        interceptors = [_TokenCheck(self.gateway)] if self.gateway.frontend.config.token else []
        self._server = grpc.aio.server(options=opts, interceptors=interceptors)
        pbg.add_GRPCInferenceServiceServicer_to_server(_Servicer(self.gateway), self._server)
        port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        if port == 0:
            raise OSError(f"could not bind gRPC to {self.host}:{self.port}")
        self.port = port
        await self._server.start()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0.5)
