"""The policy package's surface: config validation, the factory, the queue, its import rules."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

import central.policy as policy_pkg
from central.policy import (
    DeadlineQueue,
    PolicyConfig,
    Profile,
    Request,
    RequestsArrived,
    SymphonyPolicy,
    Tick,
    make_policy,
    policy_names,
)

POLICY_DIR = pathlib.Path(policy_pkg.__file__).parent
FORBIDDEN = {
    "time", "random", "asyncio", "socket", "threading", "logging.handlers", "selectors",
    "subprocess", "multiprocessing", "secrets", "datetime", "os",
}  # fmt: skip


# ---------------------------------------------------------------------- config


def test_config_defaults() -> None:
    cfg = PolicyConfig()
    assert cfg.dispatch_cost_ns == 500_000
    assert cfg.reply_cost_ns == 300_000
    assert cfg.timer_slack_ns == 200_000
    assert cfg.refit is True and cfg.refit_window == 256 and cfg.stall_window == 256
    assert cfg.margin_percentile == 0.99
    assert cfg.shed_fraction == 0.95
    assert cfg.defer_headroom == 2.0
    assert dict(cfg.profiles) == {}


def test_config_keeps_a_read_only_copy_of_profiles() -> None:
    profiles = {"m": Profile(1000, 2000)}
    cfg = PolicyConfig(profiles=profiles)
    profiles["other"] = Profile(1, 1)
    assert set(cfg.profiles) == {"m"}
    with pytest.raises(TypeError):
        cfg.profiles["x"] = Profile(1, 1)  # type: ignore[index]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dispatch_cost_ns", -1),
        ("reply_cost_ns", -1),
        ("timer_slack_ns", -1),
        ("timer_slack_ns", 1.5),
        ("dispatch_cost_ns", True),
        ("refit_window", 1),
        ("stall_window", 0),
        ("rate_window_ns", 0),
        ("refit", 1),
        ("margin_percentile", 0.0),
        ("margin_percentile", 1.5),
        ("shed_fraction", -0.1),
        ("shed_fraction", 2.0),
        ("defer_headroom", -1.0),
        ("defer_headroom", float("inf")),
        ("defer_headroom", True),
        ("profiles", {"m": Profile(0, 1)}),
        ("profiles", {"m": Profile(1, 1, max_batch=0)}),
        ("profiles", {"": Profile(1, 1)}),
        ("profiles", {"m": (1, 2)}),
        ("profiles", [("m", Profile(1, 1))]),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field if field != "profiles" else "profile"):
        PolicyConfig(**{field: value})  # type: ignore[arg-type]


# --------------------------------------------------------------------- factory


def test_make_policy_builds_symphony() -> None:
    assert isinstance(make_policy("symphony", PolicyConfig()), SymphonyPolicy)
    assert isinstance(make_policy("symphony"), SymphonyPolicy)
    assert "symphony" in policy_names()


def test_make_policy_lists_known_names_on_a_typo() -> None:
    with pytest.raises(ValueError, match="symphony"):
        make_policy("symphoni", PolicyConfig())


def test_idle_policy_has_nothing_to_do() -> None:
    policy = make_policy("symphony")
    assert policy.handle(Tick(), 0) == []
    assert policy.next_wakeup_ns() is None
    assert policy.snapshot().models == {}


def test_time_must_not_go_backwards() -> None:
    policy = make_policy("symphony")
    policy.handle(Tick(), 10)
    with pytest.raises(ValueError, match="backwards"):
        policy.handle(Tick(), 9)


def test_non_events_are_refused() -> None:
    with pytest.raises(TypeError):
        make_policy("symphony").handle("tick", 0)  # type: ignore[arg-type]


def test_empty_arrivals_are_harmless() -> None:
    assert make_policy("symphony").handle(RequestsArrived(()), 0) == []


# ----------------------------------------------------------------------- queue


def req(rid: int, deadline: int) -> Request:
    return Request(rid, "m", deadline, 0)


def test_queue_keeps_deadline_order_and_arrival_order_on_ties() -> None:
    q = DeadlineQueue()
    for rid, deadline in [(1, 10), (2, 30), (3, 20), (4, 20), (5, 5), (6, 30)]:
        q.push(req(rid, deadline))
    assert len(q) == 6 and q.head().request_id == 5
    assert [r.request_id for r in q.pop_front(4)] == [5, 1, 3, 4]
    assert q.count_before(30) == 0 and q.count_before(31) == 2
    assert q.deadline_at(1) == 30
    assert [r.request_id for r in q.clear()] == [2, 6]
    assert not q
    with pytest.raises(IndexError):
        q.head()


def test_queue_compacts_its_dead_prefix() -> None:
    q = DeadlineQueue()
    for rid in range(5000):
        q.push(req(rid, rid))
    taken: list[int] = []
    while q:
        q.push(req(10_000 + len(taken), 10_000 + len(taken)))  # keep it from emptying
        taken.extend(r.request_id for r in q.pop_front(7))
        if len(taken) > 6000:
            break
    assert taken == sorted(taken)
    assert len(q._items) < 3 * len(q) + 2048


# ------------------------------------------------------------- package rules


def _imports(path: pathlib.Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.py")), ids=lambda p: p.name)
def test_policy_imports_only_the_allowed_standard_library(path: pathlib.Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "central":
            # its own modules, and the wire conventions (stdlib only; test_architecture.py)
            assert name.startswith(("central.policy", "central.protocol.conventions")), (
                f"{path.name} imports {name}"
            )
            continue
        assert top in sys.stdlib_module_names or top == "__future__", f"{path.name}: {name}"
        assert name not in FORBIDDEN and top not in FORBIDDEN, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", sorted(POLICY_DIR.glob("*.py")), ids=lambda p: p.name)
def test_policy_modules_explain_themselves(path: pathlib.Path) -> None:
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc) > 100, f"{path.name} needs a theory-of-operation docstring"
    assigned = {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "__all__" in assigned, f"{path.name} must declare __all__"
    assert len(path.read_text().splitlines()) <= 600
