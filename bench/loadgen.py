"""MLPerf LoadGen, Server scenario, against Baton: a second, standard load generator.

Theory of operation: LoadGen (package mlcommons-loadgen) owns the schedule. In the Server
scenario it issues single-sample queries at Poisson times for ``--qps`` and, at the end,
judges the run: VALID when the ``--percentile`` latency is within ``--latency-ms`` and the
minimum duration and query count were met (LoadGen's own rules, early stopping included).
Baton is the system under test through its SDK: ``issue_queries`` (called on LoadGen's issue
thread) hands each sample to an ``AsyncClient`` on an event loop in a thread of its own,
and the reply's callback completes the sample with ``QuerySamplesComplete``. LoadGen has
no notion of a failed query, so a request Baton answered with an error (dropped, rejected)
is completed at once and counted here: the exit code is 0 only for VALID with no errors.

Without ``--address`` the emulated part of the embedded default cluster (8 emulated GPUs,
Symphony's profile ``l(b) = 1.082 ms*b + 5.204 ms`` at SLO 25 ms) is started on free
loopback ports and stopped afterwards. On a machine with fewer than 8 cores the profile is
time-dilated by default (k, c and the SLO multiplied by one factor; every ratio is
unchanged) and the output says so. LoadGen's logs (``mlperf_log_summary.txt``,
``mlperf_log_detail.txt``) are kept in ``--out``.

Run: ``.venv/bin/python -m bench.loadgen [--qps Q] [--latency-ms L] [--address A]``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from central.client import AsyncClient, BatonError
from central.cluster import Cluster, ClusterConfig, free_port, load_config
from central.demo import dilate
from central.policy.bound import analytic_bound

__all__ = ["main", "parse_summary", "BatonSUT"]

MODEL = "symphony"
AUTO_DILATION = 8.0  # used on machines with fewer than 8 cores, like bench.live_goodput


class BatonSUT:
    """LoadGen's system under test: each query becomes one ``AsyncClient.infer`` call.

    ``start()`` runs an event loop in a daemon thread; ``issue`` is safe to call from
    LoadGen's threads; ``stop()`` waits up to ``drain_s`` for requests still in flight.
    """

    def __init__(self, address: str, model: str, slo_ms: float) -> None:
        self._address, self._model, self._slo_ms = address, model, slo_ms
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="baton-sut", daemon=True)
        self._client: AsyncClient | None = None
        self._inflight = 0
        self._lock = threading.Lock()
        self.completed = 0
        self.errors: dict[str, int] = {}

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(10)

    async def _open(self) -> None:
        self._client = AsyncClient(self._address)

    def issue(self, query_samples: list[Any]) -> None:
        """LoadGen's ``issue_queries`` callback."""
        with self._lock:
            self._inflight += len(query_samples)
        for q in query_samples:
            self._loop.call_soon_threadsafe(self._spawn, q.id, q.index)

    def _spawn(self, query_id: int, index: int) -> None:
        self._loop.create_task(self._one(query_id, index))

    async def _one(self, query_id: int, index: int) -> None:
        import mlperf_loadgen as lg

        assert self._client is not None
        x = np.zeros(16, dtype=np.float32)
        x[0] = float(index)
        result, _, _ = await self._client.infer_timed(self._model, {"x": x}, self._slo_ms)
        lg.QuerySamplesComplete([lg.QuerySampleResponse(query_id, 0, 0)])
        with self._lock:
            self._inflight -= 1
            self.completed += 1
            if isinstance(result, BatonError):
                name = type(result).__name__
                self.errors[name] = self.errors.get(name, 0) + 1

    def flush(self) -> None:
        """LoadGen's ``flush_queries`` callback: nothing is buffered here."""

    def stop(self, drain_s: float = 10.0) -> None:
        deadline = time.monotonic() + drain_s
        while self._inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


