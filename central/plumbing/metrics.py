"""Prometheus text exposition (format 0.0.4) and a tiny HTTP/1.1 server for ``/metrics``.

Theory of operation: a component keeps plain counters and ``Histogram`` objects as it
works (an increment or a bisect per event, nothing else). A scrape calls the component's
``metric_families()``, which builds ``Family`` values from that state, and ``render``
turns them into the text format. ``http_response`` is the whole HTTP side as a pure
function of the request head; ``MetricsServer`` is the dozen lines of asyncio around it.

It must never import ``prometheus_client`` (a test-only dependency) and never block the
event loop beyond one render: each connection reads one request head, gets one answer
and is closed (``Connection: close``), with a size and a time limit on the head.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "SECONDS_BUCKETS",
    "BATCH_SIZE_BUCKETS",
    "Histogram",
    "Family",
    "render",
    "escape_label_value",
    "http_response",
    "MetricsServer",
]

log = logging.getLogger("baton.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets in seconds: 100 us to 10 s, roughly 1-2.5-5 per decade.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_SIZE_BUCKETS: tuple[float, ...] = (
    1,
    2,
    3,
    4,
    6,
    8,
    12,
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    192,
    256,
)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_KINDS = ("counter", "gauge", "histogram")
_MAX_HEAD = 16 * 1024  # bytes of request line + headers we read before giving up
_HEAD_TIMEOUT_S = 5.0


class Histogram:
    """Counts of observations per bucket (``le`` upper bounds), their sum and number."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be strictly increasing and non-empty")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are "<= le"
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, observations <= le)`` for every bound and then ``+Inf``."""
        out: list[tuple[float, int]] = []
        running = 0
        for le, n in zip((*self.bounds, math.inf), self.counts):
            running += n
            out.append((le, running))
        return out


Labels = Mapping[str, str]


@dataclass
class Family:
    """One metric: its name, type, help text, and samples ``(labels, value)``.

    A histogram's values are ``Histogram`` objects; a counter's name must end in
    ``_total`` (as the 0.0.4 format's own client writes it).
    """

    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    samples: list[tuple[Labels, float | Histogram]] = field(default_factory=list)

    def add(self, value: float | Histogram, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def add_all(self, values: Mapping[Any, float | Histogram], *label_names: str) -> Family:
        """One sample per entry, in key order; a tuple key fills several labels."""
        for key, value in sorted(values.items()):
            parts = key if isinstance(key, tuple) else (key,)
            self.add(value, **{n: str(v) for n, v in zip(label_names, parts)})
        return self


def escape_label_value(value: str) -> str:
    """A label value with backslash, double quote and newline escaped, per the format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{escape_label_value(str(v))}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def render(families: Iterable[Family]) -> str:
    """The 0.0.4 text format of ``families``: HELP and TYPE lines, then the samples.

    Raises ``ValueError`` for a malformed family (a bad name, kind or label name, a
    counter not named ``*_total``, a histogram sample that is not a ``Histogram``): those
    are our bugs, not data.
    """
    lines: list[str] = []
    for fam in families:
        if not _NAME.match(fam.name) or fam.kind not in _KINDS:
            raise ValueError(f"bad metric family {fam.name!r} of kind {fam.kind!r}")
        if fam.kind == "counter" and not fam.name.endswith("_total"):
            raise ValueError(f"counter {fam.name!r} must end in _total")
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}")
        lines.append(f"# TYPE {fam.name} {fam.kind}")
        for labels, value in fam.samples:
            for key in labels:
                if not _LABEL.match(key) or key == "le" or key.startswith("__"):
                    raise ValueError(f"bad label name {key!r} in {fam.name}")
            pairs = sorted(labels.items())
            if fam.kind == "histogram":
                if not isinstance(value, Histogram):
                    raise ValueError(f"{fam.name}: a histogram sample needs a Histogram")
                for le, n in value.cumulative():
                    lab = _labels([*pairs, ("le", _number(float(le)))])
                    lines.append(f"{fam.name}_bucket{lab} {n}")
                lines.append(f"{fam.name}_sum{_labels(pairs)} {_number(value.sum)}")
                lines.append(f"{fam.name}_count{_labels(pairs)} {value.count}")
            else:
                if isinstance(value, Histogram):
                    raise ValueError(f"{fam.name}: a {fam.kind} sample needs a number")
                lines.append(f"{fam.name}{_labels(pairs)} {_number(value)}")
    return "\n".join(lines) + "\n"


def _response(status: str, body: bytes, content_type: str, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return head if head_only else head + body


def http_response(head: bytes, metrics: Callable[[], str]) -> bytes:
    """The complete HTTP/1.1 answer to the request whose head (request line and headers,
    up to the blank line) is ``head``: 200 with ``metrics()`` for ``GET /metrics`` (and
    ``HEAD``, without the body), 404 for another path, 405 for another method, 400 for a
    request line that does not parse. ``metrics`` is called only for a 200; an exception
    from it propagates (our bug).
    """
    text = "text/plain; charset=utf-8"
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", b"bad request line\n", text, False)
    method, target, _ = parts
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"only GET /metrics\n", text, False)
    if target.split("?", 1)[0] != "/metrics":
        return _response("404 Not Found", b"not found; try /metrics\n", text, head_only)
    return _response("200 OK", metrics().encode("utf-8"), CONTENT_TYPE, head_only)


class MetricsServer:
    """Serve ``GET /metrics`` on ``host:port`` (port 0: any free port) with asyncio."""

    def __init__(self, host: str, port: int, metrics: Callable[[], str]) -> None:
        self._host = host
        self._port = port
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and listen; raises ``OSError`` when the address is taken."""
        self._server = await asyncio.start_server(self._serve_one, self._host, self._port, limit=_MAX_HEAD)

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return  # the peer's fault: a head that never ends or is too long
            try:
                answer = http_response(head, self._metrics)
            except Exception:  # our bug: say so to the scraper, keep serving
                log.exception("rendering metrics failed")
                answer = _response(
                    "500 Internal Server Error", b"render failed\n", "text/plain; charset=utf-8", False
                )
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
