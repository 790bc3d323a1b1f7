"""The scheduler's asyncio shells: the one-process scheduler, the matcher and the model
shards, and ``translate`` (wire <-> policy). Imported only by the CLI and the cluster launcher."""

from .scheduler import Scheduler, SchedulerConfig

__all__ = ["Scheduler", "SchedulerConfig"]
