"""CURVE encryption, an allow-list of public keys, and client tokens, for every socket.

Theory of operation: ``baton keys DIR`` makes one CURVE key pair per role
(``scheduler``, ``frontend``, ``worker``, ``client``: ``NAME.key`` holds the public key,
``NAME.key_secret`` both) and an ``authorized/`` folder holding the public keys that may
connect. Every process started with ``--keys DIR`` then:

* runs one ZAP authenticator (``zmq.auth.thread.ThreadAuthenticator``) on its context,
  which admits a CURVE handshake only from a public key in ``DIR/authorized`` and
  logs each refused key (Z85) at WARNING (``_AllowList``);
* makes its bound sockets CURVE servers with its own key pair (``server``);
* makes its connecting sockets CURVE clients that insist on the server's public key
  (``client``), so a process that is not the real scheduler, frontend or worker cannot
  even finish the handshake.

Routing ids are chosen by the peer and can be spoofed; the key cannot. Each received
frame carries the authenticated public key as its ``User-Id`` property (``peer_key``),
so a ROUTER can bind a routing id to the key it registered with and refuse messages
from any other key.

Clients may also be asked for a shared token (``--token-file``): over ZMQ it travels as
the connection's ``X-Token`` metadata property (sent in the handshake, never in a
message), over HTTP as ``Authorization: Bearer <token>``, over gRPC as the
``authorization`` metadata entry with the same value.

Safe defaults: roles bind to 127.0.0.1 unless told otherwise; binding elsewhere without
keys logs a loud warning (``warn_if_exposed``).
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import zmq

from central.protocol.messages import Kind

__all__ = [
    "ROLES",
    "Keys",
    "PeerGate",
    "make_keys",
    "load_keys",
    "read_token",
    "token_ok",
    "peer_key",
    "warn_if_exposed",
]

log = logging.getLogger("baton.security")

ROLES = ("scheduler", "frontend", "worker", "client")
TOKEN_PROPERTY = "X-Token"


@dataclass
class Keys:
    """One process's key material, loaded from a ``baton keys`` directory."""

    directory: Path
    role: str
    public: bytes
    secret: bytes
    _auth: Any = None
    _roles: dict[str, str] | None = None

    def server_key(self, role: str) -> bytes:
        """The public key of the server role this process connects to."""
        public, _ = _load(self.directory / f"{role}.key")
        return public

    def start_authenticator(self, context: zmq.Context[Any]) -> None:
        """Admit CURVE peers whose public key is in ``authorized/`` (once per process)."""
        if self._auth is not None:
            return
        from zmq.auth.thread import ThreadAuthenticator

        allowed = _AllowList(self.directory / "authorized", self.role)
        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve_callback(domain="*", credentials_provider=allowed)
        self._auth = auth

    def server(self, sock: zmq.Socket[Any], context: zmq.Context[Any]) -> None:
        """Make a bound socket a CURVE server with this process's key pair."""
        self.start_authenticator(context)
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def client(self, sock: zmq.Socket[Any], server_role: str) -> None:
        """Make a connecting socket a CURVE client of ``server_role``'s public key."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_key(server_role)

    def role_of(self, key: str | None) -> str | None:
        """The role whose public key (Z85, as ``peer_key`` gives it) this is, if any."""
        if key is None:
            return None
        if self._roles is None:
            roles = {}
            for role in ROLES:
                path = self.directory / f"{role}.key"
                if path.exists():
                    roles[_load(path)[0].decode()] = role
            self._roles = roles
        return self._roles.get(key)

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


class _Refusals:
    """Which refusals to log: the first of each key and reason, then the 10th, 100th...

    A refused peer retries (ZMQ reconnects every 100 ms, a worker re-registers every
    second), so logging every refusal would flood the log; logging none would hide them.
    """

    _MAX = 1024  # distinct (key, reason) pairs remembered; forgotten all at once beyond

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}

    def note(self, key: str, reason: str) -> int | None:
        """Count one refusal; returns the count when it should be logged, else None."""
        if len(self._counts) >= self._MAX:
            self._counts.clear()
        n = self._counts[key, reason] = self._counts.get((key, reason), 0) + 1
        return n if n == 10 ** (len(str(n)) - 1) else None


class _AllowList:
    """The ZAP authenticator's CURVE check: the public keys in ``authorized/``, read once
    at start (as ``configure_curve`` would), and a WARNING naming each refused key."""

    def __init__(self, directory: Path, role: str) -> None:
        from zmq.auth import load_certificates

        self.directory = directory
        self.role = role
        self.keys = set(load_certificates(str(directory)))  # Z85 public keys, as bytes
        self._refusals = _Refusals()

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the authenticator's thread with the peer's Z85 key; True admits."""
        if key in self.keys:
            return True
        z85 = key.decode("ascii", "replace")
        n = self._refusals.note(z85, "handshake")
        if n is not None:
            log.warning(
                "SECURITY: the %s refused a CURVE handshake from public key %s: "
                "not in %s (refusal %d of this key)",
                self.role,
                z85,
                self.directory,
                n,
            )
        return False


