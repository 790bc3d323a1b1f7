"""Cluster configuration (TOML) and a local launcher of separate processes.

Theory of operation: a cluster file names the scheduler, the frontend, the models (their
SLOs, and profiles for emulated ones) and the workers. ``Cluster`` starts each role as
its own process (``baton scheduler|frontend|worker``), waits until every GPU and the
frontend have registered, and stops them all by PID on exit: SIGTERM, then SIGKILL for
any that does not leave in time. ``EMBEDDED_DEFAULT`` is what ``baton up`` and ``make
run`` use when no file is given.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EMBEDDED_DEFAULT",
    "ModelSpec",
    "WorkerSpec",
    "ClusterConfig",
    "load_config",
    "parse_config",
    "Cluster",
    "free_port",
]

EMBEDDED_DEFAULT = """\
# Baton's embedded default cluster: 8 emulated GPUs serving a model with Symphony's
# benchmark profile l(b) = 1.082 ms * b + 5.204 ms at SLO 25 ms, and one CPU torch worker
# serving MobileNetV2 and all-MiniLM-L6-v2 with their real weights.

[scheduler]
address = "tcp://127.0.0.1:5550"
policy = "symphony"
metrics_port = 9550                  # Prometheus: http://127.0.0.1:9550/metrics
stats_pub = "tcp://127.0.0.1:5551"   # live stats for 'baton dashboard'

[frontend]
address = "tcp://127.0.0.1:5560"
default_slo_ms = 100
metrics_port = 9560                  # Prometheus: http://127.0.0.1:9560/metrics
http_port = 8000                     # KServe v2 over HTTP (tritonclient.http, curl)
grpc_port = 8001                     # KServe v2 over gRPC (tritonclient.grpc, perf_analyzer)

[[models]]
name = "symphony"
k_ms = 1.082
c_ms = 5.204
slo_ms = 25

[[models]]
name = "mobilenet_v2"
slo_ms = 1000

[[models]]
name = "minilm"
slo_ms = 1000

[[workers]]
kind = "emulated"
gpus = 8
models = ["symphony"]

