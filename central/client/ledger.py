"""The wire ledger: open-loop load on a raw socket that records every reply frame.

Theory of operation: the SDK gives each call one answer, so it can neither show a request
that was never answered (its own timeout turns that into ``Unavailable``) nor one that
was answered twice (it drops the second reply). The ledger is the check behind every
"exactly one answer" claim, so it uses no SDK code above the wire: one DEALER socket, one
``Infer`` per planned arrival with a unique tag, and every ``Reply`` frame that comes
back appended to its request's list with the time it was read. It fires the requests at
their planned times without waiting for answers (open loop), runs fault ``events`` at
their offsets, waits until every request has an answer or the last deadline plus
``grace_s`` has passed, and then keeps listening for ``listen_s`` more, so that a late
duplicate is still seen. ``LedgerRun`` then names the requests never answered and those
answered more than once.

It is bounded in count and time whatever the server does: it sends exactly the planned
requests and stops at ``last arrival + SLO + grace_s + listen_s`` at the latest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from central.protocol import DEFAULT_LIMITS, Infer, RemoteProtocolError, Reply, Status, arrays, decode, encode

__all__ = ["LedgerRun", "play", "NO_ANSWER"]

NO_ANSWER = -1  # the status column of a request that got no reply at all

# A fault or other action to run at an offset (seconds) from the start of the load.
Event = tuple[float, Callable[[], None]]


@dataclass
class LedgerRun:
    """Every request of one run and every reply frame it got.

    ``replies[i]`` lists ``(received_ns, status, error)`` for request ``i`` in the order
    they were read; times are this process's ``time.monotonic_ns()``.
    """

    models: list[str]
    planned_ns: np.ndarray[Any, Any]  # absolute, when request i was due
    sent_ns: np.ndarray[Any, Any]  # absolute, when it left (0: not sent, the run was cut short)
    slo_ms: float
    start_ns: int  # the run's time zero (offsets count from it)
    replies: list[list[tuple[int, int, str]]] = field(default_factory=list)
    stray: int = 0  # replies whose tag names no request of this run (a bug if > 0)
    listened_ns: int = 0  # how long it listened after the last first answer

    def __len__(self) -> int:
        return len(self.models)

    def never_answered(self) -> list[int]:
        """Indices of sent requests with no reply at all."""
        return [i for i, r in enumerate(self.replies) if not r and self.sent_ns[i]]

    def answered_twice(self) -> list[int]:
        """Indices of requests with more than one reply."""
        return [i for i, r in enumerate(self.replies) if len(r) > 1]

    def one_answer_each(self) -> bool:
        """True when every sent request got exactly one reply and no reply was stray."""
        return not self.never_answered() and not self.answered_twice() and not self.stray

    def report(self) -> str:
        """What went wrong, with examples; "" when every request got exactly one answer."""
        parts = []
        lost = self.never_answered()
        if lost:
            parts.append(
                f"{len(lost)} of {len(self)} never answered "
                f"(e.g. requests {lost[:5]}, sent at "
                f"{[round((self.sent_ns[i] - self.start_ns) / 1e9, 3) for i in lost[:5]]} s)"
            )
        twice = self.answered_twice()
        if twice:
            ex = [
                (i, [(Status(s).name, round((t - self.sent_ns[i]) / 1e6, 1)) for t, s, _ in self.replies[i]])
                for i in twice[:3]
            ]
            parts.append(f"{len(twice)} answered more than once (e.g. {ex}: status, ms after send)")
        if self.stray:
            parts.append(f"{self.stray} replies with a tag no request had")
        return "; ".join(parts)

    def statuses(self) -> dict[str, int]:
        """Count of requests by their first answer's status name (``NO_ANSWER`` for none)."""
        out: dict[str, int] = {}
        for r in self.replies:
            key = Status(r[0][1]).name if r else "NO_ANSWER"
            out[key] = out.get(key, 0) + 1
        return out

    def records(self, model: str | None = None) -> np.ndarray[Any, Any]:
        """``[planned_ns, sent_ns, done_ns, status, replies]`` per request (of ``model``).

        ``done_ns`` and ``status`` are the first reply's (``NO_ANSWER`` and 0 for none),
        ``replies`` how many came: the layout ``central.client.load.summarize`` reads.
        """
        idx = [i for i, m in enumerate(self.models) if model is None or m == model]
        rec = np.zeros((len(idx), 5), dtype=np.int64)
        for row, i in enumerate(idx):
            r = self.replies[i]
            rec[row] = (
                self.planned_ns[i],
                self.sent_ns[i],
                r[0][0] if r else 0,
                r[0][1] if r else NO_ANSWER,
                len(r),
            )
        return rec

    def first_answer_latency_ns(self) -> np.ndarray[Any, Any]:
        """First reply time minus send time per request; -1 for none."""
        return np.array(
            [r[0][0] - self.sent_ns[i] if r else -1 for i, r in enumerate(self.replies)], dtype=np.int64
        )


