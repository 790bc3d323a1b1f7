"""The stall canary sees a stop it did not choose, and only that."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from central.client.canary import StallCanary


def test_a_quiet_canary_wakes_often_and_a_stopped_one_reports_the_stop() -> None:
    with StallCanary(period_ms=1.0, floor_ms=2.0) as canary:
        time.sleep(0.3)
        proc = canary._proc
        assert proc is not None
        t0 = time.monotonic_ns()
        os.kill(proc.pid, signal.SIGSTOP)  # a machine stall, as the canary lives it
        time.sleep(0.12)
        os.kill(proc.pid, signal.SIGCONT)
        t1 = time.monotonic_ns()
        time.sleep(0.2)
    assert canary.wakeups > 100  # ~1 ms sleeps for 0.5 s, even on a busy machine
    stalls = canary.stalls
    assert stalls.shape[1] == 2 and (stalls[:, 1] > stalls[:, 0]).all()
    # the stop is one span that covers most of it (it began when a wake-up was due)
    hit = stalls[(stalls[:, 1] >= t1 - 5_000_000) & (stalls[:, 0] <= t1)]
    assert len(hit) == 1, stalls
    start, end = hit[0]
    assert t0 - 2_000_000 <= start and end >= t1 - 1_000_000
    assert end - start >= 100_000_000
    assert canary.stalled_ms() >= 100.0


def test_the_canary_must_have_run_and_refuses_nonsense() -> None:
    canary = StallCanary()
    with pytest.raises(RuntimeError, match="not run"):
        _ = canary.stalls
    with pytest.raises(ValueError):
        StallCanary(period_ms=0)
    with StallCanary() as ran:
        time.sleep(0.05)
    assert ran.stalls.dtype == np.int64
