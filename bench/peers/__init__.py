"""Peer serving systems for the trace-replay benchmark: Ray Serve and Triton (PyTriton).
Owns the peers' launchers and probes; never imports Baton's serving shells.

Each peer runs the same emulated model as Baton's emulated GPUs (a handler that holds the
"device" for ``k*b + c`` per batch) on N replicas, in processes of its own under its own
interpreter (docs/peers.md says why and how they are installed). The harness calls
``available(name)`` (``None`` or the reason it cannot run), ``replay_peer`` (one trace,
one knob setting, per-request arrays for ``bench.metrics``), ``PeerSession`` (one knob
setting kept up across several replays, drained between them, for a live goodput search)
and ``tune_peer`` (the best knob setting at one offered rate). The peers are optional:
nothing here imports Ray or PyTriton into the harness's own process. Both peers are a
``base.Peer``: one life cycle, each says only its script, arguments and request.
"""

from .base import Peer
from .common import Knobs, PeerFailed, PeerUnavailable
from .ray_peer import RayPeer
from .replay import PEERS, PeerSession, available, default_grid, drain, replay_peer, tune_peer
from .triton_peer import TritonPeer

__all__ = [
    "PEERS",
    "Peer",
    "PeerSession",
    "Knobs",
    "PeerFailed",
    "PeerUnavailable",
    "RayPeer",
    "TritonPeer",
    "available",
    "default_grid",
    "drain",
    "replay_peer",
    "tune_peer",
]
