"""The worker process: Execute from the scheduler, payloads from frontends, results out.

Theory of operation: a DEALER to the scheduler carries registration, heartbeats (which
also estimate the clock offset), Execute commands in and Done reports out. A ROUTER data
socket receives Payloads from frontends and sends Results straight back to them. Each GPU
has a FIFO of batches in dispatch order and a task that, for the batch at its head:
waits for the payloads (until the latest start at most), waits for the window to open,
checks it (``window.check_window``), validates each request, runs the valid ones on the
executor, and answers every request exactly once: a result, BAD_REQUEST, FAILED, or
DEADLINE_EXCEEDED when the window was missed. Then Done goes to the scheduler with the
measured start and end on the scheduler's clock.

A payload whose batch is unknown waits briefly for its Execute (the two travel different
paths); one whose batch never comes is answered FAILED after ``orphan_timeout_ns``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from central.plumbing.clock import ClockLike, LatenessLog, OffsetEstimator, Wakeups, as_clock
from central.plumbing.security import Keys, load_keys, peer_key, warn_if_exposed
from central.plumbing.zmqio import Reader, close_all, configure
from central.protocol import (
    DEFAULT_LIMITS,
    DescribeModels,
    Done,
    Error,
    Execute,
    Heartbeat,
    HeartbeatAck,
    Leaving,
    ModelsDescribed,
    Payloads,
    RegisterWorker,
    RemoteProtocolError,
    Results,
    Status,
    TensorMeta,
    WorkerRegistered,
    arrays,
    decode,
    encode,
)
from central.protocol.conventions import BatchStatus

from .executor import Executor, Inputs
from .window import WindowVerdict, check_window

__all__ = ["WorkerConfig", "Worker"]

log = logging.getLogger("baton.worker")

ORPHAN_SWEEP_S = 0.5  # how often payloads still waiting for their Execute are looked at
_DRAIN_POLL_NS = 10_000_000  # how often a drain looks whether every batch finished


@dataclass(frozen=True)
class WorkerConfig:
    scheduler: str = "tcp://127.0.0.1:5550"
    data_bind: str = "tcp://127.0.0.1:0"  # where frontends push payloads
    data_advertise: str | None = None  # the address frontends should dial (default: bound)
    name: str = ""
    spin_ns: int = 300_000
    # Start a batch up to this long after its latest start rather than refuse it: the
    # plan's latest start already keeps the reply cost and the profile margin in hand,
    # so a start this late still usually meets the head's deadline, while a refusal
    # fails the whole batch for certain. 0 gives Clockwork's strict window.
    late_tolerance_ns: int = 2_000_000
    # ... or this fraction of the batch's expected duration, whichever is larger: the
    # window protects the head's deadline, but the rest of the batch has later ones, and
    # a refusal fails them all for certain. Measured: at 60% load one refused batch in
    # ~100 (a process stall of 5-8 ms on 2 shared cores) cost 0.7% attainment alone.
    late_tolerance_fraction: float = 0.1
    max_lead_ns: int = 5_000_000_000
    # Unanswered registration is sent again after this long (the scheduler treats an
    # identical one from a registered process as a retry).
    register_retry_ns: int = 1_000_000_000
    # On SIGTERM: finish queued and running batches for up to this long, then exit.
    drain_timeout_ns: int = 5_000_000_000
    # CURVE keys (``baton keys DIR``): encrypt and authenticate both sockets; only
    # frontends' keys may deliver payloads. None: off.
    keys_dir: str | None = None
    orphan_timeout_ns: int = 2_000_000_000
    # stop waiting for missing payloads this long before the latest start, so the
    # requests that did arrive still run (the missing ones are answered by the worker
    # when their payload comes, or by their frontend's sweep if it never does)
    payload_guard_ns: int = 200_000


@dataclass
class _Batch:
    execute: Execute
    received_ns: int
    inputs: dict[int, Inputs]
    origin: dict[int, bytes]  # request id -> frontend data identity
    complete: asyncio.Event
    answered: set[int] = field(default_factory=set)  # got their one Results entry already
    fate: str = "the payload reached the worker after the batch's latest start"


class Worker:
    """Serve ``executor``'s GPUs until ``stop`` is set."""

    def __init__(
        self,
        config: WorkerConfig,
        executor: Executor,
        *,
        clock: ClockLike = time.monotonic_ns,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        # reads and sleeps (heartbeats, sweeps, drain, precise starts); ``_clock`` reads
        self._time = as_clock(clock)
        self._clock = self._time.reader
        self._ctx = context or zmq.Context.instance()
        self.name = config.name or f"{socket.gethostname()}:{os.getpid()}"
        self.offset = OffsetEstimator()
        self.start_lateness = LatenessLog()
        self._ctrl: zmq.Socket[Any] | None = None
        self._ctrl_reader: Reader | None = None
        self._data_reader: Reader | None = None
        self._data: zmq.Socket[Any] | None = None
        self._batches: dict[int, _Batch] = {}
        self._finished: OrderedDict[int, str] = OrderedDict()  # recent batch ids, bounded
        self._wakeups: Wakeups  # created in serve(), on the running loop
        self._queues: list[asyncio.Queue[_Batch]] = []
        self._early: dict[int, list[tuple[bytes, Payloads, list[Any], int]]] = {}
        self._registered: asyncio.Event | None = None  # created in serve()
        self._heartbeat_s = 0.25
        self._sched_seen_ns = 0
        self._register_sent_ns = 0
        self._register_msg: RegisterWorker | None = None  # built in serve()
        self._keys: Keys | None = None  # CURVE keys when config.keys_dir is set
        self.counters = {
            "batches": 0,
            "requests": 0,
            "too_late": 0,
            "too_early": 0,
            "bad_requests": 0,
            "failed": 0,
        }
        self.recent: deque[tuple[int, int, int, int]] = deque(maxlen=10000)

    async def serve(self, stop: asyncio.Event) -> None:
        """Connect, register, serve until ``stop``; closes every socket on the way out."""
        keys = self._keys = load_keys(self.config.keys_dir, "worker") if self.config.keys_dir else None
        warn_if_exposed(self.config.data_bind, keys, "the worker's data socket")
        ctrl = self._ctx.socket(zmq.DEALER)
        if keys is not None:
            keys.client(ctrl, "scheduler")
        # immediate: nothing queues for a scheduler that is gone
        configure(ctrl, immediate=True, identity=f"w-{self.name}")
        ctrl.connect(self.config.scheduler)
        data = self._ctx.socket(zmq.ROUTER)
        if keys is not None:
            keys.server(data, self._ctx)
        # Handover: a frontend reopens its data socket to us under the same routing id
        # when the worker directory renumbers processes (a restarted scheduler). Without
        # it the new connection can be refused for good while the old one lingers: every
        # payload for us was then lost (found by the scheduler-restart chaos test).
        configure(data, hwm=0, mandatory=True, handover=True)
        data.bind(self.config.data_bind)
        self._ctrl, self._data = ctrl, data
        advertise = self.config.data_advertise or data.getsockopt_string(zmq.LAST_ENDPOINT)
        self._registered = asyncio.Event()
        self._queues = [asyncio.Queue() for _ in range(self.executor.gpu_count)]
        self._wakeups = self._time.wakeups(spin_ns=self.config.spin_ns)
        use_sleeper = getattr(self.executor, "use_sleeper", None)
        if use_sleeper is not None:
            use_sleeper(self._wakeups.sleep_until)
        ctrl_reader = Reader(ctrl, self._on_ctrl)
        data_reader = Reader(data, self._on_data, copy=False)
        self._ctrl_reader, self._data_reader = ctrl_reader, data_reader
        self._register_msg = RegisterWorker(self.name, advertise, self.executor.gpu_specs())
        self._send_ctrl(Heartbeat(self._clock()))
        self._register(self._clock())
        tasks = [asyncio.ensure_future(self._gpu_loop(g)) for g in range(self.executor.gpu_count)]
        tasks.append(asyncio.ensure_future(self._heartbeat_loop()))
        tasks.append(asyncio.ensure_future(self._orphan_sweep()))
        try:
            await stop.wait()
            await self._drain()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            ctrl_reader.close()
            data_reader.close()
            close_all([ctrl, data])
            if keys is not None:
                keys.stop()
            self._wakeups.close()
            self.executor.close()

    # ------------------------------------------------------------ control path

    def _on_ctrl(self, batch: list[Sequence[bytes]]) -> None:
        now = self._clock()
        for frames in batch:
            try:
                msg, _ = decode(frames, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                log.error("bad message from scheduler: %s", exc)
                continue
            if isinstance(msg, Execute):
                self._on_execute(msg, now)
            elif isinstance(msg, HeartbeatAck):
                self.offset.observe(msg.echo_sent_ns, msg.scheduler_ns, now)
                self._sched_seen_ns = now
                if not msg.registered and self._registered is not None and self._registered.is_set():
                    # the scheduler restarted, or declared us dead: join again (soft state)
                    log.warning("the scheduler no longer knows this worker: registering again")
                    self._registered.clear()
                    self._register(now)
            elif isinstance(msg, WorkerRegistered):
                self._sched_seen_ns = now
                self._heartbeat_s = msg.heartbeat_interval_ns / 1e9
                assert self._registered is not None
                self._registered.set()
                log.info("registered as process %d, gpus %s", msg.process_id, msg.gpu_ids)
            elif isinstance(msg, Error):
                log.error("scheduler refused a message: %s", msg.message)

    def _on_execute(self, msg: Execute, now: int) -> None:
        if not 0 <= msg.gpu < self.executor.gpu_count:
            log.error("Execute for gpu %d: this worker has %d", msg.gpu, self.executor.gpu_count)
            self._send_ctrl(
                Done(
                    msg.batch_id,
                    msg.gpu,
                    int(BatchStatus.FAILED),
                    self.offset.to_remote(now),
                    self.offset.to_remote(now),
                    0,
                )
            )
            self._finished[msg.batch_id] = "the batch named a GPU this worker does not have"
            return
        batch = _Batch(msg, now, {}, {}, asyncio.Event())
        self._batches[msg.batch_id] = batch
        for identity, payloads, buffers, _ in self._early.pop(msg.batch_id, ()):
            self._add_payloads(batch, identity, payloads, buffers)
        self._queues[msg.gpu].put_nowait(batch)

    # --------------------------------------------------------------- data path

    def _on_data(self, batch: list[Sequence[Any]]) -> None:
        now = self._clock()
        keys = self._keys
        for frames in batch:
            identity = frames[0].bytes
            if keys is not None and keys.role_of(peer_key(frames[0])) != "frontend":
                self._send_data(identity, Error(int(Status.UNAUTHORIZED), "only frontends deliver payloads"))
                continue
            body = [frames[1].bytes, *(f.buffer for f in frames[2:])]
            try:
                msg, buffers = decode(body, DEFAULT_LIMITS)
            except RemoteProtocolError as exc:
                self._send_data(identity, Error(int(Status.BAD_REQUEST), str(exc)))
                continue
            if isinstance(msg, DescribeModels):
                self._send_data(identity, ModelsDescribed(msg.tag, self.executor.signatures()))
                continue
            if not isinstance(msg, Payloads):
                self._send_data(identity, Error(int(Status.BAD_REQUEST), "expected Payloads"))
                continue
            target = self._batches.get(msg.batch_id)
            fate = self._finished.get(msg.batch_id)
            if fate is not None:  # the batch already ran or was refused without these
                n = len(msg.request_ids)
                self._send_data(
                    identity,
                    Results(
                        msg.batch_id,
                        msg.request_ids,
                        (int(Status.DEADLINE_EXCEEDED),) * n,
                        (fate,) * n,
                        ((),) * n,
                    ),
                )
            elif target is None:
                self._early.setdefault(msg.batch_id, []).append((identity, msg, buffers, now))
            else:
                self._add_payloads(target, identity, msg, buffers)

    def _add_payloads(self, batch: _Batch, identity: bytes, msg: Payloads, buffers: list[Any]) -> None:
        expected = set(batch.execute.request_ids)
        pos = 0
        bad: list[tuple[int, str]] = []
        for rid, metas in zip(msg.request_ids, msg.tensors):
            n = len(metas) if isinstance(metas, tuple) else 0
            chunk = buffers[pos : pos + n]
            pos += n
            if rid not in expected or rid in batch.inputs or rid in batch.answered:
                continue  # not ours or a duplicate: ignore, its owner answers it
            batch.origin[rid] = identity
            try:
                batch.inputs[rid] = arrays.unpack(metas, chunk)
            except RemoteProtocolError as exc:
                bad.append((rid, str(exc)))
        for rid, reason in bad:
            self._answer(batch, [rid], Status.BAD_REQUEST, f"malformed tensor: {reason}")
        if len(batch.inputs) + len(batch.answered) >= len(expected):
            batch.complete.set()

    # -------------------------------------------------------------- execution

    async def _gpu_loop(self, gpu: int) -> None:
        queue = self._queues[gpu]
        while True:
            batch = await queue.get()
            try:
                await self._run_batch(gpu, batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # our bug: answer everyone, keep the GPU alive
                log.exception("batch %d crashed", batch.execute.batch_id)
                pending = [r for r in batch.execute.request_ids if r in batch.origin]
                self._answer(batch, pending, Status.FAILED, "worker error")
                self._done(batch, BatchStatus.FAILED, self._clock(), self._clock())
            finally:
                self._batches.pop(batch.execute.batch_id, None)
                self._finished[batch.execute.batch_id] = batch.fate
                if len(self._finished) > 4096:
                    self._finished.popitem(last=False)

    async def _run_batch(self, gpu: int, batch: _Batch) -> None:
        ex = batch.execute
        earliest = self.offset.to_local(ex.earliest_ns)
        latest = self.offset.to_local(ex.latest_ns)
        tolerance = max(
            self.config.late_tolerance_ns,
            int(self.config.late_tolerance_fraction * max(0, ex.expected_ns)),
        )
        now = self._clock()
        verdict = check_window(
            now,
            earliest,
            latest,
            max_lead_ns=self.config.max_lead_ns,
            late_tolerance_ns=tolerance,
        )
        if verdict is WindowVerdict.TOO_EARLY:
            self._refuse(batch, BatchStatus.TOO_EARLY, now)
            return
        if not batch.complete.is_set():
            # wait for the payloads, but never past the latest start: a precise wake-up
            # at the deadline races the completion event
            give_up = latest + tolerance - self.config.payload_guard_ns
            if give_up > now:
                timeout = asyncio.ensure_future(self._wakeups.sleep_until(give_up))
                done = asyncio.ensure_future(batch.complete.wait())
                await asyncio.wait((timeout, done), return_when=asyncio.FIRST_COMPLETED)
                timeout.cancel()
                done.cancel()
        if self._clock() < earliest:
            await self._wakeups.sleep_until(earliest)
        start = self._clock()
        verdict = check_window(
            start,
            earliest,
            latest,
            max_lead_ns=self.config.max_lead_ns,
            late_tolerance_ns=tolerance,
        )
        if verdict is not WindowVerdict.START:
            self._refuse(batch, BatchStatus.TOO_LATE, start)
            return
        self.start_lateness.add(start - earliest)
        ids: list[int] = []
        inputs: list[Inputs] = []
        for rid in ex.request_ids:
            data = batch.inputs.get(rid)
            if data is None or rid in batch.answered:
                continue  # payload never came (answered when it does) or already answered
            try:
                self.executor.validate(ex.model, data)
            except ValueError as exc:
                self.counters["bad_requests"] += 1
                self._answer(batch, [rid], Status.BAD_REQUEST, str(exc))
                continue
            ids.append(rid)
            inputs.append(data)
        if not ids:
            self._done(batch, BatchStatus.OK, start, self._clock(), 0)
            return
        outcomes = await self.executor.run(gpu, ex.model, inputs)
        end = self._clock()
        self._deliver(batch, ids, outcomes)
        self.counters["batches"] += 1
        self.counters["requests"] += len(ids)
        self.recent.append((gpu, len(ids), start, end))
        self._done(batch, BatchStatus.OK, start, end, len(ids))

    def _refuse(self, batch: _Batch, status: BatchStatus, now: int) -> None:
        ex = batch.execute
        key = "too_late" if status is BatchStatus.TOO_LATE else "too_early"
        self.counters[key] += 1
        reason = (
            "the worker could not start the batch before its latest start"
            if status is BatchStatus.TOO_LATE
            else "the batch's window opens implausibly far ahead (clock mismatch?)"
        )
        code = Status.DEADLINE_EXCEEDED if status is BatchStatus.TOO_LATE else Status.FAILED
        self._answer(batch, list(batch.origin), code, reason)
        batch.fate = reason
        self._done(batch, status, now, now, 0)
        log.warning("batch %d refused: %s", ex.batch_id, status.name)

    def _done(self, batch: _Batch, status: BatchStatus, start: int, end: int, ran: int | None = None) -> None:
        """Report to the scheduler; ``ran`` is how many requests actually executed."""
        ex = batch.execute
        self._send_ctrl(
            Done(
                ex.batch_id,
                ex.gpu,
                int(status),
                self.offset.to_remote(start),
                self.offset.to_remote(end),
                len(ex.request_ids) if ran is None else ran,
            )
        )

    def _deliver(self, batch: _Batch, ids: list[int], outcomes: list[Any]) -> None:
        by_fe: dict[bytes, list[tuple[int, Any]]] = {}
        if len(outcomes) != len(ids):
            outcomes = ["executor returned the wrong number of outputs"] * len(ids)
        for rid, out in zip(ids, outcomes):
            by_fe.setdefault(batch.origin[rid], []).append((rid, out))
        for identity, items in by_fe.items():
            rids: list[int] = []
            statuses: list[int] = []
            errors: list[str] = []
            metas: list[tuple[TensorMeta, ...]] = []
            buffers: list[Any] = []
            for rid, out in items:
                rids.append(rid)
                if isinstance(out, str):
                    self.counters["failed"] += 1
                    statuses.append(int(Status.FAILED))
                    errors.append(out)
                    metas.append(())
                    continue
                try:
                    m, b = arrays.pack(out)
                except Exception as exc:  # an output we cannot send: that request fails
                    statuses.append(int(Status.FAILED))
                    errors.append(f"unsendable output: {exc}")
                    metas.append(())
                    continue
                statuses.append(int(Status.OK))
                errors.append("")
                metas.append(m)
                buffers.extend(b)
            msg = Results(batch.execute.batch_id, tuple(rids), tuple(statuses), tuple(errors), tuple(metas))
            self._send_data(identity, msg, buffers)

    def _answer(self, batch: _Batch, rids: list[int], status: Status, reason: str) -> None:
        by_fe: dict[bytes, list[int]] = {}
        for rid in rids:
            identity = batch.origin.get(rid)
            if identity is not None:
                by_fe.setdefault(identity, []).append(rid)
            batch.answered.add(rid)
        for identity, ids in by_fe.items():
            n = len(ids)
            msg = Results(batch.execute.batch_id, tuple(ids), (int(status),) * n, (reason,) * n, ((),) * n)
            self._send_data(identity, msg)

    # ---------------------------------------------------------------- plumbing

    def _register(self, now: int) -> None:
        """Send the registration; a send that could not leave (not connected yet) is
        retried at the next heartbeat, one that left after ``register_retry_ns``."""
        assert self._register_msg is not None
        self._register_sent_ns = now if self._send_ctrl(self._register_msg) else 0

    def _send_ctrl(self, msg: Any) -> bool:
        assert self._ctrl is not None
        sent = True
        try:
            self._ctrl.send_multipart(encode(msg), zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # not connected: heartbeats and registration retry
            sent = False
            level = logging.DEBUG if isinstance(msg, (Heartbeat, RegisterWorker)) else logging.WARNING
            log.log(level, "send %s to scheduler failed: %s", type(msg).__name__, exc)
        if self._ctrl_reader is not None:
            self._ctrl_reader.poke()  # a send can swallow the descriptor's read edge
        return sent

    def _send_data(self, identity: bytes, msg: Any, buffers: Sequence[Any] = ()) -> None:
        assert self._data is not None
        try:
            self._data.send_multipart([identity, *encode(msg, buffers)], zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            log.warning("send %s to frontend %r failed: %s", type(msg).__name__, identity, exc)
        if self._data_reader is not None:
            self._data_reader.poke()

    async def _drain(self) -> None:
        """SIGTERM: tell the scheduler (no new batches), finish what is queued or running
        for up to ``drain_timeout_ns``; the rest is answered by the frontends' sweep."""
        if self._registered is not None and self._registered.is_set():
            self._send_ctrl(Leaving(self.name))
        deadline = self._clock() + self.config.drain_timeout_ns
        while self._batches and self._clock() < deadline:
            # look every 10 ms, and at the deadline itself
            await self._time.sleep_until(min(self._clock() + _DRAIN_POLL_NS, deadline))
        if self._batches:
            log.warning("drain timed out with %d batches left", len(self._batches))

    async def _heartbeat_loop(self) -> None:
        """Heartbeats from the serving loop itself (a wedged loop sends none); while not
        registered, registration is retried at the same pace."""
        while True:
            self.heartbeat(self._clock())
            await self._time.sleep(self._heartbeat_s)

    def heartbeat(self, now: int) -> None:
        """One heartbeat tick: a Heartbeat; while not registered, the registration again
        once ``register_retry_ns`` has passed since it last left (at once if it could
        not leave)."""
        self._send_ctrl(Heartbeat(now))
        if (
            self._registered is not None
            and not self._registered.is_set()
            and now - self._register_sent_ns >= self.config.register_retry_ns
        ):
            assert self._register_msg is not None
            self._register(now)

    async def _orphan_sweep(self) -> None:
        while True:
            await self._time.sleep(ORPHAN_SWEEP_S)
            self.sweep_orphans(self._clock())

    def sweep_orphans(self, now: int) -> list[int]:
        """Answer FAILED the payloads of batches whose Execute has not come within
        ``orphan_timeout_ns`` of the first of them; returns those batch ids."""
        swept = []
        for batch_id in list(self._early):
            entries = self._early[batch_id]
            if now - entries[0][3] < self.config.orphan_timeout_ns:
                continue
            del self._early[batch_id]
            swept.append(batch_id)
            for identity, payloads, _, _ in entries:
                n = len(payloads.request_ids)
                self._send_data(
                    identity,
                    Results(
                        batch_id,
                        payloads.request_ids,
                        (int(Status.FAILED),) * n,
                        ("the worker never received this batch's Execute",) * n,
                        ((),) * n,
                    ),
                )
        return swept
