"""Request-arrival traces for the simulator and the replay harness. Owns trace
generation and CSV replay; imports numpy and the standard library only.

Theory of operation: a ``Trace`` (``trace.py``) is plain read-only numpy columns:
arrival offsets in integer ns from 0 (sorted), a model index per arrival, the model
names, optional sizes and the observation window. Traces come from seeded generators
(``poisson``, ``gamma``, ``piecewise``), from a real log (``replay_csv``, compressed to a
target mean rate with its shape kept), from merging (``mix``) or from Baton's own file
format (``save``/``load``, format v1, below). Nothing here draws global randomness: every
generator takes a seed.

Baton trace file, format v1::

    # baton-trace v1
    # models=resnet,bert            (optional directive: model order)
    # duration_ns=2000000000        (optional directive: observation window)
    time_ns,model[,size]
    0,resnet[,1]
    ...

Rows are non-decreasing integer ns, a model name (listed in ``models`` if that line is
present) and, with the 3-column header, a size >= 1. ``#`` lines are comments, blank
lines are ignored; ``load`` raises ``TraceFormatError`` with ``file:line`` on anything
else. The full rules are in ``fileformat.py`` and docs/simulator.md.
"""

from bench.traces.fileformat import MAGIC, TraceFormatError, load, save
from bench.traces.generators import gamma, piecewise, poisson
from bench.traces.replay import read_csv_times, replay_csv, replay_csv_window
from bench.traces.trace import Trace, mix

__all__ = [
    "MAGIC",
    "Trace",
    "TraceFormatError",
    "gamma",
    "load",
    "mix",
    "piecewise",
    "poisson",
    "read_csv_times",
    "replay_csv",
    "replay_csv_window",
    "save",
]