_SUMMARY_KEYS = {
    "result": r"Result is\s*:\s*(\S+)",
    "scheduled_qps": r"Scheduled samples per second\s*:\s*([\d.eE+-]+)",
    "completed_qps": r"Completed samples per second\s*:\s*([\d.eE+-]+)",
    "min_latency_ns": r"Min latency \(ns\)\s*:\s*(\d+)",
    "mean_latency_ns": r"Mean latency \(ns\)\s*:\s*(\d+)",
    "p50_latency_ns": r"50\.00 percentile latency \(ns\)\s*:\s*(\d+)",
    "p99_latency_ns": r"99\.00 percentile latency \(ns\)\s*:\s*(\d+)",
    "max_latency_ns": r"Max latency \(ns\)\s*:\s*(\d+)",
    "performance_constraints_satisfied": r"Performance constraints satisfied\s*:\s*(\S+)",
    "min_duration_satisfied": r"Min duration satisfied\s*:\s*(\S+)",
    "min_queries_satisfied": r"Min queries satisfied\s*:\s*(\S+)",
    "early_stopping_satisfied": r"Early stopping satisfied\s*:\s*(\S+)",
}


def parse_summary(text: str) -> dict[str, Any]:
    """Key fields of ``mlperf_log_summary.txt`` (missing ones are left out)."""
    out: dict[str, Any] = {}
    for key, pattern in _SUMMARY_KEYS.items():
        m = re.search(pattern, text)
        if m:
            v = m.group(1)
            out[key] = v if not re.fullmatch(r"[\d.eE+-]+", v) else float(v)
    early = re.search(r"Early Stopping Result:\s*\n(.*?)(?:\n\s*\n|=)", text, re.DOTALL)
    if early:
        out["early_stopping"] = " ".join(
            line.strip(" *") for line in early.group(1).splitlines() if line.strip()
        )
    return out


def _local_config(dilation: float, gpus: int) -> ClusterConfig:
    config = dilate(load_config(None), dilation, MODEL)
    emulated = tuple(dataclasses.replace(w, gpus=gpus) for w in config.workers if w.kind == "emulated")
    return dataclasses.replace(config, workers=emulated).with_ports(free_port(), free_port())


