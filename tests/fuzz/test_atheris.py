"""A short, bounded atheris (libFuzzer) run of the decode harness.

Theory of operation: ``atheris_decode.py`` is a standalone coverage-guided harness for
``central.protocol.decode`` (see its docstring). This test writes its seed corpus (every
message kind) to a temporary directory and runs it as a subprocess for a fixed number of
iterations with a fixed seed, so the run is repeatable and takes a few seconds. A crash
makes libFuzzer exit non-zero and leave the offending input as ``crash-*`` in the
working directory, which the failure message names. Longer campaigns: docs/fuzzing.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fuzz

pytest.importorskip("atheris", reason="atheris is not installed")

HARNESS = Path(__file__).with_name("atheris_decode.py")
RUNS = 30_000


def test_atheris_decode_harness_finds_no_crash(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, str(HARNESS), "--write-seeds", str(corpus)], check=True, timeout=60)
    assert len(list(corpus.iterdir())) >= 2 * 19  # every kind, both limits
    proc = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            str(corpus),
            f"-runs={RUNS}",
            "-seed=1",
            "-max_len=4096",
            "-timeout=20",
            "-rss_limit_mb=1024",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert proc.returncode == 0 and not crashes, (crashes, proc.stderr[-3000:])
    assert f"Done {RUNS} runs" in proc.stderr