[[workers]]
kind = "torch"
models = ["mobilenet_v2", "minilm"]
device = "cpu"
threads = 1
"""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    slo_ms: float | None = None
    k_ms: float | None = None  # emulated models need k_ms and c_ms
    c_ms: float | None = None
    max_batch: int = 64
    checkpoint: str | None = None  # torch models: a user's own weights


@dataclass(frozen=True)
class WorkerSpec:
    kind: str  # "emulated" or "torch"
    models: tuple[str, ...]
    gpus: int = 1
    noise: float = 0.0
    seed: int = 0
    device: str | None = None
    threads: int = 1
    data_address: str = "tcp://127.0.0.1:0"


@dataclass(frozen=True)
class ClusterConfig:
    scheduler_address: str = "tcp://127.0.0.1:5550"
    policy: str = "symphony"
    frontend_address: str = "tcp://127.0.0.1:5560"
    default_slo_ms: float = 100.0
    models: tuple[ModelSpec, ...] = ()
    workers: tuple[WorkerSpec, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    scheduler_metrics_port: int | None = None  # None: no /metrics on the scheduler
    stats_pub: str | None = None  # the scheduler's stats PUB bind address; None: off
    frontend_metrics_port: int | None = None  # None: no /metrics on the frontend
    http_port: int | None = None  # KServe v2 over HTTP on the frontend; None: off
    grpc_port: int | None = None  # KServe v2 over gRPC on the frontend; None: off
    keys_dir: str | None = None  # [security] keys: CURVE on every socket (baton keys DIR)
    token_file: str | None = None  # [security] token_file: clients must present it
    shards: int = 1  # [scheduler] shards: K >= 2 model-shard processes and a matcher

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def gpu_count(self) -> int:
        return sum(w.gpus for w in self.workers)

    def with_ports(
        self,
        scheduler_port: int,
        frontend_port: int,
        *,
        scheduler_metrics_port: int | None = None,
        frontend_metrics_port: int | None = None,
        stats_pub_port: int | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
    ) -> ClusterConfig:
        """The same cluster on other loopback ports (tests, ``make run``).

        The metrics endpoints, the stats PUB socket and the KServe endpoints are **off**
        in the copy unless their ports are given: a moved cluster must never collide with
        the fixed ports of another one (the embedded default's 9550, 9560, 5551, 8000
        and 8001).
        """
        return dataclasses.replace(
            self,
            scheduler_address=f"tcp://127.0.0.1:{scheduler_port}",
            frontend_address=f"tcp://127.0.0.1:{frontend_port}",
            scheduler_metrics_port=scheduler_metrics_port,
            frontend_metrics_port=frontend_metrics_port,
            stats_pub=None if stats_pub_port is None else f"tcp://127.0.0.1:{stats_pub_port}",
            http_port=http_port,
            grpc_port=grpc_port,
        )


def _fail(where: str, text: str) -> ValueError:
    return ValueError(f"cluster config {where}: {text}")


def parse_config(text: str, where: str = "<text>") -> ClusterConfig:
    """Parse a cluster TOML document; raises ``ValueError`` naming the bad entry."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _fail(where, str(exc)) from None
    known = {"scheduler", "frontend", "models", "workers", "security"}
    unknown = set(doc) - known
    if unknown:
        raise _fail(where, f"unknown sections {sorted(unknown)}; known: {sorted(known)}")
    sched = doc.get("scheduler", {})
    fe = doc.get("frontend", {})
    sec = doc.get("security", {})
    for section, keys in (
        ("scheduler", {"address", "policy", "metrics_port", "stats_pub", "shards"}),
        ("frontend", {"address", "default_slo_ms", "metrics_port", "http_port", "grpc_port"}),
        ("security", {"keys", "token_file"}),
    ):
        extra = set(doc.get(section, {})) - keys
        if extra:
            raise _fail(where, f"[{section}]: unknown keys {sorted(extra)}; known: {sorted(keys)}")
    models = []
    for i, m in enumerate(doc.get("models", [])):
        if "name" not in m:
            raise _fail(where, f"models[{i}] needs a name")
        extra = set(m) - {"name", "slo_ms", "k_ms", "c_ms", "max_batch", "checkpoint"}
        if extra:
            raise _fail(where, f"models[{i}]: unknown keys {sorted(extra)}")
        models.append(ModelSpec(**m))
    names = {m.name for m in models}
    workers = []
    for i, w in enumerate(doc.get("workers", [])):
        kind = w.get("kind")
        if kind not in ("emulated", "torch"):
            raise _fail(where, f"workers[{i}].kind must be 'emulated' or 'torch', got {kind!r}")
        extra = set(w) - {"kind", "models", "gpus", "noise", "seed", "device", "threads", "data_address"}
        if extra:
            raise _fail(where, f"workers[{i}]: unknown keys {sorted(extra)}")
        wm = tuple(w.get("models", ()))
        if not wm:
            raise _fail(where, f"workers[{i}] serves no models")
        for name in wm:
            if name not in names:
                raise _fail(where, f"workers[{i}] serves {name!r}, which [[models]] does not define")
            spec = next(m for m in models if m.name == name)
            if kind == "emulated" and (spec.k_ms is None or spec.c_ms is None):
                raise _fail(where, f"emulated model {name!r} needs k_ms and c_ms")
        gpus = w.get("gpus", 1)
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
            raise _fail(where, f"workers[{i}].gpus must be an integer >= 1, got {gpus!r}")
        if kind == "torch" and gpus != 1:
            raise _fail(where, f"workers[{i}]: a torch worker drives exactly one device")
        workers.append(WorkerSpec(kind, wm, **{k: v for k, v in w.items() if k not in ("kind", "models")}))
    return ClusterConfig(
        sched.get("address", "tcp://127.0.0.1:5550"),
        sched.get("policy", "symphony"),
        fe.get("address", "tcp://127.0.0.1:5560"),
        float(fe.get("default_slo_ms", 100.0)),
        tuple(models),
        tuple(workers),
        scheduler_metrics_port=_port(where, "scheduler", sched.get("metrics_port")),
        stats_pub=_address(where, "scheduler", "stats_pub", sched.get("stats_pub")),
        frontend_metrics_port=_port(where, "frontend", fe.get("metrics_port")),
        http_port=_port(where, "frontend", fe.get("http_port"), "http_port"),
        grpc_port=_port(where, "frontend", fe.get("grpc_port"), "grpc_port"),
        keys_dir=_path(where, "keys", sec.get("keys")),
        token_file=_path(where, "token_file", sec.get("token_file")),
        shards=_shards(where, sched.get("shards", 1), sched.get("policy", "symphony")),
    )


