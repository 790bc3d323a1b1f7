"""central.frontend.server: the request lifecycle table and its enforcement.

Every accepted request ends in exactly one reply; the table ``TRANSITIONS`` is the whole
of what may happen to it, and ``Frontend._move`` raises on anything else (our bug, not
the peer's). The frontend is constructed but never served: no socket is created.
"""

from __future__ import annotations

import itertools

import pytest

from central.frontend.server import TRANSITIONS, Frontend, FrontendConfig, Phase, _Pending

LEGAL = {
    (Phase.QUEUED, Phase.SHIPPED),  # routed: payload pushed to a worker
    (Phase.QUEUED, Phase.ANSWERED),  # dropped, refused or swept before it ran
    (Phase.SHIPPED, Phase.ANSWERED),  # the worker's result (or a failure) relayed
    (Phase.SHIPPED, Phase.SHIPPED),  # re-dispatched after its worker was declared lost
}


@pytest.fixture
def frontend() -> Frontend:
    # a stand-in context: constructing a Frontend must not need ZeroMQ at all
    return Frontend(FrontendConfig(), context=object())  # type: ignore[arg-type]


def pending(phase: Phase = Phase.QUEUED) -> _Pending:
    return _Pending(b"client-1", 7, "m", (("x", "float32", (2,)),), [b"\x00" * 8], 1_000, 101_000, phase)


def test_table_covers_every_phase() -> None:
    assert set(TRANSITIONS) == set(Phase)


def test_table_allows_exactly_the_documented_moves() -> None:
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == LEGAL


def test_answered_is_terminal() -> None:
    assert TRANSITIONS[Phase.ANSWERED] == frozenset()


def test_every_phase_can_reach_answered() -> None:
    # nothing can get stuck: each phase leads to the one terminal reply
    for phase in Phase:
        seen, frontier = {phase}, [phase]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert Phase.ANSWERED in seen


def test_new_pending_requests_are_queued() -> None:
    p = _Pending(b"c", 1, "m", (), [], 0, 1)
    assert p.phase is Phase.QUEUED


def test_the_normal_path(frontend: Frontend) -> None:
    p = pending()
    frontend._move(p, Phase.SHIPPED)
    assert p.phase is Phase.SHIPPED
    frontend._move(p, Phase.ANSWERED)
    assert p.phase is Phase.ANSWERED


def test_a_queued_request_can_be_answered_directly(frontend: Frontend) -> None:
    p = pending()
    frontend._move(p, Phase.ANSWERED)
    assert p.phase is Phase.ANSWERED


@pytest.mark.parametrize(
    "start, target",
    sorted(set(itertools.product(Phase, Phase)) - LEGAL, key=lambda t: (t[0].value, t[1].value)),
    ids=lambda ph: ph.name,
)
def test_illegal_moves_raise_and_change_nothing(frontend: Frontend, start: Phase, target: Phase) -> None:
    p = pending(start)
    with pytest.raises(RuntimeError, match=f"illegal request transition {start.name} -> {target.name}"):
        frontend._move(p, target)
    assert p.phase is start


def test_a_second_answer_is_a_bug(frontend: Frontend) -> None:
    p = pending()
    frontend._move(p, Phase.ANSWERED)
    with pytest.raises(RuntimeError, match="ANSWERED -> ANSWERED"):
        frontend._move(p, Phase.ANSWERED)


def test_construction_starts_with_nothing_in_flight(frontend: Frontend) -> None:
    stats = frontend.stats()
    assert stats["pending"] == 0 and stats["index"] is None and stats["workers"] == 0
    assert all(v == 0 for v in stats["counters"].values())
