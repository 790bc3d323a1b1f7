"""The textual shell of ``baton top``: one Static redrawn from ``view.render`` ~4x a second.

Theory of operation: every tick asks the source for a ``Reading`` (never blocking) and
renders it at the widget's current size. Keys change only the ``Sort`` or the help flag.
All layout is in ``view.py``; this module must stay a thin shell.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from textual.app import App, ComposeResult
from textual.widgets import Static

from .source import Reading
from .view import HELP, Sort, render

__all__ = ["TopApp"]


class Source(Protocol):
    def poll(self) -> Reading: ...

    def close(self) -> None: ...


class TopApp(App[int]):
    """Live dashboard over a ``StatsSource`` or ``PollSource``."""

    CSS = "Screen { overflow: hidden; } #screen { width: 100%; height: 100%; }"
    BINDINGS: ClassVar[list[Any]] = [
        ("q", "quit", "quit"),
        ("s", "sort", "sort"),
        ("r", "reverse", "reverse"),
        ("question_mark", "help", "help"),
    ]

    def __init__(self, source: Source, interval_s: float = 0.25, **kw: Any) -> None:
        super().__init__(**kw)
        self.source = source
        self.interval_s = interval_s
        self.sort = Sort()
        self.show_help = False
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("", id="screen", markup=False)

    def on_mount(self) -> None:
        self.refresh_view()
        self.set_interval(self.interval_s, self.refresh_view)

    def refresh_view(self) -> None:
        reading = self.source.poll()
        w, h = self.size.width or 80, self.size.height or 24
        if self.show_help:
            self.lines = [*(HELP + [""] * h)[: h - 1], "press ? to return"]
        else:
            self.lines = render(reading, self.sort, width=w, height=h)
        self.query_one("#screen", Static).update("\n".join(self.lines))

    def action_sort(self) -> None:
        self.sort = self.sort.next()
        self.refresh_view()

    def action_reverse(self) -> None:
        self.sort = self.sort.flipped()
        self.refresh_view()

    def action_help(self) -> None:
        self.show_help = not self.show_help
        self.refresh_view()

    async def action_quit(self) -> None:
        self.exit(0)
