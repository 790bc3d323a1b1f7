"""What every peer shares: its knobs, its server process, and the open-loop HTTP sender.

Theory of operation. A peer (Ray Serve, Triton through PyTriton) runs as a *server
script* (``ray_server.py``, ``triton_server.py`` beside this file) started by path under
the peer's own interpreter, usually a virtual environment of its own, because the peers'
pins conflict with Baton's and with each other's (see docs/peers.md). The script imports
only the standard library and its peer, serves an emulated model whose handler holds the
"device" for ``k*b + c`` per batch, binds 127.0.0.1 only, writes a JSON *ready file* once
it answers requests, and shuts its peer down cleanly on SIGTERM.

``ServerProcess`` launches the script in a new session and, on ``stop``, snapshots every
descendant (``/proc``; Ray's raylet, GCS and replica workers, Triton's server and stubs),
sends SIGTERM to the script, waits, then SIGKILLs whatever of that snapshot is still alive
(matched by PID *and* start time, so a recycled PID is never hit) and the session's process
group. Nothing is stopped by name.

The sender is open loop: ``send_open_loop`` splits the trace's offsets round-robin over
``senders`` processes that share one start time, and each fires every request at its planned
time without waiting for earlier answers. Each request records its planned and actual send
time, when its answer arrived (monotonic clock, which Linux shares between processes), the
HTTP outcome and the batch size the handler reports. The wait is bounded: nothing is awaited
past the SLO plus ``grace_s`` after the last send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "Knobs",
    "HttpTarget",
    "ServerProcess",
    "PeerUnavailable",
    "PeerFailed",
    "alive",
    "peer_python",
    "probe_interpreter",
    "http_infer",
    "send_open_loop",
    "REC_PLANNED",
    "REC_SENT",
    "REC_DONE",
    "REC_STATUS",
    "REC_BATCH",
    "STATUS_NO_ANSWER",
]

HERE = Path(__file__).resolve().parent

# Columns of a sender's record array (int64, one row per request).
REC_PLANNED, REC_SENT, REC_DONE, REC_STATUS, REC_BATCH = range(5)
STATUS_NO_ANSWER = -1  # no HTTP answer before the bounded wait ended; otherwise the HTTP code


class PeerUnavailable(RuntimeError):
    """The peer's package, interpreter or binary is missing here (the message says which)."""


class PeerFailed(RuntimeError):
    """The peer's server did not come up, or died; the message names its log file."""


@dataclass(frozen=True)
class Knobs:
    """A peer's batching knobs, mapped onto each peer's own names.

    Ray Serve: ``@serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=queue_delay_us/1e6)``.
    Triton: ``max_batch_size=max_batch``, ``dynamic_batching { max_queue_delay_microseconds:
    queue_delay_us, preferred_batch_size: preferred or [max_batch] }``.
    """

    max_batch: int
    queue_delay_us: int
    preferred: tuple[int, ...] = ()  # Triton only; empty: [max_batch]

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.queue_delay_us < 0:
            raise ValueError(f"queue_delay_us must be >= 0, got {self.queue_delay_us}")
        if any(not 1 <= p <= self.max_batch for p in self.preferred):
            raise ValueError(f"preferred sizes {self.preferred} must lie in 1..{self.max_batch}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_batch": self.max_batch,
            "queue_delay_us": self.queue_delay_us,
            "preferred": list(self.preferred),
        }


@dataclass(frozen=True)
class HttpTarget:
    """One request as plain data (picklable for sender processes).

    ``kind`` says how the handler's batch size is read from a 200 answer: ``"text"`` (the
    body is the integer) or ``"kserve"`` (KServe v2 JSON, output ``b``).
    """

    url: str
    body: bytes
    content_type: str
    kind: str


