"""The ordered structures the scheduler keeps: requests by deadline, workers by free time.

Theory of operation.

``DeadlineQueue``: requests mostly arrive in deadline order (one SLO per model, deadline
= arrival + budget), so ``push`` appends in O(1) and falls back to a binary insertion only
for the rare early deadline; equal deadlines keep arrival order. Batches are taken from
the head; rather than shifting the list on every pop, a head index moves forward and the
dead prefix is cut off once it is both large and most of the list, so popping is
amortised O(batch).

``WorkerPool``: the live workers that serve exactly the same set of models, in a heap by
predicted ``free_at``. Grouping by model set means a dispatch pushes one heap entry however
many models a worker serves (a 1,000-GPU cluster where every GPU serves every model is one
pool). Entries are invalidated lazily: an entry is live while its worker is still a member
and still has that ``free_at``; ``top`` drops dead ones, and the heap is rebuilt when dead
entries outnumber live ones by far. ``waiting`` and ``watch`` are heaps the scheduler
keeps beside it: the candidates that wait for one of the pool's workers, by latest start,
and the free time past which each candidate of the pool's models goes stale.

Nothing here reads a clock; times are plain integers handed in.
"""

from __future__ import annotations

import bisect
import collections
import heapq

from central.policy.types import Request

__all__ = ["DeadlineQueue", "WorkerPool", "WorkerState"]

_COMPACT_AT = 1024  # dead prefix length that triggers compaction (with > half dead)


def _deadline(request: Request) -> int:
    return request.deadline_ns


class DeadlineQueue:
    """Requests of one model, earliest deadline first."""

    __slots__ = ("_items", "_head")

    def __init__(self) -> None:
        self._items: list[Request] = []
        self._head = 0  # index of the first live item

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def push(self, request: Request) -> None:
        """Insert ``request`` after every queued request with a deadline <= its own."""
        items = self._items
        if len(items) == self._head or items[-1].deadline_ns <= request.deadline_ns:
            items.append(request)
        else:
            bisect.insort_right(items, request, lo=self._head, key=_deadline)

    def head(self) -> Request:
        """The request with the earliest deadline; raises ``IndexError`` when empty."""
        if len(self._items) == self._head:
            raise IndexError("head of an empty DeadlineQueue")
        return self._items[self._head]

    def deadline_at(self, index: int) -> int:
        """Deadline of the ``index``-th request from the head (0 is the head)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} requests")
        return self._items[self._head + index].deadline_ns

    def count_before(self, deadline_ns: int) -> int:
        """How many queued requests have a deadline strictly before ``deadline_ns``."""
        index = bisect.bisect_left(self._items, deadline_ns, lo=self._head, key=_deadline)
        return index - self._head

    def pop_front(self, count: int) -> list[Request]:
        """Remove and return the ``count`` earliest-deadline requests (fewer if short)."""
        start = self._head
        end = min(start + count, len(self._items))
        taken = self._items[start:end]
        self._head = end
        if end == len(self._items):
            self._items.clear()
            self._head = 0
        elif end >= _COMPACT_AT and 2 * end >= len(self._items):
            del self._items[:end]
            self._head = 0
        return taken

    def clear(self) -> list[Request]:
        """Remove and return every queued request, earliest deadline first."""
        taken = self._items[self._head :]
        self._items = []
        self._head = 0
        return taken


class WorkerState:
    """What the scheduler tracks about one worker (a GPU)."""

    __slots__ = ("wid", "models", "alive", "free_at", "timeline", "pool", "last_end")

    def __init__(self, wid: int, free_at: int) -> None:
        self.wid = wid
        self.last_end = 0  # when its last reported batch ended
        self.models: tuple[str, ...] = ()
        self.alive = True
        self.free_at = free_at  # predicted end of its last dispatched batch
        self.timeline: collections.deque[int] = collections.deque()  # batch ids, in order
        self.pool: WorkerPool | None = None


class WorkerPool:
    """Live workers serving exactly ``models``, earliest predicted ``free_at`` first."""

    __slots__ = ("models", "members", "_heap", "waiting", "watch")

    def __init__(self, models: tuple[str, ...]) -> None:
        self.models = models
        self.members: dict[int, WorkerState] = {}
        self._heap: list[tuple[int, int]] = []  # (free_at, worker id), lazily invalidated
        # (latest start, tie-break, model, candidate version): owned by the scheduler.
        self.waiting: list[tuple[int, int, str, int]] = []
        # (threshold, tie-break, model, candidate version): owned by the scheduler. A
        # candidate must be recomputed once the pool's earliest free_at passes threshold.
        self.watch: list[tuple[int, int, str, int]] = []

    def __len__(self) -> int:
        return len(self.members)

    def add(self, worker: WorkerState) -> None:
        """Make ``worker`` a member at its current ``free_at``."""
        self.members[worker.wid] = worker
        heapq.heappush(self._heap, (worker.free_at, worker.wid))

    def discard(self, worker: WorkerState) -> None:
        """Stop offering ``worker`` (its heap entries die lazily)."""
        self.members.pop(worker.wid, None)

    def moved(self, worker: WorkerState) -> None:
        """Record that member ``worker``'s ``free_at`` changed."""
        heap = self._heap
        heapq.heappush(heap, (worker.free_at, worker.wid))
        if len(heap) > 4 * len(self.members) + 32:
            heap[:] = [(w.free_at, wid) for wid, w in self.members.items()]
            heapq.heapify(heap)

    def top(self) -> WorkerState | None:
        """The member that frees up first (lowest worker id on ties); ``None`` if empty."""
        heap, members = self._heap, self.members
        while heap:
            free_at, wid = heap[0]
            worker = members.get(wid)
            if worker is not None and worker.free_at == free_at:
                return worker
            heapq.heappop(heap)
        return None
