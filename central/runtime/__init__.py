"""The scheduler's asyncio shells: the one-process scheduler, the matcher and the model
shards, the parts both schedulers are composed of (shell: socket, loop turn and dispatch
table; control: worker and frontend messages, liveness; registry; dispatch: actions to
messages; accounting: counters, batch log, metrics; config), and ``translate`` (wire <->
policy). Imported only by the CLI and the cluster launcher."""

from .scheduler import Scheduler, SchedulerConfig

__all__ = ["Scheduler", "SchedulerConfig"]
