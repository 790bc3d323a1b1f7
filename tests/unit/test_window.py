"""workers.window.check_window: the verdict at and around every boundary of the window."""

from __future__ import annotations

import pytest

from workers.window import WindowVerdict, check_window

START, WAIT, TOO_EARLY, TOO_LATE = (
    WindowVerdict.START,
    WindowVerdict.WAIT,
    WindowVerdict.TOO_EARLY,
    WindowVerdict.TOO_LATE,
)

EARLIEST = 10_000_000
LATEST = 12_000_000
LEAD = 5_000_000  # max_lead_ns
TOL = 300_000  # late_tolerance_ns


@pytest.mark.parametrize(
    "now, verdict",
    [
        (EARLIEST - LEAD - 1, TOO_EARLY),  # one ns beyond the plausible lead
        (EARLIEST - LEAD, WAIT),  # exactly the max lead: still worth waiting
        (EARLIEST - 1, WAIT),
        (EARLIEST, START),  # exactly earliest
        ((EARLIEST + LATEST) // 2, START),
        (LATEST, START),  # exactly latest
        (LATEST + 1, TOO_LATE),  # no tolerance by default
    ],
)
def test_verdicts_without_tolerance(now: int, verdict: WindowVerdict) -> None:
    assert check_window(now, EARLIEST, LATEST, max_lead_ns=LEAD) is verdict


@pytest.mark.parametrize(
    "now, verdict",
    [
        (LATEST + 1, START),
        (LATEST + TOL, START),  # exactly latest + tolerance
        (LATEST + TOL + 1, TOO_LATE),
    ],
)
def test_late_tolerance_extends_latest(now: int, verdict: WindowVerdict) -> None:
    assert check_window(now, EARLIEST, LATEST, max_lead_ns=LEAD, late_tolerance_ns=TOL) is verdict


def test_default_max_lead_is_five_seconds() -> None:
    assert check_window(EARLIEST - 5_000_000_000, EARLIEST, LATEST) is WAIT
    assert check_window(EARLIEST - 5_000_000_001, EARLIEST, LATEST) is TOO_EARLY


def test_point_window_starts_only_at_its_instant() -> None:
    assert check_window(EARLIEST, EARLIEST, EARLIEST) is START
    assert check_window(EARLIEST - 1, EARLIEST, EARLIEST) is WAIT
    assert check_window(EARLIEST + 1, EARLIEST, EARLIEST) is TOO_LATE


def test_too_late_wins_over_too_early_for_an_inverted_window() -> None:
    # latest < now < earliest: the head request's deadline is already lost
    assert check_window(5, 10, 4) is TOO_LATE


def test_times_may_be_negative() -> None:
    # converted from another clock, local times can be below zero
    assert check_window(-5, -10, -1) is START
