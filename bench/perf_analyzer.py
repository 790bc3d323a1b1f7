"""Triton's perf_analyzer against Baton's KServe v2 gRPC endpoint, at a fixed request rate.

Theory of operation: start a cluster (the embedded default's emulated GPUs serving the
Symphony profile, time-dilated on machines with fewer than 8 cores as everywhere in
``bench``), with the frontend's gRPC endpoint on a free port, then run the unmodified
``perf_analyzer`` binary that ships in the ``tritonclient==2.51.0`` wheel with
``-i grpc --request-rate-range R`` (open-loop, Poisson-free constant rate) and
``--shape x:N``. perf_analyzer reads the model's metadata and config over gRPC, sends
requests at the rate, and prints its latency report; we keep its CSV (``-f``) and stdout
under ``--out``, and print Baton's own view (frontend counters) next to it.

The binary links ``libb64.so.0d`` (Debian's libb64-0d) and ``libcudart.so.12``
(``nvidia-cuda-runtime-cu12``), even for a CPU-only run. ``make perf-analyzer-deps``
installs both into the venv; this script puts them on ``LD_LIBRARY_PATH`` and says what
is missing if they are not there.

Run: ``.venv/bin/python -m bench.perf_analyzer --rate 100`` (about 40 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from central.client import query_stats
from central.cluster import Cluster, free_port, load_config
from central.demo import dilate

__all__ = ["main", "native_library_path"]

VENV_NATIVE = Path(sys.prefix) / "native" / "usr" / "lib" / "x86_64-linux-gnu"


def native_library_path() -> tuple[str, list[str]]:
    """(LD_LIBRARY_PATH entries joined, what is missing) for perf_analyzer's libraries."""
    site = Path(sysconfig.get_paths()["purelib"])
    cudart = site / "nvidia" / "cuda_runtime" / "lib"
    missing = []
    if not (VENV_NATIVE / "libb64.so.0d").exists():
        missing.append(f"libb64.so.0d (Debian libb64-0d) under {VENV_NATIVE}")
    if not (cudart / "libcudart.so.12").exists():
        missing.append(f"libcudart.so.12 (pip nvidia-cuda-runtime-cu12) under {cudart}")
    parts = [str(VENV_NATIVE), str(cudart), os.environ.get("LD_LIBRARY_PATH", "")]
    return ":".join(p for p in parts if p), missing


def _binary() -> str | None:
    here = Path(sys.executable).parent / "perf_analyzer"
    return str(here) if here.exists() else shutil.which("perf_analyzer")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.perf_analyzer",
        description="Run Triton's perf_analyzer against Baton's KServe v2 gRPC endpoint "
        "at a fixed request rate and keep its report.",
    )
    p.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    p.add_argument("--shape", type=int, default=16, help="elements in the FP32 input x (16)")
    p.add_argument("--interval-ms", type=int, default=5000, help="perf_analyzer's measurement window (5000)")
    p.add_argument(
        "--dilation",
        type=float,
        default=None,
        help="multiply k, c and SLO by this (default: 4 below 8 cores, else 1)",
    )
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument(
        "--async",
        dest="use_async",
        action="store_true",
        help="perf_analyzer's asynchronous mode (-a): many requests in flight "
        "from few threads, for rates well above 1/latency per thread",
    )
    p.add_argument("--out", default="bench-results/perf_analyzer", help="report directory")
    args = p.parse_args(argv)

    binary = _binary()
    if binary is None:
        print("perf_analyzer not found: pip install 'tritonclient[grpc,http]==2.51.0'", file=sys.stderr)
        return 2
    ld_path, missing = native_library_path()
    if missing:
        print(
            "perf_analyzer needs: " + "; ".join(missing) + ". Run `make perf-analyzer-deps`.", file=sys.stderr
        )
        return 2
    dilation = args.dilation if args.dilation is not None else (4.0 if (os.cpu_count() or 1) < 8 else 1.0)
    config = dilate(load_config(None), dilation, "symphony")
    config = dataclasses.replace(config, workers=tuple(w for w in config.workers if w.kind == "emulated"))
    port = free_port()
    ports = {"grpc_port": port} if args.protocol == "grpc" else {"http_port": port}
    config = config.with_ports(free_port(), free_port(), **ports)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = config.model("symphony")
    print(
        f"cluster: {config.gpu_count} emulated GPUs, symphony l(b) = {model.k_ms:.3f} b + "
        f"{model.c_ms:.3f} ms, SLO {model.slo_ms:.0f} ms (dilation x{dilation:g}); "
        f"perf_analyzer over {args.protocol} at {args.rate:g} req/s"
    )
    # -x 1: Baton serves one version of each model; perf_analyzer 2.51 needs the version
    # named to find the model's server-side statistics ("failed to find the requested
    # model version" otherwise, after the measurement)
    cmd = [
        binary,
        "-m",
        "symphony",
        "-x",
        "1",
        "-u",
        f"127.0.0.1:{port}",
        "-i",
        args.protocol,
        "--request-rate-range",
        f"{args.rate:g}",
        "--shape",
        f"x:{args.shape}",
        "-p",
        str(args.interval_ms),
        "--percentile",
        "99",
        "-f",
        str(out / "report.csv"),
    ]
    if args.use_async:
        cmd.append("-a")
    with Cluster(config, log_dir=str(out / "logs")) as cluster:
        start = time.monotonic()
        run = subprocess.run(
            cmd, env={**os.environ, "LD_LIBRARY_PATH": ld_path}, capture_output=True, text=True, timeout=600
        )
        took = time.monotonic() - start
        fe = query_stats(cluster.config.frontend_address)
    (out / "stdout.txt").write_text(run.stdout + run.stderr)
    print("$ " + " ".join(cmd[0:1] + [Path(c).name if c == binary else c for c in cmd[1:]]))
    print(run.stdout.strip())
    if run.stderr.strip():
        print(run.stderr.strip(), file=sys.stderr)
    c = fe["counters"]
    print(
        f"baton frontend: accepted {c['accepted']}, ok {c['ok']}, within SLO "
        f"{c['ok_within_slo']}, deadline exceeded {c['deadline_exceeded']}, "
        f"failed {c['failed']}, rejected {c['rejected']} ({took:.0f} s; report in {out})"
    )
    return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
