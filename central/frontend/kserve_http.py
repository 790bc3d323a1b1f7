"""KServe v2 over HTTP/REST, with Triton's binary tensor data extension.

Theory of operation: an aiohttp application on the frontend's loop. Health, metadata,
model config and statistics are small JSON documents from ``kserve.Gateway``. An infer
body is JSON, or, with the ``Inference-Header-Content-Length: N`` header, N bytes of
JSON followed by the raw data of every input whose ``parameters.binary_data_size`` is
set, in input order (the binary extension; tritonclient sends inputs that way by
default). Binary input bytes are passed to the frontend as they came (BYTES tensors use
the same 4-byte-length layout as Baton's wire). Outputs come back binary when the
request asks for it (``parameters.binary_data_output``, or ``binary_data`` on a
requested output), else as JSON ``data``; ``outputs`` restricts which are returned.

Errors follow the specification: a non-2xx status with ``{"error": "<message>"}``
(400 bad request, 404 unknown model, 503 unavailable or overloaded, 504 deadline
exceeded, 500 failed). Request bodies may be gzip or deflate encoded.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
``GET /v2/models/{m}[/versions/{v}]``, ``GET .../ready``, ``GET .../config``,
``GET .../stats``, ``GET /v2/models/stats``, ``POST .../infer``.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

from aiohttp import web

from central.frontend.kserve import (
    Gateway,
    KServeError,
    check_shape,
    json_data,
    json_tensor,
    slo_ns_from,
    to_kserve_dtype,
    to_numpy_dtype,
)
from central.protocol import Status

__all__ = ["HttpServer"]

log = logging.getLogger("baton.kserve.http")

HEADER_LENGTH = "Inference-Header-Content-Length"


def _error(exc: KServeError) -> web.Response:
    return web.json_response({"error": exc.message}, status=exc.http_status)


def _bad(message: str) -> KServeError:
    return KServeError(Status.BAD_REQUEST, message)


def _body_parts(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """Split a request body into its JSON header and the binary section after it."""
    if header_length is None:
        n = len(body)
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise _bad(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise _bad(f"{HEADER_LENGTH} {n} is outside the body of {len(body)} bytes")
    try:
        doc = json.loads(body[:n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"the request is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("the request must be a JSON object")
    return doc, memoryview(body)[n:]


def parse_infer(
    body: bytes, header_length: str | None
) -> tuple[tuple[Any, ...], list[Any], dict[str, Any], dict[str, Any]]:
    """(metas, buffers, request parameters, the JSON document) of an infer request."""
    doc, binary = _body_parts(body, header_length)
    params = doc.get("parameters") or {}
    inputs = doc.get("inputs")
    if not isinstance(params, dict):
        raise _bad("parameters must be an object")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("inputs must be a non-empty list")
    metas: list[Any] = []
    buffers: list[Any] = []
    pos = 0
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise _bad(f"inputs[{i}] must be an object")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"inputs[{i}] needs a name")
        dtype = to_numpy_dtype(t.get("datatype"))
        shape = check_shape(name, t.get("shape"))
        tparams = t.get("parameters") or {}
        size = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0 or pos + size > len(binary):
                raise _bad(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
            buffers.append(binary[pos : pos + size])
            pos += size
        elif "data" in t:
            buffers.append(json_tensor(name, t["datatype"], shape, t["data"]))
        else:
            raise _bad(f"input {name!r} has neither data nor binary_data_size")
        metas.append((name, dtype, shape))
    if pos != len(binary):
        raise _bad(f"{len(binary) - pos} bytes of binary data belong to no input")
    return tuple(metas), buffers, params, doc


def render_outputs(metas: tuple[Any, ...], buffers: Any, doc: dict[str, Any], model: str) -> web.Response:
    """The infer response: JSON, or JSON plus binary sections when the client asked."""
    params = doc.get("parameters") or {}
    all_binary = bool(params.get("binary_data_output", False))
    wanted = doc.get("outputs")
    by_name = {m[0]: (m, b) for m, b in zip(metas, buffers)}
    if wanted is None:
        chosen = [(m, b, all_binary) for m, b in zip(metas, buffers)]
    else:
        if not isinstance(wanted, list):
            raise _bad("outputs must be a list")
        chosen = []
        for o in wanted:
            name = o.get("name") if isinstance(o, dict) else None
            if name not in by_name:
                raise _bad(f"unknown output {name!r}; the model gives {sorted(by_name)}")
            oparams = o.get("parameters") or {}
            binary = bool(oparams.get("binary_data", all_binary)) if isinstance(oparams, dict) else all_binary
            m, b = by_name[name]
            chosen.append((m, b, binary))
    outputs = []
    tail: list[bytes] = []
    for (name, dtype, shape), buf, binary in chosen:
        out: dict[str, Any] = {"name": name, "datatype": to_kserve_dtype(dtype), "shape": list(shape)}
        if binary:
            raw = bytes(buf)
            out["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        else:
            out["data"] = json_data(dtype, shape, buf)
        outputs.append(out)
    result: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": outputs}
    if "id" in doc:
        result["id"] = doc["id"]
    header = json.dumps(result).encode()
    if not tail:
        return web.Response(body=header, content_type="application/json")
    return web.Response(
        body=b"".join([header, *tail]),
        headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"},
    )


class HttpServer:
    """The HTTP endpoint of one frontend."""

    def __init__(self, gateway: Gateway, host: str, port: int, max_body_bytes: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._max = max_body_bytes
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        gateway = self.gateway

        @web.middleware
        async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
            # health probes stay open (orchestrators send no credentials)
            if not request.path.startswith("/v2/health/") and not gateway.authorized(
                request.headers.get("Authorization")
            ):
                return web.json_response(
                    {"error": "unauthorized: send Authorization: Bearer <token>"}, status=401
                )
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application(client_max_size=self._max, middlewares=[require_token])
        g = "/v2/models/{model}"
        v = "/v2/models/{model}/versions/{version}"
        app.add_routes([
            web.get("/v2/health/live", self._live),
            web.get("/v2/health/ready", self._ready),
            web.get("/v2", self._server_metadata),
            web.get("/v2/models/stats", self._stats),
            *(r for base in (g, v) for r in (
                web.get(base, self._model_metadata),
                web.get(base + "/ready", self._model_ready),
                web.get(base + "/config", self._config),
                web.get(base + "/stats", self._stats),
                web.post(base + "/infer", self._infer),
            )),
        ])  # fmt: skip
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server: Any = site._server  # the bound port when 0 was asked for
        if server is not None and getattr(server, "sockets", None):
            self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---------------------------------------------------------------- routes

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.gateway.live() else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.gateway.ready() else 503)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.gateway.server_metadata())

    async def _model_metadata(self, request: web.Request) -> web.Response:
        try:
            self.gateway.require_model(request.match_info["model"], request.match_info.get("version", ""))
            return web.json_response(self.gateway.model_metadata(request.match_info["model"]))
        except KServeError as exc:
            return _error(exc)

    async def _model_ready(self, request: web.Request) -> web.Response:
        ok = self.gateway.model_ready(request.match_info["model"])
        return web.Response(status=200 if ok else 400)

    async def _config(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.gateway.model_config(request.match_info["model"]))
        except KServeError as exc:
            return _error(exc)

    async def _stats(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(self.gateway.statistics(request.match_info.get("model", "")))
        except KServeError as exc:
            return _error(exc)

    async def _infer(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        try:
            self.gateway.require_model(model, request.match_info.get("version", ""))
            body = await request.read()
            encoding = request.headers.get("Content-Encoding", "").lower()
            if encoding in ("gzip", "deflate"):
                body = _inflate(body, encoding, self._max)
            elif encoding not in ("", "identity"):
                raise _bad(f"unsupported Content-Encoding {encoding!r}")
            metas, buffers, params, doc = parse_infer(body, request.headers.get(HEADER_LENGTH))
            out_metas, out_buffers = await self.gateway.infer(model, metas, buffers, slo_ns_from(params))
            return render_outputs(out_metas, out_buffers, doc, model)
        except KServeError as exc:
            return _error(exc)
        except web.HTTPRequestEntityTooLarge as exc:
            return web.json_response({"error": f"request too large: {exc.text}"}, status=413)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = 31 if encoding == "gzip" else 15
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise _bad(f"bad {encoding} body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise _bad(f"the {encoding} body inflates past {limit} bytes")
    return out
