"""KServe v2 (Open Inference Protocol) on the frontend: what HTTP and gRPC share.

Theory of operation: the HTTP (``kserve_http``) and gRPC (``kserve_grpc``) servers run
on the frontend's own event loop and hand each inference request to
``Frontend.submit`` as if it were a ZMQ client: one request, its tensors as Baton
``TensorMeta`` descriptions plus raw buffers, and a callback for the one terminal
``Reply``. Everything after that (metadata to the scheduler, payloads to the worker,
deadlines, the sweep) is the ZMQ path's, so the two protocols cannot drift apart; the
ZMQ path stays the fast one (no JSON, no protobuf).

This module holds the parts both transports need: the datatype names (KServe's
``FP32``/``BYTES``..., Triton's ``TYPE_FP32``/``TYPE_STRING`` in model configs, numpy's
``float32`` on Baton's wire), decoding of JSON tensor data, the metadata and model
config documents, the SLO request parameter, and the mapping of Baton's terminal
statuses to HTTP codes and gRPC status codes. A Baton request is one KServe request:
batching happens server-side across requests, so models report ``max_batch_size`` 0
(the client's shapes are the model's shapes) and the scheduler forms the batches.

Request parameters understood: ``slo_ms`` (a number: this request's latency target;
otherwise the frontend's per-model default). Unknown parameters are ignored, as the
specification allows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from central.plumbing.security import token_ok
from central.protocol import Reply, Status
from central.protocol.arrays import ALLOWED_DTYPES, decode_bytes, encode_bytes
from central.protocol.datatypes import KSERVE_OF, TRITON_CONFIG_OF, WIRE_OF


class _Config(Protocol):
    @property
    def token(self) -> str | None: ...  # read-only: the frontend's config is frozen


class Serving(Protocol):
    """What the gateway needs of the frontend (``central.frontend.server.Frontend``),
    so that this module does not import the server that imports it."""

    @property
    def config(self) -> _Config: ...

    @property
    def ready(self) -> bool: ...

    @property
    def models(self) -> frozenset[str]: ...

    def model_signature(self, model: str) -> Any: ...

    def submit(
        self,
        model: str,
        metas: tuple[Any, ...],
        buffers: list[Any],
        slo_ns: int,
        answer: Callable[[Reply, Sequence[Any]], None],
    ) -> None: ...


__all__ = [
    "KServeError",
    "Gateway",
    "Serving",
    "to_kserve_dtype",
    "to_numpy_dtype",
    "json_tensor",
    "json_data",
    "HTTP_STATUS",
    "SERVER_NAME",
]

SERVER_NAME = "baton"
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")


# Baton status -> HTTP status code of the error response ({"error": "..."}).
HTTP_STATUS = {
    Status.BAD_REQUEST: 400,
    Status.REJECTED: 503,  # overloaded (unknown models are refused earlier, with 404)
    Status.DEADLINE_EXCEEDED: 504,
    Status.UNAVAILABLE: 503,
    Status.FAILED: 500,
    Status.UNAUTHORIZED: 401,
}


class KServeError(Exception):
    """A request refused or failed: ``status`` (Baton's) says which, ``message`` why."""

    def __init__(self, status: Status, message: str, *, not_found: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.not_found = not_found  # unknown model: HTTP 404, gRPC NOT_FOUND

    @property
    def http_status(self) -> int:
        return 404 if self.not_found else HTTP_STATUS.get(self.status, 500)


def to_kserve_dtype(dtype: str) -> str:
    """Baton's wire dtype (numpy name or ``BYTES``) -> KServe datatype."""
    try:
        return KSERVE_OF[dtype]
    except KeyError:
        raise KServeError(Status.FAILED, f"no KServe datatype for {dtype!r}") from None


def to_numpy_dtype(datatype: object) -> str:
    """KServe datatype -> Baton's wire dtype; ``KServeError`` (BAD_REQUEST) if unknown."""
    if not isinstance(datatype, str) or datatype not in WIRE_OF:
        known = ", ".join(sorted(WIRE_OF))
        raise KServeError(Status.BAD_REQUEST, f"unsupported datatype {datatype!r}; use one of {known}")
    dtype = WIRE_OF[datatype]
    assert dtype == "BYTES" or dtype in ALLOWED_DTYPES
    return dtype


def check_shape(name: str, shape: object) -> tuple[int, ...]:
    """A request tensor's shape as a tuple of non-negative ints, or BAD_REQUEST."""
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise KServeError(
            Status.BAD_REQUEST, f"input {name!r}: shape must be a list of non-negative ints, got {shape!r}"
        )
    return tuple(shape)


def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative: a deeply nested body must not hit the recursion limit
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def json_tensor(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> bytes:
    """The raw buffer for a tensor given as JSON ``data`` (nested or flat lists)."""
    dtype = to_numpy_dtype(datatype)
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise KServeError(Status.BAD_REQUEST, f"input {name!r}: {len(flat)} values for shape {list(shape)}")
    if dtype == "BYTES":
        items = []
        for v in flat:
            if isinstance(v, str):
                items.append(v.encode())
            else:
                raise KServeError(Status.BAD_REQUEST, f"input {name!r}: BYTES data must be strings in JSON")
        return encode_bytes(np.array(items, dtype=object))
    if not all(isinstance(v, (int, float, bool)) for v in flat):
        raise KServeError(Status.BAD_REQUEST, f"input {name!r}: {datatype} data must be numbers")
    try:
        arr = np.array(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise KServeError(Status.BAD_REQUEST, f"input {name!r}: {exc}") from None
    return arr.tobytes()


def json_data(dtype: str, shape: Sequence[int], buf: Any) -> list[Any]:
    """A response tensor's flat JSON ``data`` from its raw buffer."""
    if dtype == "BYTES":
        return [b.decode("utf-8", "replace") for b in decode_bytes(buf, math.prod(shape))]
    values: list[Any] = np.frombuffer(buf, dtype=dtype).tolist()
    return values


def slo_ns_from(parameters: dict[str, Any]) -> int:
    """The ``slo_ms`` request parameter in ns (0: the frontend's default)."""
    slo = parameters.get("slo_ms")
    if slo is None:
        return 0
    if isinstance(slo, bool) or not isinstance(slo, (int, float)) or not (0 < slo < 3.6e6):
        raise KServeError(
            Status.BAD_REQUEST, f"parameter slo_ms must be a number of ms in (0, 3600000), got {slo!r}"
        )
    return int(slo * 1e6)


class Gateway:
    """The frontend as KServe sees it: health, metadata, config, statistics, infer."""

    def __init__(self, frontend: Serving, version: str) -> None:
        self.frontend = frontend
        self.version = version
        self.stats: dict[str, dict[str, int]] = {}  # model -> success/fail counts and ns

    # ---------------------------------------------------------------- health

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` value carries the frontend's token (if it has one)."""
        token = self.frontend.config.token
        if token is None:
            return True
        prefix = "Bearer "
        given = header[len(prefix) :] if isinstance(header, str) and header.startswith(prefix) else None
        return token_ok(token, given)

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.frontend.ready

    def model_ready(self, model: str) -> bool:
        return model in self.frontend.models

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": self.version, "extensions": list(EXTENSIONS)}

    # -------------------------------------------------------------- metadata

    def require_model(self, model: str, version: str = "") -> None:
        if model not in self.frontend.models:
            served = ", ".join(sorted(self.frontend.models)) or "none"
            raise KServeError(Status.REJECTED, f"unknown model {model!r}; served: {served}", not_found=True)
        if version not in ("", "1"):
            raise KServeError(
                Status.REJECTED, f"model {model!r} has only version 1, not {version!r}", not_found=True
            )

    def _signature(self, model: str) -> tuple[Any, Any, Any]:
        sig = self.frontend.model_signature(model)
        if sig is None:  # no worker has described it yet (a worker that is still starting)
            return 0, (), ()
        return sig[1], sig[2], sig[3]

    def model_metadata(self, model: str) -> dict[str, Any]:
        self.require_model(model)
        _, inputs, outputs = self._signature(model)
        return {
            "name": model,
            "versions": ["1"],
            "platform": SERVER_NAME,
            "inputs": [{"name": n, "datatype": to_kserve_dtype(d), "shape": list(s)} for n, d, s in inputs],
            "outputs": [{"name": n, "datatype": to_kserve_dtype(d), "shape": list(s)} for n, d, s in outputs],
        }

    def model_config(self, model: str) -> dict[str, Any]:
        """Triton's model configuration document (what perf_analyzer reads)."""
        self.require_model(model)
        _, inputs, outputs = self._signature(model)

        def triton(dtype: str) -> str:
            to_kserve_dtype(dtype)  # refuses a dtype KServe cannot name
            return TRITON_CONFIG_OF[dtype]

        return {
            "name": model,
            "platform": SERVER_NAME,
            "backend": SERVER_NAME,
            # Baton batches across requests on the server: each request is one sample.
            "max_batch_size": 0,
            "version_policy": {"latest": {"num_versions": 1}},
            "input": [{"name": n, "data_type": triton(d), "dims": list(s)} for n, d, s in inputs],
            "output": [{"name": n, "data_type": triton(d), "dims": list(s)} for n, d, s in outputs],
        }

    def statistics(self, model: str) -> dict[str, Any]:
        """Per-model success/fail counts and total request time (Triton's stats shape)."""
        if model:
            self.require_model(model)
        names = [model] if model else sorted(self.frontend.models)
        out = []
        for name in names:
            s = self.stats.get(name, {})
            ok, fail = s.get("ok", 0), s.get("fail", 0)
            out.append({
                "name": name, "version": "1", "last_inference": s.get("last_ms", 0),
                "inference_count": ok, "execution_count": ok,
                "inference_stats": {
                    "success": {"count": ok, "ns": s.get("ok_ns", 0)},
                    "fail": {"count": fail, "ns": s.get("fail_ns", 0)},
                },
            })  # fmt: skip
        return {"model_stats": out}

    # ----------------------------------------------------------------- infer

    async def infer(
        self, model: str, metas: tuple[Any, ...], buffers: list[Any], slo_ns: int
    ) -> tuple[tuple[Any, ...], Sequence[Any]]:
        """One request through the frontend; its output metas and buffers, or KServeError."""
        self.require_model(model)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Reply, Sequence[Any]]] = loop.create_future()
        start = loop.time()

        def answer(reply: Reply, out: Sequence[Any]) -> None:
            if not fut.done():
                fut.set_result((reply, out))

        self.frontend.submit(model, metas, buffers, slo_ns, answer)
        reply, out = await fut
        s = self.stats.setdefault(model, {})
        took = int((loop.time() - start) * 1e9)
        key = "ok" if reply.status == Status.OK else "fail"
        s[key] = s.get(key, 0) + 1
        s[key + "_ns"] = s.get(key + "_ns", 0) + took
        s["last_ms"] = int(time.time() * 1000)
        if reply.status != Status.OK:
            try:
                status = Status(reply.status)
            except ValueError:
                status = Status.FAILED
            raise KServeError(status, reply.error or status.name.lower())
        return reply.tensors, out