def peer_python(env_name: str, override: str | None = None) -> Path:
    """The interpreter that runs a peer's server script.

    ``override`` wins; otherwise ``<running venv>/<env_name>/bin/python`` (e.g.
    ``.venv/ray/bin/python``), the layout the Makefile creates.
    """
    if override:
        return Path(override)
    return Path(sys.prefix) / env_name / "bin" / "python"


def probe_interpreter(python: Path, code: str, what: str, timeout_s: float = 60.0) -> str:
    """Run ``code`` under ``python``; returns its stdout's last line.

    Raises ``PeerUnavailable`` naming ``what`` when the interpreter is missing or the code
    fails (with the last line of its error output).
    """
    if not python.is_file():
        raise PeerUnavailable(f"{what}: no interpreter at {python}")
    proc = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=timeout_s, env=_quiet_env()
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PeerUnavailable(f"{what}: {python} failed the check: {last}")
    return (proc.stdout.strip().splitlines() or [""])[-1]


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # a peer's interpreter sees its own packages, not ours
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot); None once it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # exited, waiting to be reaped: not running any more
        return None
    return int(fields[19])  # field 22: starttime


def _descendants(root: int) -> list[tuple[int, int]]:
    """``(pid, start time)`` of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[tuple[int, int]] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        st = _start_time(pid)
        if st is not None:
            out.append((pid, st))
        todo.extend(children.get(pid, []))
    return out


def alive(processes: list[tuple[int, int]]) -> list[int]:
    """The PIDs among ``(pid, start time)`` pairs that still run as the same process."""
    return [pid for pid, started in processes if _start_time(pid) == started]


class ServerProcess:
    """A peer's server script in its own session; stopped by PID (see the module docstring).

    ``start`` returns the ready file's JSON. Raises ``PeerFailed`` (naming the log) when the
    script exits or stays silent past ``timeout_s``.
    """

    def __init__(
        self, python: Path, script: str, args: list[str], env: dict[str, str], log_path: Path
    ) -> None:
        self._cmd = [str(python), str(HERE / script), *args]
        self._env = {**_quiet_env(), **env}
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, ready_file: Path, timeout_s: float, attempts: int = 1) -> dict[str, Any]:
        """Start the script; returns its ready file's JSON.

        A start that fails is stopped and tried again, ``attempts`` times in all (PyTriton's
        model handshake is occasionally refused on a loaded 2-core machine). Raises
        ``PeerFailed`` with the log's tail after the last.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_bytes(b"")
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(ready_file, timeout_s)
            except PeerFailed:
                self.stop()
                if attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, ready_file: Path, timeout_s: float) -> dict[str, Any]:
        ready_file.unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready_file.exists():
                return dict(json.loads(ready_file.read_text()))
            if self._proc.poll() is not None:
                raise PeerFailed(
                    f"{self._cmd[1]} exited with {self._proc.returncode} before "
                    f"it was ready; {self.log_path} ends:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        raise PeerFailed(
            f"{self._cmd[1]} not ready within {timeout_s:g} s; {self.log_path} ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the server's log (it may live in a temporary dir)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def processes(self) -> list[tuple[int, int]]:
        """``(pid, start time)`` of the script and every descendant, now."""
        if self._proc is None:
            return []
        own = _start_time(self._proc.pid)
        return ([(self._proc.pid, own)] if own is not None else []) + _descendants(self._proc.pid)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL every remaining process it started.

        Returns the script's exit code (None if it had to be killed).
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        family = _descendants(proc.pid)
        code: int | None = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        else:
            code = proc.returncode
        # whatever the graceful shutdown left behind: same PID and start time only
        family += _descendants(proc.pid)
        for pid in alive(family):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the session we created, led by our PID
        deadline = time.monotonic() + 5.0  # SIGKILL is asynchronous: wait until they are gone
        while alive(family) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code


async def http_infer(session: Any, target: HttpTarget, timeout_s: float) -> tuple[int, int, int]:
    """POST one request; returns ``(HTTP status or STATUS_NO_ANSWER, batch size or 0, done_ns)``."""
    import aiohttp

    try:
        async with session.post(
            target.url,
            data=target.body,
            headers={"Content-Type": target.content_type},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            body = await resp.read()
            done = time.monotonic_ns()
            return resp.status, _batch_size(target.kind, resp.status, body), done
    except (TimeoutError, aiohttp.ClientError):
        return STATUS_NO_ANSWER, 0, time.monotonic_ns()


def _batch_size(kind: str, status: int, body: bytes) -> int:
    if status != 200:
        return 0
    try:
        if kind == "text":
            return int(body)
        out = json.loads(body)["outputs"]
        return int(next(o for o in out if o["name"] == "b")["data"][0])
    except (ValueError, KeyError, StopIteration, TypeError):
        return 0


async def _send_all(
    target: HttpTarget, offsets: np.ndarray, start_ns: int, wait_s: float, warmup: int
) -> np.ndarray:
    import aiohttp

    rec = np.zeros((len(offsets), 5), dtype=np.int64)
    rec[:, REC_STATUS] = STATUS_NO_ANSWER
    rec[:, REC_DONE] = -1
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        # open a few keep-alive connections before the clock starts
        await asyncio.gather(*(http_infer(session, target, wait_s) for _ in range(warmup)))
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int) -> None:
            rec[i, REC_SENT] = time.monotonic_ns()
            status, batch, done = await http_infer(session, target, wait_s)
            rec[i, REC_STATUS] = status
            rec[i, REC_BATCH] = batch
            if status != STATUS_NO_ANSWER:
                rec[i, REC_DONE] = done

        try:
            for i, off in enumerate(offsets):
                planned = start_ns + int(off)
                rec[i, REC_PLANNED] = planned
                delay = (planned - time.monotonic_ns()) / 1e9
                if delay > 0.0002:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(one(i)))
            if tasks:
                await asyncio.wait(tasks, timeout=wait_s + 1.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return rec


def _sender(target: HttpTarget, offsets: np.ndarray, start_ns: int, wait_s: float, warmup: int) -> np.ndarray:
    import gc

    import uvloop

    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()  # collector pauses would show up as send lateness and latency
    gc.set_threshold(100_000, 50, 1000)
    try:
        return uvloop.run(_send_all(target, offsets, start_ns, wait_s, warmup))
    finally:  # the caller's process may be the harness itself (senders=1)
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _warm(_: int) -> None:
    import aiohttp  # noqa: F401  (import cost paid before the clock starts)
    import uvloop  # noqa: F401


def send_open_loop(
    target: HttpTarget,
    offsets_ns: np.ndarray,
    *,
    wait_s: float,
    senders: int = 1,
    warmup: int = 4,
    lead_s: float = 1.0,
) -> np.ndarray:
    """Fire one request per offset at ``start + offset``; returns records sorted by plan.

    Records are ``[planned, sent, done, status, batch]`` per request (absolute monotonic ns;
    ``done`` is -1 and ``status`` ``STATUS_NO_ANSWER`` when nothing came back within
    ``wait_s``). ``senders`` processes share the trace round-robin; the clock starts
    ``lead_s`` after they are warm.
    """
    offsets_ns = np.asarray(offsets_ns, dtype=np.int64)
    if senders <= 1:
        return _sender(target, offsets_ns, time.monotonic_ns() + int(lead_s * 1e9), wait_s, warmup)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(senders, mp_context=ctx) as pool:
        list(pool.map(_warm, range(senders)))
        start = time.monotonic_ns() + int(lead_s * 1e9)
        futures = [
            pool.submit(_sender, target, offsets_ns[i::senders], start, wait_s, warmup)
            for i in range(senders)
        ]
        recs = [f.result() for f in futures]
    out = np.concatenate(recs)
    return out[np.argsort(out[:, REC_PLANNED], kind="stable")]
