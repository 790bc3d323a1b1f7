"""Ray Serve as a peer: ``RayPeer`` starts ``ray_server.py`` and is the client side of it.

Theory of operation: Ray 2.60's dashboard agent needs protobuf >= 6 (through
googleapis-common-protos), while Baton's gRPC extra pins protobuf < 5 (tritonclient), so Ray
runs under an interpreter of its own, by default ``.venv/ray/bin/python`` (see
``common.peer_python``). ``RayPeer`` launches the server script there with
``RAY_AUTH_MODE=disabled`` (Ray 2.60 refuses unauthenticated local use otherwise) and usage
statistics off; the life cycle (ready file, stopping every process it started by PID) is
``base.Peer``'s. Requests are plain HTTP POSTs to Serve's proxy on
127.0.0.1; the answer is the batch size the request ran in.
"""

from __future__ import annotations

import functools
from pathlib import Path

from central.cluster import free_port

from .base import Peer
from .common import HttpTarget, PeerUnavailable, peer_python, probe_interpreter

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


class RayPeer(Peer):
    """N Serve replicas of the emulated model ``l(b) = k*b + c``; a context manager."""

    name = "ray"
    ENV_NAME = ENV_NAME
    SCRIPT = "ray_server.py"
    STARTUP_TIMEOUT_S = STARTUP_TIMEOUT_S

    def unavailable(self) -> str | None:
        return available(self._python)

    def server_args(self, ready: Path, log_dir: Path) -> list[str]:
        return [
            "--port",
            str(free_port()),
            "--replicas",
            str(self.n_replicas),
            "--k-ms",
            repr(self.k_ms),
            "--c-ms",
            repr(self.c_ms),
            "--max-batch",
            str(self.knobs.max_batch),
            "--wait-us",
            str(self.knobs.queue_delay_us),
            "--ready-file",
            str(ready),
        ]

    def server_env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

    def make_target(self, url: str) -> HttpTarget:
        return HttpTarget(url, b"0", "application/octet-stream", "text")
