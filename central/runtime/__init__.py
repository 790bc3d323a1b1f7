"""The asyncio shells around the policy: clocks, ZeroMQ plumbing, the scheduler process."""

from .clock import Clock, LatenessLog, OffsetEstimator, PreciseTimer, Wakeups
from .scheduler import Scheduler, SchedulerConfig

__all__ = [
    "Clock",
    "LatenessLog",
    "OffsetEstimator",
    "PreciseTimer",
    "Wakeups",
    "Scheduler",
    "SchedulerConfig",
]
