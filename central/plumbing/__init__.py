"""Process plumbing every Baton process shares: the clock, ZeroMQ I/O and socket set-up,
security (tokens, CURVE), the metrics server. Imports the protocol, never a policy or a shell."""

from .clock import (
    SYSTEM,
    Clock,
    LatenessLog,
    OffsetEstimator,
    PreciseTimer,
    SystemClock,
    VirtualClock,
    Wakeups,
    as_clock,
)

__all__ = [
    "SYSTEM",
    "Clock",
    "LatenessLog",
    "OffsetEstimator",
    "PreciseTimer",
    "SystemClock",
    "VirtualClock",
    "Wakeups",
    "as_clock",
]
