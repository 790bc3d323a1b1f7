"""Ray Serve as a peer: ``RayPeer`` starts ``ray_server.py`` and is the client side of it.

Theory of operation: Ray 2.60's dashboard agent needs protobuf >= 6 (through
googleapis-common-protos), while Baton's gRPC extra pins protobuf < 5 (tritonclient), so Ray
runs under an interpreter of its own, by default ``.venv/ray/bin/python`` (see
``common.peer_python``). ``RayPeer`` launches the server script there with
``RAY_AUTH_MODE=disabled`` (Ray 2.60 refuses unauthenticated local use otherwise) and usage
statistics off, waits for its ready file, and on exit stops every process it started by
PID (``common.ServerProcess``). Requests are plain HTTP POSTs to Serve's proxy on
127.0.0.1; the answer is the batch size the request ran in.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

from central.cluster import free_port

from .common import (HttpTarget, Knobs, PeerUnavailable, ServerProcess, http_infer, peer_python,
                     probe_interpreter)

__all__ = ["RayPeer", "available"]

ENV_NAME = "ray"
STARTUP_TIMEOUT_S = 180.0


@functools.cache
def _check(python: str | None) -> str:
    interp = peer_python(ENV_NAME, python)
    return probe_interpreter(
        interp,
        "import ray, ray.serve; print(ray.__version__)",
        "Ray Serve (package ray[serve]) in the Ray environment",
    )


def available(python: str | None = None) -> str | None:
    """``None`` when Ray Serve can run here, else why not (package or interpreter named)."""
    try:
        _check(python)
    except PeerUnavailable as exc:
        return str(exc)
    return None


class RayPeer:
    """N Serve replicas of the emulated model ``l(b) = k*b + c``; a context manager."""

    name = "ray"

    def __init__(self, n_replicas: int, k_ms: float, c_ms: float, knobs: Knobs, *,
                 python: str | None = None, log_dir: str | Path | None = None) -> None:
        self.n_replicas, self.k_ms, self.c_ms, self.knobs = n_replicas, k_ms, c_ms, knobs
        self._python = python
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_dir = Path(log_dir) if log_dir else None
        self._server: ServerProcess | None = None
        self.target: HttpTarget | None = None
        self.info: dict[str, Any] = {}

    def __enter__(self) -> RayPeer:
        reason = available(self._python)
        if reason:
            raise PeerUnavailable(reason)
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="baton-ray-")
            self._log_dir = Path(self._tmp.name)
        ready = self._log_dir / "ray.ready"
        args = ["--port", str(free_port()), "--replicas", str(self.n_replicas),
                "--k-ms", repr(self.k_ms), "--c-ms", repr(self.c_ms),
                "--max-batch", str(self.knobs.max_batch),
                "--wait-us", str(self.knobs.queue_delay_us),
                "--ready-file", str(ready)]
        env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self._server = ServerProcess(peer_python(ENV_NAME, self._python), "ray_server.py", args,
                                     env, self._log_dir / "ray_server.log")
        try:
            self.info = self._server.start(ready, STARTUP_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        self.target = HttpTarget(self.info["url"], b"0", "application/octet-stream", "text")
        return self

    async def infer(self, session: Any, timeout_s: float) -> tuple[int, int, int]:
        """One request on an ``aiohttp.ClientSession``: ``(HTTP status, batch size, done_ns)``."""
        if self.target is None:
            raise RuntimeError("RayPeer is not started")
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
