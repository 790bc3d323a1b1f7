"""What a peer *is* to the harness: ``Peer``, the one base of ``RayPeer`` and ``TritonPeer``.

Theory of operation: every peer serves the emulated model ``l(b) = k*b + c`` on N replicas
through a server script under its own interpreter (``common.ServerProcess``). Entering a
peer checks that it can run here (else ``PeerUnavailable`` naming what is missing),
starts the script with a ready file in its log directory (a temporary one unless given),
and builds the ``HttpTarget`` requests go to; ``infer`` sends one request, ``processes``
lists what it runs, ``close`` (and leaving the ``with``) stops every process it started
and removes the temporary directory. A subclass says only what differs: its name, its
interpreter's environment, its script and how long it may take to start
(``ENV_NAME``, ``SCRIPT``, ``STARTUP_TIMEOUT_S``, ``STARTUP_ATTEMPTS``), whether it can
run (``unavailable``), the script's arguments and environment (``server_args``,
``server_env``) and the request it sends (``make_target``).
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from .common import HttpTarget, Knobs, PeerUnavailable, ServerProcess, http_infer, peer_python

__all__ = ["Peer"]


class Peer(ABC):
    """N replicas of the emulated model under one peer serving system; a context manager."""

    name: ClassVar[str]  # "ray", "triton": the harness's and the logs' name for it
    ENV_NAME: ClassVar[str]  # the peer's interpreter environment (``common.peer_python``)
    SCRIPT: ClassVar[str]  # its server script, beside ``common.py``
    STARTUP_TIMEOUT_S: ClassVar[float] = 120.0
    STARTUP_ATTEMPTS: ClassVar[int] = 1

    def __init__(
        self,
        n_replicas: int,
        k_ms: float,
        c_ms: float,
        knobs: Knobs,
        *,
        python: str | None = None,
        log_dir: str | Path | None = None,
    ) -> None:
        self.n_replicas, self.k_ms, self.c_ms, self.knobs = n_replicas, k_ms, c_ms, knobs
        self._python = python
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_dir = Path(log_dir) if log_dir else None
        self._server: ServerProcess | None = None
        self.target: HttpTarget | None = None
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------ what a peer says

    @abstractmethod
    def unavailable(self) -> str | None:
        """``None`` when the peer can run here, else why not."""
        ...

    @abstractmethod
    def server_args(self, ready: Path, log_dir: Path) -> list[str]:
        """The server script's command-line arguments (``ready``: its ready file)."""
        ...

    def server_env(self) -> dict[str, str]:
        """Environment variables the server script runs with (beyond the quiet defaults)."""
        return {}

    @abstractmethod
    def make_target(self, url: str) -> HttpTarget:
        """The request every ``infer`` sends to the started server at ``url``."""
        ...

    # ------------------------------------------------------------ the shared life cycle

    def __enter__(self) -> Peer:
        reason = self.unavailable()
        if reason:
            raise PeerUnavailable(reason)
        if self._log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"baton-{self.name}-")
            self._log_dir = Path(self._tmp.name)
        ready = self._log_dir / f"{self.name}.ready"
        self._server = ServerProcess(
            peer_python(self.ENV_NAME, self._python),
            self.SCRIPT,
            self.server_args(ready, self._log_dir),
            self.server_env(),
            self._log_dir / f"{self.name}_server.log",
        )
        try:
            self.info = self._server.start(ready, self.STARTUP_TIMEOUT_S, self.STARTUP_ATTEMPTS)
        except BaseException:
            self.close()
            raise
        self.target = self.make_target(self.info["url"])
        return self

    async def infer(self, session: Any, timeout_s: float) -> tuple[int, int, int]:
        """One request on an ``aiohttp.ClientSession``: ``(HTTP status, batch size, done_ns)``."""
        if self.target is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
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
