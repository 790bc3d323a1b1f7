"""``baton demo`` (what ``make run`` does): a real cluster, a real load, a summary.

It starts the cluster (the embedded default unless a file is given) as separate processes
on free loopback ports, sends an open-loop Poisson load to the emulated model at a
fraction of its analytic coordinated bound, sends a few real-model requests (a photo of a
cat to MobileNetV2, a paraphrase and an unrelated sentence to MiniLM), prints a summary
and stops every process. It exits non-zero if a request went unanswered or a process
failed to stop cleanly.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import tempfile
import time
from typing import Any

__all__ = ["run_demo", "dilate"]


def dilate(config: Any, factor: float, model: str) -> Any:
    """A copy of ``config`` with ``model``'s k, c and SLO multiplied by ``factor``."""
    if factor == 1.0:
        return config
    models = tuple(
        dataclasses.replace(
            m, k_ms=m.k_ms * factor, c_ms=m.c_ms * factor, slo_ms=(m.slo_ms or config.default_slo_ms) * factor
        )
        if m.name == model
        else m
        for m in config.models
    )
    return dataclasses.replace(config, models=models)


def _real_model_checks(address: str) -> dict[str, Any]:
    import numpy as np
    from PIL import Image
    from skimage import data

    from central.client import Client, cosine, image_bytes, text

    out: dict[str, Any] = {}
    buf = io.BytesIO()
    cat = data.chelsea()  # type: ignore[no-untyped-call]  # scikit-image has no annotations
    Image.fromarray(cat).save(buf, format="JPEG", quality=92)
    with Client(address) as client:
        t0 = time.perf_counter()
        res = client.infer("mobilenet_v2", image_bytes(buf.getvalue()))
        out["classify_ms"] = (time.perf_counter() - t0) * 1e3
        label = res["labels"][0]
        out["top1"] = label.decode() if isinstance(label, bytes) else str(label)
        out["top1_score"] = float(res["scores"][0])
        out["top1_id"] = int(res["class_ids"][0])
        a = "A man is playing a guitar on stage."
        b = "Someone performs music with a guitar in front of an audience."
        c = "The stock market fell sharply this morning."
        ea, eb, ec = (client.infer("minilm", text(s))["embedding"] for s in (a, b, c))
        out["sentences"] = (a, b, c)
        out["sim_paraphrase"] = cosine(ea, eb)
        out["sim_unrelated"] = cosine(ea, ec)
        out["embedding_norm"] = float(np.linalg.norm(ea))
    return out


