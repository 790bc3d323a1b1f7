"""Which model shard owns which model, and the rule that rebalances them (DESIGN §5).

Theory of operation. A model's owner is the placement's word if it names the model, else
``conventions.default_shard`` (CRC-32 of the name, the same in every process); it is fixed
on first sight and changes only by ``move``. ``plan`` is the one rebalancing rule, used by
the in-process split (``ShardedPolicy.rebalance``) and by the split scheduler's matcher
process (``central.runtime.matcher``): greedy, the busiest model first, each to the
least-loaded shard (ties: the shard that owns it now, then the lowest index); with a
``ratio``, nothing moves unless the busiest shard carries more than ``ratio`` times the
mean arrival rate. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from central.protocol.conventions import default_shard

__all__ = ["Placement"]


class Placement:
    """Owners of models among ``shards`` shards; see the module docstring."""

    def __init__(self, shards: int, placement: Iterable[tuple[str, int]] = ()) -> None:
        self.shards = shards
        self.owners: dict[str, int] = dict(placement)  # model -> shard, once known

    def owner(self, model: str) -> int:
        """The index of the shard that owns ``model`` (fixed on first sight)."""
        index = self.owners.get(model)
        if index is None:
            index = self.owners[model] = default_shard(model, self.shards)
        return index

    def move(self, model: str, to: int) -> int:
        """Make shard ``to`` the owner of ``model``; returns the old owner.

        Raises ``ValueError`` for a shard index out of range.
        """
        if not 0 <= to < self.shards:
            raise ValueError(f"no shard {to}: there are {self.shards}")
        src = self.owner(model)
        self.owners[model] = to
        return src

    def plan(
        self, rates: Iterable[tuple[float, str]], ratio: float | None = None
    ) -> list[tuple[str, int, int]]:
        """The moves ``(model, from, to)`` that even out the shards' arrival rates
        (``(rate, model)`` pairs, any unit); none when ``ratio`` is given and the busiest
        shard carries at most ``ratio`` times the mean."""
        rates = list(rates)
        if ratio is not None:
            per = [0.0] * self.shards
            for rate, name in rates:
                per[self.owner(name)] += rate
            total = sum(per)
            if total <= 0 or max(per) <= ratio * total / len(per):
                return []
        load = [0.0] * self.shards
        moves = []
        for rate, name in sorted(rates, key=lambda x: (-x[0], x[1])):
            src = self.owner(name)
            dst = min(range(len(load)), key=lambda i: (load[i], i != src, i))
            load[dst] += rate
            if dst != src:
                moves.append((name, src, dst))
        return moves