def _shards(where: str, value: Any, policy: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(where, f"[scheduler] shards must be an integer >= 1, got {value!r}")
    if value > 1 and policy != "symphony":
        raise _fail(
            where,
            f"[scheduler] shards = {value} splits the default policy; "
            f"policy {policy!r} runs in one process (shards = 1)",
        )
    return value


def _path(where: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(where, f"[security].{key} must be a path, got {value!r}")
    return value


def _port(where: str, section: str, value: Any, key: str = "metrics_port") -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise _fail(where, f"[{section}].{key} must be a port 0-65535, got {value!r}")
    return value


def _address(where: str, section: str, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "://" not in value:
        raise _fail(where, f"[{section}].{key} must be an address like 'tcp://host:port', got {value!r}")
    return value


def load_config(path: str | None) -> ClusterConfig:
    """The cluster file at ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        return parse_config(EMBEDDED_DEFAULT, "<embedded default>")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"cluster config {path}: no such file")
    return parse_config(p.read_text(), path)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """Start the scheduler, frontend and workers of ``config`` as child processes."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        log_dir: str | None = None,
        extra_env: dict[str, str] | None = None,
        policy_args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._log_dir = log_dir
        self._env = {**os.environ, **(extra_env or {})}
        self._policy_args = policy_args
        self._args: dict[str, list[str]] = {}  # role -> its command line (for respawn)

    def _spawn(self, role: str, args: list[str]) -> None:
        self._args[role] = list(args)
        cmd = [sys.executable, "-m", "central.cli", *args]
        out: Any = subprocess.DEVNULL
        if self._log_dir:
            Path(self._log_dir).mkdir(parents=True, exist_ok=True)
            out = open(Path(self._log_dir) / f"{role}.log", "ab")  # a respawn appends
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=self._env)
        self.procs.append((role, proc))

    def start(self, timeout_s: float = 120.0) -> None:
        """Start every process and wait until all GPUs and the frontend registered.

        Raises ``RuntimeError`` (after stopping what started) if a process exits or the
        cluster is not ready within ``timeout_s``.
        """
        c = self.config
        secure = ["--keys", c.keys_dir] if c.keys_dir else []
        sched = [
            "scheduler",
            "--address",
            c.scheduler_address,
            "--policy",
            c.policy,
            *secure,
            *self._policy_args,
        ]
        if c.scheduler_metrics_port is not None:
            sched += ["--metrics-port", str(c.scheduler_metrics_port)]
        if c.stats_pub:
            sched += ["--stats-pub", c.stats_pub]
        if c.shards > 1:
            sched += ["--shards", str(c.shards)]
            if self._log_dir:
                sched += ["--shard-log-dir", str(self._log_dir)]
        for m in c.models:
            if m.k_ms is not None and m.c_ms is not None:
                sched += ["--profile", f"{m.name}:{m.k_ms}:{m.c_ms}:{m.max_batch}"]
        self._spawn("scheduler", sched)
        fe = [
            "frontend",
            "--scheduler",
            c.scheduler_address,
            "--address",
            c.frontend_address,
            "--default-slo-ms",
            str(c.default_slo_ms),
        ]
        if c.frontend_metrics_port is not None:
            fe += ["--metrics-port", str(c.frontend_metrics_port)]
        fe += secure + (["--token-file", c.token_file] if c.token_file else [])
        if c.http_port is not None:
            fe += ["--http-port", str(c.http_port)]
        if c.grpc_port is not None:
            fe += ["--grpc-port", str(c.grpc_port)]
        for m in c.models:
            if m.slo_ms is not None:
                fe += ["--slo", f"{m.name}={m.slo_ms}"]
        self._spawn("frontend", fe)
        for i, w in enumerate(c.workers):
            args = [
                "worker",
                "--scheduler",
                c.scheduler_address,
                "--data-address",
                w.data_address,
                "--name",
                f"worker{i}-{w.kind}",
                *secure,
            ]
            if w.kind == "emulated":
                args += ["--emulate", str(w.gpus), "--noise", str(w.noise), "--seed", str(w.seed)]
                for name in w.models:
                    m = c.model(name)
                    args += ["--model", f"{name}:{m.k_ms}:{m.c_ms}:{m.max_batch}"]
            else:
                args += ["--threads", str(w.threads)]
                if w.device:
                    args += ["--device", w.device]
                for name in w.models:
                    args += ["--torch", name]
                    m = c.model(name)
                    if m.checkpoint:
                        args += ["--checkpoint", f"{name}={m.checkpoint}"]
            self._spawn(f"worker{i}", args)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout_s: float) -> None:
        from central.client import Unavailable, query_stats

        deadline = time.monotonic() + timeout_s
        want = self.config.gpu_count
        keys = self.config.keys_dir
        token = None
        if self.config.token_file:
            from central.plumbing.security import read_token

            token = read_token(self.config.token_file)
        while time.monotonic() < deadline:
            for role, proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{role} exited with code {proc.returncode} during start-up")
            try:
                s = query_stats(self.config.scheduler_address, timeout_s=1.0, keys=keys)
                shards = s["policy"].get("shards", ())  # a split scheduler: all registered
                if (
                    len(s["workers"]) >= want
                    and s["frontends"] >= 1
                    and all(sh.get("address") for sh in shards)
                ):
                    fe = query_stats(
                        self.config.frontend_address, timeout_s=1.0, keys=keys, server="frontend", token=token
                    )
                    described = set(fe.get("described_models", ())) >= set(fe["models"])
                    kserve = (self.config.http_port is None or fe.get("http_port")) and (
                        self.config.grpc_port is None or fe.get("grpc_port")
                    )
                    split = self.config.shards == 1 or fe.get("shards")  # knows the shards
                    if fe["workers"] >= len(self.config.workers) and described and kserve and split:
                        return
            except Unavailable:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"cluster not ready after {timeout_s:.0f} s")

    def alive(self) -> list[str]:
        return [role for role, p in self.procs if p.poll() is None]

    def process(self, role: str) -> subprocess.Popen[bytes]:
        """The running (or last) process of ``role`` ("scheduler", "frontend", "worker0"...)."""
        for r, p in reversed(self.procs):
            if r == role:
                return p
        raise KeyError(role)

    def respawn(self, role: str) -> subprocess.Popen[bytes]:
        """Start ``role`` again with the arguments it first had (after it died or was
        killed: the caller kills it); returns the new process."""
        old = self.process(role)
        if old.poll() is None:
            raise RuntimeError(f"{role} (pid {old.pid}) is still running")
        self.procs = [(r, p) for r, p in self.procs if p is not old]
        self._spawn(role, self._args[role])
        return self.process(role)

    def stop(self, timeout_s: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every child by PID, SIGKILL the stragglers; returns exit codes."""
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for role, p in self.procs:
            try:
                codes[role] = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[role] = p.wait()
        self.procs = []
        return codes

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
