"""`baton up` runs a cluster from a TOML file until Ctrl-C, then stops every process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from central.client import Client, query_stats
from central.cluster import free_port

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def test_up_serves_then_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    sched, fe = free_port(), free_port()
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(f"""
[scheduler]
address = "tcp://127.0.0.1:{sched}"
[frontend]
address = "tcp://127.0.0.1:{fe}"
[[models]]
name = "tiny"
k_ms = 0.5
c_ms = 2.0
slo_ms = 100
[[workers]]
kind = "emulated"
gpus = 2
models = ["tiny"]
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "central.cli", "up", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "serving:" in line:
                break
        else:
            pytest.fail("baton up never said it was serving: " + "".join(lines))
        children = _children(proc.pid)
        assert len(children) == 3  # scheduler, frontend, one worker process
        with Client(f"tcp://127.0.0.1:{fe}") as client:
            out = client.infer("tiny", {"x": np.ones(5, np.float32)})
        assert out["sum"][0] == 5.0
        assert len(query_stats(f"tcp://127.0.0.1:{sched}")["workers"]) == 2
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "stopped: scheduler=0, frontend=0, worker0=0" in rest
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"child {pid} still alive"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_up_refuses_a_bad_config_with_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[[workers]]\nkind = "emulated"\nmodels = ["ghost"]\n')
    out = subprocess.run(
        [sys.executable, "-m", "central.cli", "up", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "ghost" in out.stderr and "[[models]]" in out.stderr