def _load(path: Path) -> tuple[bytes, bytes | None]:
    from zmq.auth import load_certificate

    if not path.exists():
        raise FileNotFoundError(f"no key file {path} (make one with `baton keys {path.parent}`)")
    return load_certificate(str(path))


def make_keys(directory: str | Path, roles: tuple[str, ...] = ROLES) -> list[Path]:
    """Create a key pair per role and the ``authorized`` allow-list; returns the files."""
    from zmq.auth import create_certificates

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    authorized = d / "authorized"
    authorized.mkdir(exist_ok=True)
    made = []
    for role in roles:
        if (d / f"{role}.key_secret").exists():
            raise FileExistsError(f"{d / (role + '.key_secret')} exists; not overwriting keys")
        public, secret = create_certificates(str(d), role)
        os.chmod(secret, 0o600)
        (authorized / f"{role}.key").write_bytes(Path(public).read_bytes())
        made += [Path(public), Path(secret)]
    return made


def load_keys(directory: str | Path, role: str) -> Keys:
    """``role``'s key pair from ``directory``; ``FileNotFoundError`` names what is missing."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    d = Path(directory)
    public, secret = _load(d / f"{role}.key_secret")
    if secret is None:
        raise ValueError(f"{d / (role + '.key_secret')} holds no secret key")
    if not (d / "authorized").is_dir():
        raise FileNotFoundError(f"no allow-list folder {d / 'authorized'}")
    return Keys(d, role, public, secret)


def read_token(path: str | Path | None) -> str | None:
    """The client token in ``path`` (surrounding whitespace stripped), or None."""
    if path is None:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"{path} holds an empty token")
    return token


def token_ok(expected: str | None, given: Any) -> bool:
    """Constant-time comparison; no token configured admits everyone."""
    if expected is None:
        return True
    if isinstance(given, bytes):
        given = given.decode("utf-8", "replace")
    return isinstance(given, str) and hmac.compare_digest(given, expected)


def peer_key(frame: Any) -> str | None:
    """The authenticated CURVE public key (Z85) a received frame came with, if any."""
    try:
        return frame.get("User-Id") or None
    except (zmq.ZMQError, AttributeError, TypeError):
        return None


def warn_if_exposed(address: str, keys: Keys | None, what: str) -> None:
    """Log loudly when ``address`` binds beyond loopback without CURVE keys."""
    if keys is not None:
        return
    host = urlparse(address).hostname or ""
    if address.startswith(("ipc://", "inproc://")) or host in ("127.0.0.1", "localhost", "::1"):
        return
    log.warning(
        "SECURITY: %s binds %s beyond loopback WITHOUT encryption or authentication; "
        "make keys with `baton keys DIR` and start every role with --keys DIR",
        what,
        address,
    )


# Which roles' keys may send each message kind to the scheduler.
_SCHEDULER_KINDS: dict[int, frozenset[str]] = {
    Kind.REGISTER_WORKER: frozenset({"worker"}),
    Kind.REGISTER_FRONTEND: frozenset({"frontend"}),
    Kind.HEARTBEAT: frozenset({"worker", "frontend", "scheduler"}),  # shards: scheduler keys
    Kind.LEAVING: frozenset({"worker"}),
    Kind.REQUESTS: frozenset({"frontend"}),
    Kind.DONE: frozenset({"worker"}),
    Kind.STATS_QUERY: frozenset({"worker", "frontend", "client"}),
    # a split scheduler's shard processes hold the scheduler's key pair
    Kind.REGISTER_SHARD: frozenset({"scheduler"}),
    Kind.OFFERS: frozenset({"scheduler"}),
    Kind.DISPATCHED: frozenset({"scheduler"}),
    Kind.MODEL_STATE: frozenset({"scheduler"}),
    Kind.REQUEUE: frozenset({"scheduler"}),
    Kind.SHARD_STATS: frozenset({"scheduler"}),
}


def _kind(header: bytes) -> int | None:
    """The message kind from a header's first elements, without decoding the rest."""
    import msgpack

    try:
        u = msgpack.Unpacker(max_buffer_size=len(header) + 16)
        u.feed(header)
        if u.read_array_header() < 2:
            return None
        u.skip()  # the version
        kind = u.unpack()
    except Exception:  # malformed: the decoder refuses it with the precise reason
        return None
    return kind if isinstance(kind, int) else None


