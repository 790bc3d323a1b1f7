"""Triton through PyTriton as a peer: ``TritonPeer`` starts ``triton_server.py``.

Theory of operation: nvidia-pytriton 0.7.0 requires numpy < 2, and it means it: its
Python-backend stub is built against numpy 1.x, and under numpy 2 every output comes back
empty ("output tensor shape does not match size of output"). Baton runs numpy 2, so Triton
runs under an interpreter of its own, by default ``.venv/triton/bin/python``. ``TritonPeer``
launches the server script there (the script points ``LD_LIBRARY_PATH`` at that
interpreter's own lib directory for the stub); the life cycle (ready file, stopping every
process it started by PID) is ``base.Peer``'s. Requests are KServe v2 JSON
POSTs on 127.0.0.1; the answer carries the batch size the request ran in.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from central.cluster import free_port

from .base import Peer
from .common import HttpTarget, Knobs, PeerUnavailable, peer_python, probe_interpreter

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
        peer_python(ENV_NAME, python),
        _CHECK,
        "PyTriton (package nvidia-pytriton, numpy<2) in the Triton environment",
    )


def available(python: str | None = None) -> str | None:
    """``None`` when PyTriton's tritonserver can run here, else why not (what is missing)."""
    try:
        _check(python)
    except PeerUnavailable as exc:
        return str(exc)
    return None


class TritonPeer(Peer):
    """N instances of the emulated model ``l(b) = k*b + c`` under Triton's dynamic batcher.

    ``queue_timeout_us`` (0: off) makes Triton reject a request that waited that long in its
    queue; the harness sets it to the SLO.
    """

    name = "triton"
    ENV_NAME = ENV_NAME
    SCRIPT = "triton_server.py"
    STARTUP_TIMEOUT_S = STARTUP_TIMEOUT_S
    STARTUP_ATTEMPTS = STARTUP_ATTEMPTS

    def __init__(
        self,
        n_replicas: int,
        k_ms: float,
        c_ms: float,
        knobs: Knobs,
        *,
        queue_timeout_us: int = 0,
        python: str | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        super().__init__(n_replicas, k_ms, c_ms, knobs, python=python, log_dir=log_dir)
        self.queue_timeout_us = queue_timeout_us

    def unavailable(self) -> str | None:
        return available(self._python)

    def server_args(self, ready: Path, log_dir: Path) -> list[str]:
        args = [
            "--port",
            str(free_port()),
            "--instances",
            str(self.n_replicas),
            "--k-ms",
            repr(self.k_ms),
            "--c-ms",
            repr(self.c_ms),
            "--max-batch",
            str(self.knobs.max_batch),
            "--delay-us",
            str(self.knobs.queue_delay_us),
            "--queue-timeout-us",
            str(self.queue_timeout_us),
            "--workspace",
            str(log_dir / "workspace"),
            "--ready-file",
            str(ready),
        ]
        if self.knobs.preferred:
            args += ["--preferred", *map(str, self.knobs.preferred)]
        return args

    def make_target(self, url: str) -> HttpTarget:
        body = json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.0]}]}
        ).encode()
        return HttpTarget(url, body, "application/json", "kserve")