def run_demo(args: argparse.Namespace) -> int:
    from central.client import BatonError, query_stats
    from central.client.load import LoadSpec, run_load, summarize
    from central.cluster import Cluster, free_port, load_config
    from central.policy.bound import analytic_bound
    from central.protocol.records import BatchRecord

    config = load_config(args.config)
    if args.dilation == "auto":
        args.dilation = 1.0 if (os.cpu_count() or 1) >= 8 else 4.0
        why = f" (auto: {os.cpu_count()} cores)"
    else:
        try:
            args.dilation = float(args.dilation)
        except ValueError:
            print(f"baton demo: --dilation must be a number or 'auto', got {args.dilation!r}")
            return 2
        why = ""
    if not args.dilation > 0:
        print("baton demo: --dilation must be > 0")
        return 2
    config = dilate(config, args.dilation, args.model)
    config = config.with_ports(free_port(), free_port())
    if args.no_real:
        config = dataclasses.replace(config, workers=tuple(w for w in config.workers if w.kind != "torch"))
    spec = config.model(args.model)
    gpus = sum(w.gpus for w in config.workers if args.model in w.models)
    assert spec.k_ms is not None and spec.c_ms is not None and spec.slo_ms is not None
    bound = analytic_bound(gpus, int(spec.k_ms * 1e6), int(spec.c_ms * 1e6), int(spec.slo_ms * 1e6))
    uncoord = analytic_bound(
        gpus, int(spec.k_ms * 1e6), int(spec.c_ms * 1e6), int(spec.slo_ms * 1e6), coordinated=False
    )
    rate = args.load * bound.goodput_rps
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="baton-demo-")
    print(
        f"Baton demo: {gpus} emulated GPUs, l(b) = {spec.k_ms:.3f} ms*b + {spec.c_ms:.3f} ms, "
        f"SLO {spec.slo_ms:g} ms"
    )
    if args.dilation != 1:
        print(
            f"  time-dilated x{args.dilation:g}{why}: k, c and SLO x{args.dilation:g} "
            "(every ratio unchanged); --dilation 1 runs the full-speed profile"
        )
    print(
        f"analytic bound: coordinated {bound.goodput_rps:.0f} req/s (b*={bound.batch}), "
        f"uncoordinated {uncoord.goodput_rps:.0f} req/s (b={uncoord.batch})"
    )
    print(f"starting the cluster (logs in {log_dir}) ...", flush=True)
    cluster = Cluster(config, log_dir=log_dir, policy_args=tuple(getattr(args, "policy_args", None) or ()))
    t0 = time.monotonic()
    cluster.start()
    print(
        f"cluster ready in {time.monotonic() - t0:.1f} s; sending {rate:.0f} req/s "
        f"({args.load:.0%} of the bound) for {args.duration:g} s ...",
        flush=True,
    )
    failures: list[str] = []
    try:
        load = LoadSpec(
            config.frontend_address, args.model, rate, args.duration, spec.slo_ms, seed=args.seed, senders=1
        )
        rec = run_load(load)
        summary = summarize(rec, spec.slo_ms, args.duration)
        sched = query_stats(config.scheduler_address, with_batches=True)
        batches = [BatchRecord.of(row) for row in sched.get("batches", [])]
        sizes = [b.size for b in batches if b.model == args.model]
        real = None
        if not args.no_real:
            try:
                real = _real_model_checks(config.frontend_address)
            except BatonError as exc:
                failures.append(f"a real-model request failed: {type(exc).__name__}: {exc}")
        fe = query_stats(config.frontend_address)
    finally:
        codes = cluster.stop()
    mean_batch = sum(sizes) / len(sizes) if sizes else 0.0
    out = summary["outcomes"]
    print()
    print(
        f"requests            {summary['requests']}  (ok {out['ok']}, "
        f"deadline exceeded {out['deadline_exceeded']}, failed {out['failed']}, "
        f"other {summary['requests'] - out['ok'] - out['deadline_exceeded'] - out['failed']})"
    )
    print(
        f"SLO attainment      {summary['slo_attainment']:.2%}  "
        f"(latency p50 {summary['latency_ms']['p50'] or 0:.1f} ms, p99 {summary['latency_ms']['p99'] or 0:.1f} ms)"
    )
    print(f"goodput             {summary['goodput_rps']:.0f} req/s of {summary['offered_rps']:.0f} offered")
    print(f"mean batch size     {mean_batch:.2f}  (bound's b* = {bound.batch})")
    print(
        f"goodput / bound     {summary['goodput_rps'] / bound.goodput_rps:.3f}  "
        f"(offered / bound {summary['offered_rps'] / bound.goodput_rps:.3f})"
    )
    print(
        f"send lateness       p50 {summary['send_lateness_ms']['p50']:.2f} ms, "
        f"p99 {summary['send_lateness_ms']['p99']:.2f} ms"
    )
    print(
        f"scheduler timer     lateness p50 {sched['timer_lateness_us']['p50']:.0f} us, "
        f"p99 {sched['timer_lateness_us']['p99']:.0f} us; "
        f"{sched['counters']['request_bytes_in'] / max(1, sched['counters']['requests_in']):.0f} "
        f"metadata bytes in per request"
    )
    if "grant_round_trip_us" in sched:  # a split scheduler (--shards K)
        rtt = sched["grant_round_trip_us"]
        print(
            f"matcher <-> shards  grant round trip p50 {rtt['p50']:.0f} us, "
            f"p99 {rtt['p99']:.0f} us ({len(sched.get('shards', []))} shard processes; "
            f"--dispatch-cost-us must cover it)"
        )
    if real is not None:
        print(
            f"MobileNetV2         chelsea the cat -> {real['top1']!r} "
            f"(class {real['top1_id']}, p={real['top1_score']:.2f}, {real['classify_ms']:.0f} ms)"
        )
        print(
            f"MiniLM similarity   paraphrase {real['sim_paraphrase']:.3f} vs "
            f"unrelated {real['sim_unrelated']:.3f}"
        )
    print("processes stopped   " + ", ".join(f"{r}={c}" for r, c in codes.items()))
    if out["no_answer"]:
        failures.append(f"{out['no_answer']} requests got no answer")
    if summary["answered_twice"]:
        failures.append(f"{summary['answered_twice']} requests were answered more than once")
    if any(c != 0 for c in codes.values()):
        failures.append("a process did not exit cleanly")
    if fe["pending"]:
        failures.append(f"the frontend still held {fe['pending']} requests")
    if failures:
        print("DEMO FAILED: " + "; ".join(failures))
        return 1
    if getattr(args, "json", None):
        print(json.dumps(summary))
    return 0
