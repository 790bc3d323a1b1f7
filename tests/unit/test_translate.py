"""central.runtime.translate: wire messages <-> policy events and actions.

Pure functions: messages and actions are built through their public constructors and the
results compared whole.
"""

from __future__ import annotations

import pytest

from central.policy.types import (
    BatchDone,
    BatchStatus,
    Dispatch,
    Drop,
    DropReason,
    Profile,
    Request,
    RequestsArrived,
)
from central.protocol import Done, DropRequests, Execute, RemoteProtocolError, Requests, Route
from central.protocol.conventions import DROP_DETAIL, FRONTEND_SHIFT, frontend_of, make_request_id
from central.runtime.translate import (
    dispatch_to_messages,
    done_to_event,
    drop_to_messages,
    gpu_profiles,
    requests_to_event,
)


def rid(frontend: int, seq: int) -> int:
    return make_request_id(frontend, seq)


# -------------------------------------------------------------------- request ids


@pytest.mark.parametrize("frontend", [0, 1, 7, 1000])
@pytest.mark.parametrize("seq", [0, 1, 12345, (1 << FRONTEND_SHIFT) - 1])
def test_request_id_carries_the_frontend_index(frontend: int, seq: int) -> None:
    r = make_request_id(frontend, seq)
    assert frontend_of(r) == frontend
    assert r & ((1 << FRONTEND_SHIFT) - 1) == seq


def test_request_ids_are_unique_across_frontends() -> None:
    ids = {make_request_id(fe, seq) for fe in range(4) for seq in range(100)}
    assert len(ids) == 400


def test_sequence_wraps_within_its_bits_without_touching_the_frontend() -> None:
    r = make_request_id(3, 1 << FRONTEND_SHIFT)
    assert frontend_of(r) == 3
    assert r == make_request_id(3, 0)


# ---------------------------------------------------------------------- requests


def test_requests_budgets_become_scheduler_deadlines() -> None:
    now, one_way = 5_000_000_000, 50_000
    msg = Requests((rid(0, 1), rid(2, 9)), ("resnet", "bert"), (25_000_000, 1_000), (64, 4096))
    event = requests_to_event(msg, now, one_way)
    assert event == RequestsArrived(
        (
            Request(rid(0, 1), "resnet", now - one_way + 25_000_000, now, 64),
            Request(rid(2, 9), "bert", now - one_way + 1_000, now, 4096),
        )
    )


def test_requests_with_spent_budget_get_a_past_deadline() -> None:
    # a negative budget (time ran out on the way) is kept: the policy drops it
    event = requests_to_event(Requests((1,), ("m",), (-10,), (1,)), 1_000, 100)
    assert event.requests[0].deadline_ns == 890 < 1_000


def test_empty_requests_message_is_an_empty_event() -> None:
    assert requests_to_event(Requests((), (), (), ()), 1, 0) == RequestsArrived(())


# ---------------------------------------------------------------------- dispatch


def test_dispatch_becomes_one_execute_and_one_route_per_frontend() -> None:
    ids = (rid(1, 10), rid(0, 3), rid(1, 11), rid(2, 1), rid(0, 4))
    action = Dispatch(77, "resnet", 5, ids, 1_000_000, 2_000_000, 8_000_000)
    execute, routes = dispatch_to_messages(action, gpu_index=3, process_id=9)
    assert execute == Execute(77, 3, "resnet", ids, 1_000_000, 2_000_000, 8_000_000)
    assert routes == {
        0: Route(77, 9, 3, (rid(0, 3), rid(0, 4))),
        1: Route(77, 9, 3, (rid(1, 10), rid(1, 11))),
        2: Route(77, 9, 3, (rid(2, 1),)),
    }


def test_dispatch_from_one_frontend_routes_once() -> None:
    ids = (rid(4, 1), rid(4, 2))
    _, routes = dispatch_to_messages(Dispatch(1, "m", 0, ids, 0, 1, 1), 0, 0)
    assert list(routes) == [4]
    assert routes[4].request_ids == ids  # deadline order kept


# -------------------------------------------------------------------------- drop


@pytest.mark.parametrize("reason", list(DropReason))
def test_drop_becomes_one_drop_requests_per_frontend(reason: DropReason) -> None:
    ids = (rid(0, 1), rid(3, 1), rid(0, 2))
    out = drop_to_messages(Drop(ids, reason))
    assert out == {
        0: DropRequests((rid(0, 1), rid(0, 2)), int(reason), DROP_DETAIL[reason]),
        3: DropRequests((rid(3, 1),), int(reason), DROP_DETAIL[reason]),
    }


def test_every_drop_reason_has_a_user_facing_detail() -> None:
    assert set(DROP_DETAIL) == set(DropReason)
    assert all(isinstance(t, str) and t for t in DROP_DETAIL.values())


# -------------------------------------------------------------------------- done


@pytest.mark.parametrize("status", list(BatchStatus))
def test_done_becomes_batch_done_for_that_worker(status: BatchStatus) -> None:
    msg = Done(42, 1, int(status), 1_000, 9_000, 3)
    assert done_to_event(msg, worker_id=17) == BatchDone(42, 17, status, 1_000, 9_000, 3)


def test_done_with_unknown_status_is_the_peers_fault() -> None:
    with pytest.raises(RemoteProtocolError):
        done_to_event(Done(1, 0, 99, 0, 0, 1), worker_id=0)


def test_gpu_profiles_become_policy_profiles() -> None:
    spec = (0, ("a", "b"), (("a", 1_000, 5_000, 32), ("b", 2_000, -100, 8)))
    assert gpu_profiles(spec) == (("a", Profile(1_000, 5_000, 32)), ("b", Profile(2_000, -100, 8)))