class PeerGate:
    """Authorize a CURVE ROUTER's messages on the sender's key, not its routing id.

    The first message of a worker or frontend routing id binds that id to the key it
    came with; later messages on the id with another key are refused (routing ids are
    chosen by the peer and could be reused by another). Each kind is admitted only from
    the roles that may send it (``_SCHEDULER_KINDS``); kinds not listed pass on, so the
    decoder refuses them with its usual reason. Refusals are logged at WARNING with the
    sender's key (the first of each key and reason, then the 10th, 100th...).
    """

    def __init__(self, keys: Keys, kinds: dict[int, frozenset[str]] | None = None) -> None:
        self.keys = keys
        self.kinds = kinds if kinds is not None else _SCHEDULER_KINDS
        self._bound: dict[bytes, str] = {}  # routing id -> key, for workers and frontends
        self._refusals = _Refusals()

    def admit(self, batch: list[Any], refuse: Any) -> list[list[bytes]]:
        """Frames (``copy=False``) in, the admitted messages as bytes out; ``refuse(id,
        text)`` is called for the rest."""
        out = []
        for frames in batch:
            identity = frames[0].bytes
            key = peer_key(frames[0])
            role = self.keys.role_of(key)
            if role in ("worker", "frontend"):
                bound = self._bound.setdefault(identity, key or "")
                if bound != key:
                    self._refuse(refuse, identity, key, "this routing id belongs to another key")
                    continue
            kind = _kind(frames[1].bytes) if len(frames) > 1 else None
            allowed = self.kinds.get(kind) if kind is not None else None
            if allowed is not None and role not in allowed:
                self._refuse(
                    refuse, identity, key, f"a {role or 'unknown'} key may not send message kind {kind}"
                )
                continue
            out.append([f.bytes for f in frames])
        return out

    def _refuse(self, refuse: Any, identity: bytes, key: str | None, text: str) -> None:
        n = self._refusals.note(key or "", text)
        if n is not None:
            log.warning(
                "SECURITY: the %s refused a message from routing id %r, public key "
                "%s: %s (refusal %d of this kind)",
                self.keys.role,
                identity,
                key,
                text,
                n,
            )
        refuse(identity, text)

    def forget(self, identity: bytes) -> None:
        """Release a routing id (its peer was lost or left)."""
        self._bound.pop(identity, None)