def play(
    address: str,
    offsets_ns: np.ndarray[Any, Any] | Sequence[int],
    models: str | Sequence[str],
    slo_ms: float,
    *,
    send_slo: bool = False,
    payload_floats: int = 4,
    events: Sequence[Event] = (),
    grace_s: float = 3.0,
    listen_s: float = 1.0,
    start_ns: int | None = None,
    socket_options: Mapping[int, int | bytes] | None = None,
    context: zmq.Context[Any] | None = None,
    on_first_answer: Callable[[], None] | None = None,
) -> LedgerRun:
    """Send one ``Infer`` per offset (sorted ns from the start) and record every reply.

    ``models`` is one model name for every request or one per request. The frontend
    applies its default SLO unless ``send_slo`` (then ``slo_ms`` travels with each
    request); ``slo_ms`` also bounds how long the ledger waits. Each payload is
    ``payload_floats`` float32 values, the first being the request's index. ``start_ns``
    (monotonic) is time zero; by default 50 ms from now. ``socket_options`` are set on the
    DEALER before it connects (CURVE keys, a token); ``on_first_answer`` is called as
    each request gets its first reply (a progress bar). Returns the ``LedgerRun``.
    """
    offsets = np.asarray(offsets_ns, dtype=np.int64)
    if len(offsets) > 1 and np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be sorted")
    names = [models] * len(offsets) if isinstance(models, str) else list(models)
    if len(names) != len(offsets):
        raise ValueError(f"{len(names)} model names for {len(offsets)} offsets")
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    for opt, value in (socket_options or {}).items():
        sock.setsockopt(opt, value)
    t0 = start_ns if start_ns is not None else time.monotonic_ns() + 50_000_000
    run = LedgerRun(names, offsets + t0, np.zeros(len(offsets), np.int64), slo_ms, t0, [[] for _ in offsets])
    slo_ns = max(1, int(slo_ms * 1e6)) if send_slo else 0
    pending = sorted(events, key=lambda e: e[0])
    answered = 0
    last_first_answer = 0

    def receive() -> None:
        nonlocal answered, last_first_answer
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            now = time.monotonic_ns()
            try:
                msg, _ = decode([frames[0].bytes, *(f.buffer for f in frames[1:])], DEFAULT_LIMITS)
            except RemoteProtocolError:
                run.stray += 1
                continue
            if not isinstance(msg, Reply):
                run.stray += 1
                continue
            i = msg.tag - 1
            if not 0 <= i < len(offsets) or not run.sent_ns[i]:
                run.stray += 1
                continue
            if not run.replies[i]:
                answered += 1
                last_first_answer = now
                if on_first_answer is not None:
                    on_first_answer()
            run.replies[i].append((now, int(msg.status), msg.error))

    x = np.zeros(max(1, payload_floats), dtype=np.float32)
    hard_end = t0 + (int(offsets[-1]) if len(offsets) else 0) + int((slo_ms / 1e3 + grace_s) * 1e9)
    try:
        sock.connect(address)
        i = 0
        n = len(offsets)
        while True:
            now = time.monotonic_ns()
            while pending and now - t0 >= pending[0][0] * 1e9:
                pending.pop(0)[1]()
            while i < n and now >= run.planned_ns[i]:
                x[0] = float(i)
                metas, buffers = arrays.pack({"x": x})
                sock.send_multipart(encode(Infer(i + 1, names[i], slo_ns, metas), buffers), copy=False)
                run.sent_ns[i] = time.monotonic_ns()
                i += 1
            receive()
            now = time.monotonic_ns()
            if i == n and not pending and (answered == n or now >= hard_end):
                break
            due = min(
                int(run.planned_ns[i]) if i < n else hard_end,
                int(t0 + pending[0][0] * 1e9) if pending else hard_end,
            )
            wait_ns = due - now
            if wait_ns > 1_500_000:
                sock.poll(min(50, (wait_ns - 1_000_000) // 1_000_000))
            elif wait_ns > 0:
                time.sleep(wait_ns / 1e9)  # sub-ms: the kernel's sleep is finer than poll's
        # keep listening: a duplicate may come after every request's first answer
        listen_from = time.monotonic_ns()
        listen_end = listen_from + int(listen_s * 1e9)
        while (now := time.monotonic_ns()) < listen_end:
            if sock.poll(max(1, (listen_end - now) // 1_000_000)):
                receive()
        run.listened_ns = time.monotonic_ns() - max(listen_from, last_first_answer)
    finally:
        sock.close(linger=0)
    return run
