"""The stall canary: a process that only sleeps, so that it can say when the machine stalled.

Theory of operation: a live timing check on a shared machine (this project's CI runs on a
2-core VM that stops processes for 10-40 ms at times) cannot tell a regression from a
stall by looking at latencies alone. The canary is a separate, nearly idle process that
asks to wake every ``period_ms`` and notes every wake-up later than ``floor_ms``: the
interval from when it should have woken to when it did is a span in which it, and most
likely every process of the run, did not run. A check then replays the same arrivals
through the simulator with those spans as pauses (``bench.sim.SimConfig.pauses``) and
judges the live run against that, so a stall is discounted by exactly what it costs the
simulated system and a slower system is still caught.

What it cannot see: a delay of one process only (the scheduler busy on its own core) is
not a stall of the canary. Times are ``time.monotonic_ns()``, the system-wide monotonic
clock, so they compare with the wire ledger's. The child is bounded in time
(``max_s``) and exits when its stdin closes, so it cannot outlive the check.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

import numpy as np

__all__ = ["StallCanary"]


class StallCanary:
    """Run the canary beside a live check: ``with StallCanary() as canary: ...``.

    After the block, ``canary.stalls`` is an ``(n, 2)`` int64 array of ``[from_ns, to_ns)``
    spans (monotonic ns) in which the canary overslept by more than ``floor_ms``;
    ``canary.wakeups`` counts its wake-ups (a canary that never woke proves nothing, and
    ``stalls`` raises if it did not run).
    """

    def __init__(self, period_ms: float = 1.0, floor_ms: float = 2.0, max_s: float = 900.0) -> None:
        if period_ms <= 0 or floor_ms <= 0 or max_s <= 0:
            raise ValueError("period_ms, floor_ms and max_s must be > 0")
        self.period_ms, self.floor_ms, self.max_s = period_ms, floor_ms, max_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._stalls: np.ndarray[Any, Any] | None = None
        self.wakeups = 0

    def __enter__(self) -> StallCanary:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "central.client.canary",
                str(self.period_ms),
                str(self.floor_ms),
                str(self.max_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != b"ready":  # it runs before the check does
            self._kill()
            raise RuntimeError("the stall canary did not start")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            out, _ = proc.communicate(timeout=10.0)  # closes stdin: the canary reports
        except subprocess.TimeoutExpired:
            self._kill()
            raise
        report = json.loads(out)
        self.wakeups = int(report["wakeups"])
        self._stalls = np.asarray(report["stalls"], dtype=np.int64).reshape(-1, 2)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    @property
    def stalls(self) -> np.ndarray[Any, Any]:
        if self._stalls is None or self.wakeups == 0:
            raise RuntimeError("the stall canary has not run (use it as a context manager)")
        return self._stalls

    def stalled_ms(self) -> float:
        """The total time the canary was stalled beyond its floor, in ms."""
        s = self.stalls
        return float(np.sum(s[:, 1] - s[:, 0])) / 1e6


def _run(period_ms: float, floor_ms: float, max_s: float) -> None:
    period = period_ms / 1e3
    floor_ns = int(floor_ms * 1e6)
    period_ns = int(period_ms * 1e6)
    stalls: list[tuple[int, int]] = []
    wakeups = 0
    stdin = sys.stdin.fileno()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    end = time.monotonic_ns() + int(max_s * 1e9)
    prev = time.monotonic_ns()
    while prev < end:
        readable, _, _ = select.select([stdin], [], [], period)  # sleeps, or sees EOF
        now = time.monotonic_ns()
        wakeups += 1
        due = prev + period_ns
        if now - due > floor_ns:
            stalls.append((due, now))
        prev = now
        if readable and not os.read(stdin, 4096):
            break
    json.dump({"wakeups": wakeups, "stalls": stalls}, sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    _run(float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
