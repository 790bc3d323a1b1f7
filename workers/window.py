"""The execution-window check (pure): may a batch start now?

Theory of operation: the scheduler plans every batch with a window ``[earliest, latest]``
(Clockwork's action window). A worker starts a batch only inside it, converted to its own
clock. Too early by more than ``max_lead_ns`` means the clocks disagree or the plan is
wrong: refuse rather than hold a GPU idle. Just early: wait (the caller sleeps to
``earliest``). Past ``latest`` (plus an optional tolerance): refuse, because the head
request would miss its deadline; the worker says so with an explicit status, never
silently.
"""

from __future__ import annotations

import enum

__all__ = ["WindowVerdict", "check_window"]


class WindowVerdict(enum.Enum):
    START = "start"  # inside the window: go
    WAIT = "wait"  # before earliest, within max_lead: sleep until earliest
    TOO_EARLY = "too_early"  # earliest is implausibly far ahead: refuse
    TOO_LATE = "too_late"  # past latest: refuse


def check_window(
    now_ns: int,
    earliest_ns: int,
    latest_ns: int,
    *,
    max_lead_ns: int = 5_000_000_000,
    late_tolerance_ns: int = 0,
) -> WindowVerdict:
    """Verdict for starting at ``now_ns``; all times on the same (local) clock."""
    if now_ns > latest_ns + late_tolerance_ns:
        return WindowVerdict.TOO_LATE
    if now_ns >= earliest_ns:
        return WindowVerdict.START
    if earliest_ns - now_ns > max_lead_ns:
        return WindowVerdict.TOO_EARLY
    return WindowVerdict.WAIT
