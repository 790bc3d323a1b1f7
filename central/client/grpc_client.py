"""The SDK's gRPC transport: ``Client("grpc://host:port")`` over KServe v2.

Theory of operation: one blocking gRPC channel to a frontend's KServe v2 endpoint
(``baton frontend --grpc-port``), using the protobuf stubs that ship inside
``tritonclient`` (the optional ``grpc`` extra). ``infer`` packs the inputs exactly as the
ZMQ path does (``protocol.arrays``), sends them as ``raw_input_contents`` with the SLO as
the ``slo_ms`` parameter, and unpacks ``raw_output_contents`` with the same checks. A
refusal comes back as a gRPC status with a ``baton-status`` trailing entry naming
Baton's status, so the typed error is the one the ZMQ path raises; a plain gRPC error
(no such entry: a proxy, a non-Baton server) is mapped by its code.

This module is imported only when a ``grpc://`` address is used: ``import
central.client`` never loads grpc.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

from central.protocol import RemoteProtocolError, Status, arrays
from central.protocol.datatypes import KSERVE_OF, WIRE_OF

from .errors import BadRequest, BatonError, Unavailable, error_for
from .request import check_request

__all__ = ["GrpcTransport"]

_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: Status.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: Status.REJECTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Status.REJECTED,
    grpc.StatusCode.DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE: Status.UNAVAILABLE,
    grpc.StatusCode.INTERNAL: Status.FAILED,
    grpc.StatusCode.UNAUTHENTICATED: Status.UNAUTHORIZED,
}


def _error(exc: grpc.RpcError) -> BatonError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    trailing = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
    name = trailing.get("baton-status")
    if isinstance(name, str) and name in Status.__members__:
        return error_for(int(Status[name]), details)
    return error_for(int(_BY_CODE.get(code, Status.UNAVAILABLE)), f"gRPC {code.name}: {details}")


class GrpcTransport:
    """Blocking KServe v2 gRPC calls to one frontend."""

    def __init__(
        self,
        target: str,
        *,
        grace_s: float,
        max_message_bytes: int = 1 << 30,
        token: str | None = None,
    ) -> None:
        opts = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = pbg.GRPCInferenceServiceStub(self._channel)
        self._grace_s = grace_s
        self._metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()

    def infer(
        self, model: str, inputs: Mapping[str, Any], slo_ms: float | None, timeout_s: float | None
    ) -> dict[str, np.ndarray[Any, Any]]:
        metas, buffers = check_request(model, inputs, slo_ms)
        req = pb.ModelInferRequest(model_name=model)
        for (name, dtype, shape), buf in zip(metas, buffers):
            if dtype not in KSERVE_OF:
                raise BadRequest(f"input {name!r}: KServe has no datatype for {dtype}")
            t = req.inputs.add()
            t.name, t.datatype = name, KSERVE_OF[dtype]
            t.shape.extend(shape)
            req.raw_input_contents.append(bytes(buf))
        if slo_ms is not None:
            req.parameters["slo_ms"].double_param = float(slo_ms)
        wait_s = timeout_s if timeout_s is not None else (slo_ms or 1000.0) / 1e3 + self._grace_s
        try:
            resp = self._stub.ModelInfer(req, timeout=wait_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not dict(exc.trailing_metadata() or ()):
                raise Unavailable(f"no answer from the frontend within {wait_s:.1f} s") from None
            raise _error(exc) from None
        out_metas = []
        for o in resp.outputs:
            if o.datatype not in WIRE_OF:
                raise Unavailable(f"output {o.name!r}: unknown datatype {o.datatype!r}")
            out_metas.append((o.name, WIRE_OF[o.datatype], tuple(o.shape)))
        try:
            return arrays.unpack(out_metas, list(resp.raw_output_contents))
        except RemoteProtocolError as exc:
            raise Unavailable(f"malformed outputs: {exc}") from None

    def server_live(self, timeout_s: float = 5.0) -> bool:
        try:
            return bool(self._stub.ServerLive(pb.ServerLiveRequest(), timeout=timeout_s).live)
        except grpc.RpcError:
            return False

    def close(self) -> None:
        self._channel.close()