def run_loadgen(
    address: str,
    *,
    qps: float,
    latency_ms: float,
    slo_ms: float,
    percentile: float,
    duration_s: float,
    min_queries: int,
    out_dir: Path,
) -> dict[str, Any]:
    """One LoadGen Server-scenario run against ``address``; returns the parsed summary
    plus the SUT's own counts (``completed``, ``errors``)."""
    import mlperf_loadgen as lg

    settings = lg.TestSettings()
    settings.scenario = lg.TestScenario.Server
    settings.mode = lg.TestMode.PerformanceOnly
    settings.server_target_qps = qps
    settings.server_target_latency_ns = int(latency_ms * 1e6)
    settings.server_target_latency_percentile = percentile
    settings.min_duration_ms = int(duration_s * 1000)
    settings.max_duration_ms = int(duration_s * 1000 * 2 + 10_000)  # a bound, whatever happens
    settings.min_query_count = min_queries
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out_dir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    samples = 1024
    sut_impl = BatonSUT(address, MODEL, slo_ms)
    sut_impl.start()
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    qsl = lg.ConstructQSL(samples, samples, lambda _: None, lambda _: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
    finally:
        sut_impl.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    summary = parse_summary((out_dir / "mlperf_log_summary.txt").read_text())
    summary["completed"] = sut_impl.completed
    summary["errors"] = dict(sut_impl.errors)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="baton bench loadgen",
        description=__doc__.split("\n\n")[0],
        epilog="Exit code: 0 when LoadGen says VALID and Baton answered every query without "
        "an error; 1 otherwise; 2 for bad arguments.",
    )
    p.add_argument(
        "--address",
        help="a running frontend (tcp://host:port); default: start "
        "the emulated part of the embedded default cluster on free ports",
    )
    p.add_argument(
        "--qps",
        type=float,
        help="LoadGen's server_target_qps (default with a local cluster: 50%% of "
        "the analytic coordinated bound; required with --address)",
    )
    p.add_argument(
        "--latency-ms", type=float, help="LoadGen's latency bound (default: the model's SLO, dilated)"
    )
    p.add_argument("--slo-ms", type=float, help="the SLO sent with each request (default: --latency-ms)")
    p.add_argument(
        "--percentile", type=float, default=0.99, help="latency percentile that must meet the bound (0.99)"
    )
    p.add_argument(
        "--duration-s", type=float, default=20.0, help="LoadGen's minimum duration in seconds (20)"
    )
    p.add_argument("--min-queries", type=int, default=100, help="LoadGen's minimum query count (100)")
    p.add_argument(
        "--dilation",
        type=float,
        help=f"multiply k, c and the SLO by this for the local cluster (default: "
        f"{AUTO_DILATION:g} on machines with < 8 cores, else 1)",
    )
    p.add_argument("--gpus", type=int, default=8, help="emulated GPUs in the local cluster (8)")
    p.add_argument("--out", default="results/loadgen", help="directory for LoadGen's logs")
    args = p.parse_args(argv)
    if args.address and args.qps is None:
        p.error("--qps is required with --address")
    if args.address and args.latency_ms is None:
        p.error("--latency-ms is required with --address")
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        print("MLPerf LoadGen is not installed: pip install mlcommons-loadgen")
        return 1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    cluster: Cluster | None = None
    dilation = 1.0
    try:
        if args.address:
            address = args.address
            latency_ms = args.latency_ms
            qps = args.qps
            print(f"system under test: Baton at {address}, model {MODEL!r}")
        else:
            dilation = args.dilation if args.dilation else (AUTO_DILATION if cores < 8 else 1.0)
            config = _local_config(dilation, args.gpus)
            m = config.model(MODEL)
            assert m.k_ms is not None and m.c_ms is not None and m.slo_ms is not None
            latency_ms = args.latency_ms or m.slo_ms
            bound = analytic_bound(args.gpus, int(m.k_ms * 1e6), int(m.c_ms * 1e6), int(m.slo_ms * 1e6))
            qps = args.qps if args.qps is not None else 0.5 * bound.goodput_rps
            print(
                f"system under test: local Baton cluster, {args.gpus} emulated GPUs, "
                f"l(b) = {m.k_ms:.3f} ms*b + {m.c_ms:.3f} ms, SLO {m.slo_ms:g} ms"
                + (
                    f" (time-dilated x{dilation:g} of 1.082 ms*b + 5.204 ms, SLO 25 ms: {cores} cores here)"
                    if dilation != 1.0
                    else ""
                )
            )
            print(
                f"analytic coordinated bound {bound.goodput_rps:.1f} req/s; "
                f"target {qps:.1f} QPS = {qps / bound.goodput_rps:.0%} of it"
            )
            cluster = Cluster(config, log_dir=str(out / "cluster"))
            cluster.start()
            address = config.frontend_address
        slo_ms = args.slo_ms or latency_ms
        print(
            f"machine: {platform.machine()}, {cores} cores; LoadGen Server scenario: "
            f"{qps:g} QPS, p{args.percentile * 100:g} <= {latency_ms:g} ms, "
            f">= {args.duration_s:g} s and >= {args.min_queries} queries",
            flush=True,
        )
        res = run_loadgen(
            address,
            qps=qps,
            latency_ms=latency_ms,
            slo_ms=slo_ms,
            percentile=args.percentile,
            duration_s=args.duration_s,
            min_queries=args.min_queries,
            out_dir=out,
        )
    finally:
        if cluster is not None:
            cluster.stop()
    res.update(
        target_qps=qps,
        latency_bound_ms=latency_ms,
        percentile=args.percentile,
        dilation=dilation,
        cores=cores,
    )
    (out / "baton_loadgen.json").write_text(json.dumps(res, indent=1))
    ms = {k: res[k] / 1e6 for k in ("p50_latency_ns", "p99_latency_ns", "max_latency_ns") if k in res}
    print(f"LoadGen result: {res.get('result', 'UNKNOWN')}")
    print(
        f"  scheduled {res.get('scheduled_qps', float('nan')):.2f} QPS, completed "
        f"{res.get('completed_qps', float('nan')):.2f} QPS, {res['completed']} queries"
    )
    print("  latency ms: " + ", ".join(f"{k.split('_')[0]} {v:.2f}" for k, v in ms.items()))
    for key in (
        "performance_constraints_satisfied",
        "min_duration_satisfied",
        "min_queries_satisfied",
        "early_stopping_satisfied",
    ):
        if key in res:
            print(f"  {key.replace('_', ' ')}: {res[key]}")
    if "early_stopping" in res:
        print(f"  early stopping: {res['early_stopping']}")
    if res["errors"]:
        print(f"  Baton answered {sum(res['errors'].values())} queries with errors: {res['errors']}")
    print(f"LoadGen logs in {out}/ (mlperf_log_summary.txt, mlperf_log_detail.txt)")
    return 0 if res.get("result") == "VALID" and not res["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
