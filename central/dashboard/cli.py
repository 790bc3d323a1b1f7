"""``baton top``: argument parsing and start-up; textual is imported only when it runs.

Also runnable on its own: ``python -m central.dashboard.cli --poll tcp://127.0.0.1:5550``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["add_top_parser", "run", "main"]

DEFAULT_STATS = "tcp://127.0.0.1:5551"
DEFAULT_FRONTEND = "tcp://127.0.0.1:5560"


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stats",
        default=DEFAULT_STATS,
        metavar="ADDR",
        help=f"the scheduler's stats PUB address (default {DEFAULT_STATS})",
    )
    p.add_argument(
        "--poll",
        default=None,
        metavar="ADDR",
        help="instead, poll the scheduler's ROUTER address (no --stats-pub needed)",
    )
    p.add_argument(
        "--frontend",
        default=DEFAULT_FRONTEND,
        metavar="ADDR",
        help="a frontend's client address, polled each second for p50/p99 "
        f"latency (default {DEFAULT_FRONTEND}; '' for none)",
    )
    p.add_argument("--keys", metavar="DIR", help="CURVE keys of a secured cluster (baton keys)")
    p.add_argument("--token-file", metavar="PATH", help="the frontend's client token")
    p.add_argument(
        "--interval",
        type=float,
        default=0.25,
        metavar="S",
        help="seconds between screen refreshes (and polls with --poll)",
    )


def add_top_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``top`` to ``baton``'s subcommands; returns its parser (``func`` set to ``run``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "top", help="live terminal dashboard of a running scheduler"
    )
    _configure(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Show the dashboard until 'q'; returns the exit code."""
    if args.interval <= 0:
        print("baton top: --interval must be positive", file=sys.stderr)
        return 2
    from .app import TopApp
    from .source import FrontendLatency, PollSource, StatsSource

    source: Any
    token = None
    if args.token_file:
        from central.plumbing.security import read_token

        token = read_token(args.token_file)
    if args.poll:
        source = PollSource(args.poll, interval_s=args.interval, keys=args.keys)
    else:
        source = StatsSource(args.stats, keys=args.keys)
    if args.frontend:
        source = FrontendLatency(source, args.frontend, keys=args.keys, token=token)
    try:
        code = TopApp(source, args.interval).run()
    finally:
        source.close()
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="baton top", description="live terminal dashboard")
    _configure(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
