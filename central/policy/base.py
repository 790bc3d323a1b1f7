"""The interface every scheduling policy implements, and the factory that names them.

Theory of operation: a policy is a sans-I/O state machine. A driver (the real-time
runtime loop or the discrete-event simulator) feeds it facts with
``handle(event, now_ns)`` and carries out the commands it returns; it asks
``next_wakeup_ns()`` when to call again with a ``Tick`` and ``snapshot()`` for stats
(a ``stats.PolicySnapshot``, the same typed record for every policy).
Policies are registered here by name so that drivers, the CLI and benchmarks pick one
with a string; baselines join the table behind the same interface. Nothing here reads
a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from central.policy.baselines import (
    EagerPolicy,
    NexusConfig,
    NexusPolicy,
    UncoordinatedConfig,
    UncoordinatedPolicy,
)
from central.policy.config import PolicyConfig
from central.policy.scheduler import SymphonyPolicy
from central.policy.stats import PolicySnapshot
from central.policy.types import Action, Event

__all__ = ["DEFAULT_POLICY", "Policy", "make_policy", "policy_names"]


class Policy(Protocol):
    """What a driver needs from a scheduling policy."""

    def handle(self, event: Event, now_ns: int) -> list[Action]:
        """Apply ``event`` at ``now_ns`` (never earlier than the last call); return actions."""
        ...

    def next_wakeup_ns(self) -> int | None:
        """When the policy next needs a ``Tick`` (scheduler clock); ``None`` when idle."""
        ...

    def snapshot(self) -> PolicySnapshot:
        """The state for stats (``stats.py``); ``as_dict()`` makes it plain JSON-able data."""
        ...


_FACTORIES: dict[str, Callable[[PolicyConfig], Policy]] = {
    "symphony": SymphonyPolicy,
    "uncoordinated": UncoordinatedPolicy,
    "eager": EagerPolicy,
    "nexus": NexusPolicy,
}
# The baselines that take their own knobs (a frozen dataclass), by policy name.
_OPTIONS: dict[str, type] = {
    "uncoordinated": UncoordinatedConfig,
    "nexus": NexusConfig,
}
DEFAULT_POLICY = "symphony"


def policy_names() -> tuple[str, ...]:
    """The names ``make_policy`` accepts, sorted."""
    return tuple(sorted(_FACTORIES))


def make_policy(
    name: str = DEFAULT_POLICY, config: PolicyConfig | None = None, *, options: Any = None
) -> Policy:
    """Build the policy called ``name`` with ``config`` (defaults when ``None``).

    ``options`` are a baseline's own knobs (``UncoordinatedConfig`` for "uncoordinated",
    ``NexusConfig`` for "nexus"); ``None`` means their defaults. Raises ``ValueError``
    naming the known policies when ``name`` is not one of them, and when ``options`` is
    given to a policy that takes none or is of the wrong type.
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        known = ", ".join(policy_names())
        raise ValueError(f"unknown policy {name!r}; known policies: {known}")
    config = config if config is not None else PolicyConfig()
    if options is None:
        return factory(config)
    kind = _OPTIONS.get(name)
    if kind is None or not isinstance(options, kind):
        want = kind.__name__ if kind is not None else "no options"
        raise ValueError(f"policy {name!r} takes {want}, got {type(options).__name__}")
    return _FACTORIES[name](config, options)  # type: ignore[call-arg]
