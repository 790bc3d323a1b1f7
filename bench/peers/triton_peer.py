"""Triton through PyTriton as a peer: ``TritonPeer`` starts ``triton_server.py``.

Theory of operation: nvidia-pytriton 0.7.0 requires numpy < 2, and it means it: its
Python-backend stub is built against numpy 1.x, and under numpy 2 every output comes back
empty ("output tensor shape does not match size of output"). Baton runs numpy 2, so Triton
runs under an interpreter of its own, by default ``.venv/triton/bin/python``. ``TritonPeer``
launches the server script there (the script points ``LD_LIBRARY_PATH`` at that
interpreter's own lib directory for the stub), waits for its ready file, and on exit stops
every process it started by PID (``common.ServerProcess``). Requests are KServe v2 JSON
POSTs on 127.0.0.1; the answer carries the batch size the request ran in.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

from central.cluster import free_port

from .common import (HttpTarget, Knobs, PeerUnavailable, ServerProcess, http_infer, peer_python,
                     probe_interpreter)

__all__ = ["TritonPeer", "available"]

ENV_NAME = "triton"
STARTUP_TIMEOUT_S = 120.0
STARTUP_ATTEMPTS = 3  # its model handshake is occasionally refused on a loaded 2-core machine

_CHECK = """
import importlib.metadata, pathlib, sysconfig, numpy, pytriton
tritonserver = pathlib.Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
if not tritonserver.is_file():
    raise SystemExit(f"no tritonserver binary at {tritonserver}")
if int(numpy.__version__.split(".")[0]) >= 2:
    raise SystemExit(f"numpy {numpy.__version__}: nvidia-pytriton's stub needs numpy<2")
libdir = sysconfig.get_config_var("LIBDIR")
if not any(pathlib.Path(libdir).glob("libpython3*.so*")):
    raise SystemExit(f"no libpython in {libdir} for the Python-backend stub")
print(importlib.metadata.version("nvidia-pytriton"))
"""


@functools.cache
def _check(python: str | None) -> str:
    return probe_interpreter(
        peer_python(ENV_NAME, python), _CHECK,
        "PyTriton (package nvidia-pytriton, numpy<2) in the Triton environment")


def available(python: str | None = None) -> str | None:
    """``None`` when PyTriton's tritonserver can run here, else why not (what is missing)."""
    try:
        _check(python)
    except PeerUnavailable as exc:
        return str(exc)
    return None


class TritonPeer:
    """N instances of the emulated model ``l(b) = k*b + c`` under Triton's dynamic batcher.

    ``queue_timeout_us`` (0: off) makes Triton reject a request that waited that long in its
    queue; the harness sets it to the SLO.
    """

    name = "triton"

    def __init__(self, n_replicas: int, k_ms: float, c_ms: float, knobs: Knobs, *,
                 queue_timeout_us: int = 0, python: str | None = None,
                 log_dir: str | Path | None = None) -> None:
        self.n_replicas, self.k_ms, self.c_ms, self.knobs = n_replicas, k_ms, c_ms, knobs
        self.queue_timeout_us = queue_timeout_us
        self._python = python
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_dir = Path(log_dir) if log_dir else None
        self._server: ServerProcess | None = None
        self.target: HttpTarget | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> TritonPeer:
        reason = available(self._python)
        if reason:
            raise PeerUnavailable(reason)
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="baton-triton-")
            self._log_dir = Path(self._tmp.name)
        ready = self._log_dir / "triton.ready"
        workspace = self._log_dir / "workspace"
        args = ["--port", str(free_port()), "--instances", str(self.n_replicas),
                "--k-ms", repr(self.k_ms), "--c-ms", repr(self.c_ms),
                "--max-batch", str(self.knobs.max_batch),
                "--delay-us", str(self.knobs.queue_delay_us),
                "--queue-timeout-us", str(self.queue_timeout_us),
                "--workspace", str(workspace), "--ready-file", str(ready)]
        if self.knobs.preferred:
            args += ["--preferred", *map(str, self.knobs.preferred)]
        self._server = ServerProcess(peer_python(ENV_NAME, self._python), "triton_server.py",
                                     args, {}, self._log_dir / "triton_server.log")
        try:
            self.info = self._server.start(ready, STARTUP_TIMEOUT_S, STARTUP_ATTEMPTS)
        except BaseException:
            self.close()
            raise
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32",
                                       "data": [0.0]}]}).encode()
        self.target = HttpTarget(self.info["url"], body, "application/json", "kserve")
        return self

    async def infer(self, session: Any, timeout_s: float) -> tuple[int, int, int]:
        """One request on an ``aiohttp.ClientSession``: ``(HTTP status, batch size, done_ns)``."""
        if self.target is None:
            raise RuntimeError("TritonPeer is not started")
        return await http_infer(session, self.target, timeout_s)

    def processes(self) -> list[tuple[int, int]]:
        """``(pid, start time)`` of every process this peer runs now (empty when stopped)."""
        return self._server.processes() if self._server is not None else []

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __exit__(self, *exc: object) -> None:
        self.close()
