"""``baton top`` against a real cluster: headless (textual's pilot) and in a real tmux pane.

The cluster (4 emulated GPUs, dilated Symphony profile) runs under Poisson load for the
whole module, so batches exist and the timelines move. The dashboard uses the scheduler's
stats PUB socket when ``baton scheduler --help`` offers ``--stats-pub``, else polls the
scheduler's ROUTER. Every process (cluster, load thread, tmux session) is stopped in a
finally, by PID or session name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.client.load import LoadSpec, run_load
from central.cluster import Cluster, WorkerSpec, free_port, load_config
from central.dashboard.source import FrontendLatency, PollSource, StatsSource
from central.demo import dilate

pytestmark = pytest.mark.integration

GPUS = 4
DILATION = 12.0  # as in conftest.py: Python's timers on a 2-core machine need slow batches
ROOT = Path(__file__).resolve().parents[2]
TMUX = shutil.which("tmux")


def _has_stats_pub() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "central.cli", "scheduler", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    return "--stats-pub" in out.stdout


@dataclasses.dataclass
class Running:
    cluster: Cluster
    stats_pub: str | None  # the PUB address, None when the scheduler has none

    def source(self) -> Any:
        if self.stats_pub:
            return StatsSource(self.stats_pub)
        return PollSource(self.cluster.config.scheduler_address)

    def top_args(self) -> list[str]:
        fe = ["--frontend", self.cluster.config.frontend_address]
        if self.stats_pub:
            return ["--stats", self.stats_pub, *fe]
        return ["--poll", self.cluster.config.scheduler_address, *fe]


@pytest.fixture(scope="module")
def loaded_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = dilate(load_config(None), DILATION, "symphony")
    config = dataclasses.replace(
        config,
        models=tuple(m for m in config.models if m.name == "symphony"),
        workers=(WorkerSpec("emulated", ("symphony",), gpus=GPUS),),
    ).with_ports(free_port(), free_port())
    assert _has_stats_pub(), "baton scheduler --help lists no --stats-pub"
    pub = f"tcp://127.0.0.1:{free_port()}"
    cluster = Cluster(
        config,
        log_dir=str(tmp_path_factory.mktemp("dashboard")),
        policy_args=("--stats-pub", pub) if pub else (),
    )
    cluster.start()
    slo = config.model("symphony").slo_ms
    assert slo is not None
    load = threading.Thread(
        target=run_load,
        args=(LoadSpec(config.frontend_address, "symphony", 60.0, 15.0, slo, grace_s=1.0),),
        daemon=True,
    )
    try:
        load.start()
        yield Running(cluster, pub)
    finally:
        cluster.stop()  # the load thread's requests fail fast once the frontend is gone
        load.join(timeout=30.0)


def _rows_ok(lines: list[str]) -> bool:
    text = "\n".join(lines)
    model = re.search(r"^symphony\s+\S+\s+\d", text, re.M)  # a model row with numbers
    workers = [re.search(rf"^{i}\s+symphony\s+[▮▯]+\s*\d+%", text, re.M) for i in range(GPUS)]
    return bool(model) and all(workers)


def _latency_shown(lines: list[str]) -> bool:
    """The model row's p50 and p99 columns hold numbers (from the frontend)."""
    row = re.search(r"^symphony\s+\S+\s+\S+\s+\S+\s+(\d+\.\d)\s+(\d+\.\d)\s", "\n".join(lines), re.M)
    return bool(row) and float(row.group(1)) <= float(row.group(2))


def _busy(lines: list[str]) -> bool:
    """Rows present and some worker's timeline shows a batch."""
    return _rows_ok(lines) and "█" in "\n".join(lines)


@pytest.mark.parametrize("mode", ["pub", "poll"])
def test_headless_app_shows_model_and_worker_rows(loaded_cluster: Running, mode: str) -> None:
    from central.dashboard.app import TopApp

    if mode == "pub":
        assert loaded_cluster.stats_pub, "the scheduler must offer --stats-pub"
    inner = (
        loaded_cluster.source()
        if mode == "pub"
        else PollSource(loaded_cluster.cluster.config.scheduler_address)
    )
    source = FrontendLatency(inner, loaded_cluster.cluster.config.frontend_address, interval_s=0.25)

    async def drive() -> list[str]:
        app = TopApp(source, 0.25)
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 15.0
            while not (_busy(app.lines) and _latency_shown(app.lines)) and time.monotonic() < deadline:
                await pilot.pause(0.25)
            seen = list(app.lines)
            await pilot.press("s")
            assert "sort models.offer/s" in app.lines[1]
            await pilot.press("r")
            assert "rev" in app.lines[1]
            await pilot.press("question_mark")
            assert app.lines[0].startswith("baton top")
            await pilot.press("question_mark")
            await pilot.press("q")
        return seen

    try:
        lines = asyncio.run(drive())
    finally:
        source.close()
    assert _busy(lines), "\n".join(lines)
    assert _latency_shown(lines), "\n".join(lines)
    assert len(lines) == 24 and all(len(ln) <= 80 for ln in lines)
    assert "unreachable" not in lines[0]
    assert lines[0].startswith(mode)


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
def test_top_in_a_real_80x24_terminal(loaded_cluster: Running) -> None:
    assert TMUX is not None
    session = f"baton-top-{uuid.uuid4().hex[:8]}"
    cmd = " ".join([sys.executable, "-m", "central.dashboard.cli", *loaded_cluster.top_args()])
    pane = ""
    try:
        subprocess.run(
            [TMUX, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-c", str(ROOT), cmd],
            check=True,
            timeout=30,
        )
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            time.sleep(0.5)
            pane = subprocess.run(
                [TMUX, "capture-pane", "-p", "-t", session],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            if _busy(pane.splitlines()):
                break
        print(pane)  # shown with pytest -s: the 80x24 screen as a user sees it
        assert _rows_ok(pane.splitlines()), pane
        assert "q quit" in pane
        subprocess.run([TMUX, "send-keys", "-t", session, "q"], timeout=10)
        for _ in range(20):  # 'q' ends the app, and with it the session
            time.sleep(0.25)
            gone = subprocess.run([TMUX, "has-session", "-t", session], capture_output=True)
            if gone.returncode != 0:
                break
        else:
            pytest.fail("baton top did not quit on 'q'")
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], capture_output=True, timeout=10)


def test_headless_app_says_when_the_scheduler_is_unreachable() -> None:
    from central.dashboard.app import TopApp

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing publishes here
    source = StatsSource(address)

    async def drive() -> list[str]:
        app = TopApp(source, 0.25)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(2.6)
            seen = list(app.lines)
            await pilot.press("q")
        return seen

    try:
        lines = asyncio.run(drive())
    finally:
        source.close()
    assert re.fullmatch(rf"scheduler unreachable at {address} \(no stats for \d+ s\)", lines[0])
