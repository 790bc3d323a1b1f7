"""``baton bench cost``: CPU microseconds per request in each process, next to a floor.

Theory of operation. Each run starts a real cluster (one scheduler, one frontend, one
worker process with 8 emulated GPUs, Symphony's ResNet-50 profile and SLO, undilated
unless ``--dilation``), replays open-loop Poisson arrivals at a rate through the wire
ledger (``central.client.ledger``, in a process of its own) and reads every process's CPU
time from ``/proc/PID/task/*/schedstat`` (nanoseconds on a CPU, every thread) before and
after. CPU per request = the delta / the requests sent; it includes whatever the process
does while idle at that rate (timers, heartbeats), as a user would pay it.

The floor runs in the same invocation, at the same rates, with the same sender: a bare
pyzmq relay over the same hops (client -> frontend -> scheduler -> worker, the scheduler's
route back to the frontend, the payload frontend -> worker, the result worker ->
frontend, done worker -> scheduler, the reply frontend -> client), one plain poll loop
per process, one message per request per hop, no batching, no policy. The ratio of each
role to its floor says how much Baton's own work costs beyond moving the bytes.

``--profile`` (on by default) then samples each Baton role with py-spy during one more
run at the highest rate and prints the functions where each spends its time (self
samples, by function and file), so the next person knows where to look. This machine is
shared and noisy: compare ratios measured side by side in one invocation, not absolute
figures across runs.

Run: ``.venv/bin/python -m bench cost`` (about a minute) or
``.venv/bin/python -m bench cost --rates 1000 3000 --duration 8 --out results/cost``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "proc_cpu_ns", "top_functions", "ROLES"]

ROLES = ("scheduler", "frontend", "worker", "sender")
MODEL = "symphony"


# ------------------------------------------------------------------- CPU from /proc


def proc_cpu_ns(pid: int) -> int:
    """CPU time of every thread of ``pid`` so far, in ns (``/proc/PID/task/*/schedstat``)."""
    total = 0
    task_dir = Path(f"/proc/{pid}/task")
    for task in task_dir.iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # a thread that ended between the listing and the read
    return total


def _cpu_all(pids: dict[str, int]) -> dict[str, int]:
    return {role: proc_cpu_ns(pid) for role, pid in pids.items()}


# ------------------------------------------------------------------------ the sender


def _send(address: str, rate: float, duration: float, slo_ms: float, seed: int, out: Any, go: Any) -> None:
    """The load process: waits for ``go``, replays Poisson arrivals, reports a summary."""
    from central.client.load import LoadSpec, poisson_times, run_load, summarize

    offsets = poisson_times(rate, duration, seed)
    go.wait()
    rec = run_load(LoadSpec(address, MODEL, rate, duration, slo_ms, seed=seed), offsets=offsets)
    s = summarize(rec, slo_ms, duration)
    out.put(
        {
            k: s[k]
            for k in (
                "requests",
                "never_answered",
                "answered_twice",
                "slo_attainment",
                "latency_ms",
                "send_lateness_ms",
                "outcomes",
            )
        }
    )


def _measure(
    address: str,
    pids: dict[str, int],
    rate: float,
    duration: float,
    slo_ms: float,
    seed: int,
    during: Callable[[dict[str, int]], Any] | None = None,
) -> dict[str, Any]:
    """One load run against ``address``; CPU per request of ``pids`` and the sender."""
    ctx = multiprocessing.get_context("spawn")
    out, go = ctx.Queue(), ctx.Event()
    sender = ctx.Process(target=_send, args=(address, rate, duration, slo_ms, seed, out, go))
    sender.start()
    try:
        time.sleep(1.0)  # its imports are done before the clock starts
        every = {**pids, "sender": sender.pid or 0}
        before = _cpu_all(every)
        t0 = time.monotonic()
        go.set()
        extra = during(every) if during is not None else None
        summary = out.get(timeout=duration + slo_ms / 1e3 + 30.0)
        after = _cpu_all(every)
        wall = time.monotonic() - t0
    finally:
        sender.join(timeout=10.0)
        if sender.is_alive():
            sender.kill()
    n = max(1, summary["requests"])
    cpu_us = {role: (after[role] - before[role]) / 1e3 / n for role in every}
    return {
        "rate_rps": rate,
        "wall_s": wall,
        "summary": summary,
        "cpu_us_per_request": cpu_us,
        "extra": extra,
    }


# ------------------------------------------------------------------------- Baton


def _baton_cluster(dilation: float, log_dir: str) -> Any:
    from central.cluster import Cluster, load_config
    from central.demo import dilate

    config = dilate(load_config(None), dilation, MODEL)
    config = dataclasses.replace(config, workers=tuple(w for w in config.workers if w.kind == "emulated"))
    from central.cluster import free_port

    return Cluster(config.with_ports(free_port(), free_port()), log_dir=log_dir)


def _role_pids(cluster: Any) -> dict[str, int]:
    pids = {}
    for role, proc in cluster.procs:
        pids["worker" if role.startswith("worker") else role] = proc.pid
    return pids


# ------------------------------------------------------------------------- floor


def _relay_frontend(client_addr: str, sched_addr: str, data_addr: str, stop_after_s: float) -> None:
    """Floor frontend: holds each request's frames, forwards only what the hops need."""
    import zmq

    from central.protocol import Reply, Status, encode

    ctx = zmq.Context()
    clients = ctx.socket(zmq.ROUTER)
    clients.bind(client_addr)
    sched = ctx.socket(zmq.DEALER)
    sched.connect(sched_addr)
    data = ctx.socket(zmq.DEALER)
    data.connect(data_addr)
    poller = zmq.Poller()
    for s in (clients, sched, data):
        poller.register(s, zmq.POLLIN)
    import msgpack

    pending: dict[int, tuple[bytes, int, list[Any]]] = {}
    seq = 0
    end = time.monotonic() + stop_after_s
    while time.monotonic() < end:
        for sock, _ in poller.poll(100):
            for frames in _drain(sock, copy=False):  # everything queued, one poll per turn
                if sock is clients:
                    ident, header, *bufs = frames
                    tag = msgpack.unpackb(header.bytes)[2]  # [version, kind, tag, ...]
                    seq += 1
                    pending[seq] = (ident.bytes, tag, bufs)
                    sched.send_multipart([b"M", seq.to_bytes(8, "little")])
                elif sock is sched:
                    rid = frames[1].bytes
                    data.send_multipart([b"P", rid, *pending[int.from_bytes(rid, "little")][2]], copy=False)
                else:
                    ident, tag, _ = pending.pop(int.from_bytes(frames[1].bytes, "little"))
                    clients.send_multipart([ident, *encode(Reply(tag, int(Status.OK), "", ()))])
    ctx.destroy(linger=0)


def _drain(sock: Any, copy: bool = True) -> list[Any]:
    """Every message queued on ``sock`` now (the relays read as Baton's roles do: all of
    a loop turn's messages after one wake-up)."""
    import zmq

    out = []
    while True:
        try:
            out.append(sock.recv_multipart(zmq.NOBLOCK, copy=copy))
        except zmq.Again:
            return out


def _relay_scheduler(addr: str, stop_after_s: float) -> None:
    """Floor scheduler: each request's metadata -> an execute to the worker and a route
    back to the frontend; counts the worker's done."""
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(addr)
    worker: bytes | None = None
    end = time.monotonic() + stop_after_s
    while time.monotonic() < end:
        if not sock.poll(100):
            continue
        for ident, kind, *rest in _drain(sock):
            if kind == b"H":
                worker = ident
            elif kind == b"M" and worker is not None:
                sock.send_multipart([worker, b"X", rest[0]])
                sock.send_multipart([ident, b"R", rest[0]])
    ctx.destroy(linger=0)


def _relay_worker(sched_addr: str, data_addr: str, stop_after_s: float) -> None:
    """Floor worker: runs nothing; answers a request once its execute and payload are in."""
    import zmq

    ctx = zmq.Context()
    sched = ctx.socket(zmq.DEALER)
    sched.connect(sched_addr)
    sched.send_multipart([b"H"])
    data = ctx.socket(zmq.ROUTER)
    data.bind(data_addr)
    poller = zmq.Poller()
    poller.register(sched, zmq.POLLIN)
    poller.register(data, zmq.POLLIN)
    executes: set[bytes] = set()
    payloads: dict[bytes, bytes] = {}  # rid -> the frontend that sent it
    result = np.zeros(2, np.float32).tobytes()
    end = time.monotonic() + stop_after_s

    def answer(rid: bytes, frontend: bytes) -> None:
        data.send_multipart([frontend, b"D", rid, result])
        sched.send_multipart([b"F", rid])

    while time.monotonic() < end:
        for sock, _ in poller.poll(100):
            for frames in _drain(sock):
                if sock is sched:
                    rid = frames[1]
                    fe = payloads.pop(rid, None)
                    if fe is None:
                        executes.add(rid)
                    else:
                        answer(rid, fe)
                else:
                    fe, rid = frames[0], frames[2]
                    if rid in executes:
                        executes.discard(rid)
                        answer(rid, fe)
                    else:
                        payloads[rid] = fe
    ctx.destroy(linger=0)


class Floor:
    """The three relay processes; ``address`` is the client-facing one."""

    def __init__(self, max_s: float) -> None:
        from central.cluster import free_port

        self.address = f"tcp://127.0.0.1:{free_port()}"
        sched, data = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        ctx = multiprocessing.get_context("spawn")
        self.procs = {
            "scheduler": ctx.Process(target=_relay_scheduler, args=(sched, max_s)),
            "worker": ctx.Process(target=_relay_worker, args=(sched, data, max_s)),
            "frontend": ctx.Process(target=_relay_frontend, args=(self.address, sched, data, max_s)),
        }

    def __enter__(self) -> Floor:
        for p in self.procs.values():
            p.start()
        time.sleep(1.5)  # imports done, sockets connected, the worker said hello
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs.values():
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)
            p.join(timeout=5.0)
            if p.is_alive():
                p.kill()
                p.join()

    @property
    def pids(self) -> dict[str, int]:
        return {role: p.pid or 0 for role, p in self.procs.items()}


# ---------------------------------------------------------------------- profiles


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, or on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def top_functions(raw: Iterable[str], n: int = 8) -> list[tuple[str, float]]:
    """``(function (file), share of samples)`` by self samples, from py-spy's raw output
    (one ``frame;frame;...;leaf count`` line per distinct stack)."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        name, _, where = leaf.partition(" (")
        file = where.split(":")[0]
        counts[f"{name} ({Path(file).name})"] += int(count)
        total += int(count)
    return [(f, c / total) for f, c in counts.most_common(n)] if total else []


def _profile_during(duration: float, folder: Path) -> Callable[[dict[str, int]], dict[str, Any]]:
    spy = py_spy()

    def start(pids: dict[str, int]) -> dict[str, Any]:
        if spy is None:
            return {"skipped": "py-spy is not installed (make install puts it in .venv)"}
        procs = {}
        for role, pid in pids.items():
            if role == "sender":
                continue
            procs[role] = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, int(duration))),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(folder / f"{role}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        return {"procs": procs}

    return start


def _profiles(started: dict[str, Any], folder: Path) -> dict[str, Any]:
    if "skipped" in started:
        return started
    out: dict[str, Any] = {}
    for role, proc in started["procs"].items():
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out[role] = {"error": "py-spy did not finish"}
            continue
        path = folder / f"{role}.txt"
        if proc.returncode != 0 or not path.exists():
            out[role] = {"error": (err or b"").decode(errors="replace").strip()[-300:]}
            continue
        out[role] = {"top": top_functions(path.read_text().splitlines())}
    return out


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="baton bench cost",
        description="CPU microseconds per request in each Baton process, beside a bare pyzmq "
        "relay over the same hops (the floor), measured in one run; then where "
        "each role spends its time (py-spy).",
    )
    p.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[1000.0, 3000.0],
        help="offered rates, req/s (default: 1000 3000)",
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per rate (default 5)")
    p.add_argument(
        "--dilation",
        type=float,
        default=1.0,
        help="multiply the profile and SLO by this (default 1: the true speed)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip the py-spy pass")
    p.add_argument("--top", type=int, default=8, help="functions shown per role (default 8)")
    p.add_argument("--out", default="results/cost", help="folder for cost.json and py-spy output")
    return p


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["| rate req/s | role | Baton us/req | floor us/req | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        b, f = r["baton"]["cpu_us_per_request"], r["floor"]["cpu_us_per_request"]
        for role in (*ROLES, "server"):
            bv = b[role] if role != "server" else sum(b[x] for x in ROLES[:3])
            fv = f[role] if role != "server" else sum(f[x] for x in ROLES[:3])
            ratio = f"{bv / fv:.2f}" if fv > 0 else "-"
            lines.append(f"| {r['rate_rps']:.0f} | {role} | {bv:.1f} | {fv:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not Path("/proc/self/task").is_dir():
        print("baton bench cost: needs Linux /proc (per-thread schedstat)", file=sys.stderr)
        return 2
    if any(r <= 0 for r in args.rates) or args.duration <= 0 or args.dilation <= 0:
        print("baton bench cost: rates, duration and dilation must be > 0", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slo_ms = 25.0 * args.dilation
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    longest = (args.duration + 40.0) * (len(args.rates) + 1) + 60.0
    with tempfile.TemporaryDirectory(prefix="baton-cost-") as logs:
        cluster = _baton_cluster(args.dilation, logs)
        with cluster, Floor(longest) as floor:
            baton_pids = _role_pids(cluster)
            for rate in args.rates:
                row: dict[str, Any] = {"rate_rps": rate}
                for name, address, pids in (
                    ("floor", floor.address, floor.pids),
                    ("baton", cluster.config.frontend_address, baton_pids),
                ):
                    m = _measure(address, pids, rate, args.duration, slo_ms, args.seed)
                    s = m["summary"]
                    if s["never_answered"] or s["answered_twice"]:
                        problems.append(
                            f"{name} at {rate:g} req/s: {s['never_answered']} never "
                            f"answered, {s['answered_twice']} answered twice"
                        )
                    row[name] = m
                    print(
                        f"  {name:5s} {rate:7.0f} req/s: "
                        + ", ".join(f"{role} {us:.1f}" for role, us in m["cpu_us_per_request"].items())
                        + f" us/req; attainment {s['slo_attainment']:.4f}",
                        flush=True,
                    )
                rows.append(row)
            profiles: dict[str, Any] = {}
            if args.profile:
                rate = max(args.rates)
                folder = out / "py-spy"
                folder.mkdir(exist_ok=True)
                m = _measure(
                    cluster.config.frontend_address,
                    baton_pids,
                    rate,
                    args.duration,
                    slo_ms,
                    args.seed + 1,
                    during=_profile_during(args.duration, folder),
                )
                profiles = _profiles(m["extra"], folder)
    md = [
        f"# Baton CPU per request (`baton bench cost {' '.join(argv or sys.argv[1:])}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; profile l(b) = {1.082 * args.dilation:g} b + "
        f"{5.204 * args.dilation:g} ms, SLO {slo_ms:g} ms, 8 emulated GPUs in one worker"
        + ("" if args.dilation == 1 else f" (time-dilated x{args.dilation:g})")
        + ".",
        "",
        _table(rows),
        "",
        "'server' = scheduler + frontend + worker. The floor is a bare pyzmq relay over the "
        "same hops, measured in this run with the same sender.",
    ]
    notes = [
        "`run (runners.py)` is time in the event loop's own C code (uvloop: polling and "
        "its C callbacks) and `send`/`recv_multipart (socket.py)` time in pyzmq's C sends "
        "and receives; idle waiting is not sampled."
    ]
    if profiles:
        md += ["", f"## Where each role spends its time (py-spy, self samples, {max(args.rates):g} req/s)"]
        for role, p in profiles.items():
            if role == "skipped":
                md += ["", f"profiles skipped: {p}"]
                continue
            md += ["", f"### {role}", ""]
            if "error" in p:
                md.append(f"py-spy failed: {p['error']}")
                continue
            md += [f"- {share * 100:5.1f}%  {name}" for name, share in p["top"][: args.top]]
        md += ["", *notes]
    text = "\n".join(md) + "\n"
    (out / "summary.md").write_text(text)
    (out / "cost.json").write_text(
        json.dumps(
            {"args": vars(args), "rows": rows, "profiles": profiles, "problems": problems},
            default=lambda o: None,
        )
    )
    print(text)
    for p in problems:
        print(f"FAILED: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
