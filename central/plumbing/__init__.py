"""Process plumbing every Baton process shares: the clock, ZeroMQ I/O and socket set-up,
security (tokens, CURVE), the metrics server. Imports the protocol, never a policy or a shell."""

from .clock import Clock, LatenessLog, OffsetEstimator, PreciseTimer, Wakeups

__all__ = ["Clock", "LatenessLog", "OffsetEstimator", "PreciseTimer", "Wakeups"]
