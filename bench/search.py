"""Goodput search: the highest mean rate a policy serves with >= 99% of requests on time.

Theory of operation: for a cluster (true profiles, SLOs, workers), a policy name and a
trace kind, ``search_goodput`` bisects on the offered mean rate. Each probe builds a
trace of about ``requests`` arrivals at that rate with the *same* seed (a synthetic
kind is regenerated, a replayed log is recompressed), simulates it and checks SLO
attainment against ``target``. The bracket starts at the analytic coordinated bound
(``central.policy.bound``), doubling while it still passes, and the bisection stops once
it is ``rel_tol`` narrow. Attainment is not perfectly monotone in the rate (a different
rate is a different sample path), so the answer is *a* threshold; the fixed seed and a
few tens of thousands of requests make it repeatable and stable to a percent or two.

Run: ``.venv/bin/python -m bench.search --trace poisson gamma --k-ms 1.082 --c-ms 5.204
--slo-ms 25 -n 8 --cv 3`` (a table of every registered policy, or ``--policy symphony
eager``; ``--json`` adds the probes).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.sim.config import Cluster, Noise, SimConfig
from bench.sim.engine import simulate_policy
from bench.traces import Trace, gamma, piecewise, poisson, replay_csv
from central.policy import PolicyConfig, Profile, analytic_bound, policy_names

__all__ = ["Probe", "SearchResult", "TRACE_KINDS", "bound_rps", "main", "search_goodput",
           "trace_maker"]

MS = 1_000_000
TRACE_KINDS = ("poisson", "gamma", "piecewise", "replay")
# A piecewise trace's shape: (share of the duration, multiple of the mean rate); the
# shares' weighted multiples average to 1, so the mean rate is the rate asked for.
PIECEWISE_SHAPE = ((0.25, 0.6), (0.25, 1.4), (0.25, 0.8), (0.25, 1.2))
_BURST_S, _BURST_FACTOR = 0.05, 4.0  # each burst: 50 ms at 4x the local rate

TraceMaker = Callable[[float, float, int], Trace]  # (rate_rps, duration_s, seed) -> Trace


@dataclass(frozen=True, slots=True)
class Probe:
    """One simulated run of the search."""

    rate_rps: float  # offered mean rate
    attainment: float  # fraction of requests within SLO
    goodput_rps: float  # requests within SLO per second
    requests: int
    passed: bool  # attainment >= target


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The search's answer and how it got there."""

    rate_rps: float  # the highest passing rate found (0.0: none passed)
    goodput_rps: float  # goodput measured at that rate
    attainment: float  # attainment at that rate
    bound_rps: float  # the analytic coordinated bound, without overheads, for reference
    probes: tuple[Probe, ...]  # in the order they ran


def trace_maker(
    kind: str,
    models: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
    cv: float = 3.0,
    csv_path: str | Path | None = None,
    column: str = "TIMESTAMP",
    bursts: int = 0,
) -> TraceMaker:
    """A function ``(rate_rps, duration_s, seed) -> Trace`` for one trace kind.

    ``poisson`` and ``gamma`` (with ``cv``) split arrivals over ``models`` by ``weights``;
    ``piecewise`` follows ``PIECEWISE_SHAPE`` with ``bursts`` bursts on top; ``replay``
    recompresses ``csv_path`` (one model only). Raises ``ValueError`` for an unknown kind,
    a replay without a path or with several models.
    """
    names = tuple(models)
    if kind == "poisson":
        return lambda rate, dur, seed: poisson(rate, dur, seed, model=names, weights=weights)
    if kind == "gamma":
        return lambda rate, dur, seed: gamma(rate, cv, dur, seed, model=names, weights=weights)
    if kind == "piecewise":
        def make(rate: float, dur: float, seed: int) -> Trace:
            # bursts add (factor - 1) x the local rate for burst_s each: take it off the
            # base so that the mean rate is the one asked for
            extra = bursts * _BURST_S * (_BURST_FACTOR - 1.0) / dur
            base = rate / (1.0 + extra)
            segments = [(share * dur, mult * base) for share, mult in PIECEWISE_SHAPE]
            return piecewise(segments, seed, bursts=bursts, burst_s=_BURST_S,
                             burst_factor=_BURST_FACTOR, model=names, weights=weights)
        return make
    if kind == "replay":
        if csv_path is None:
            raise ValueError("the replay kind needs csv_path")
        if len(names) != 1:
            raise ValueError("the replay kind serves one model")
        path = Path(csv_path)
        return lambda rate, dur, seed: replay_csv(path, rate, column, dur, model=names[0])
    raise ValueError(f"unknown trace kind {kind!r}; known: {', '.join(TRACE_KINDS)}")


def bound_rps(cluster: Cluster) -> float:
    """Sum over models of the analytic coordinated bound on the workers that serve each.

    Workers shared by several models are counted for each, so this overestimates a
    shared cluster: it is a bracket for the search, not a promise.
    """
    return sum(_model_bounds(cluster).values())


def _model_bounds(cluster: Cluster) -> dict[str, float]:
    """Each served model's analytic coordinated bound on the workers that serve it."""
    out: dict[str, float] = {}
    for name, prof in cluster.profiles.items():
        n = sum(1 for ms in cluster.workers if name in ms)
        if n:
            out[name] = analytic_bound(n, prof.k_ns, prof.c_ns, cluster.slo_ns[name],
                                       max_batch=prof.max_batch).goodput_rps
    return out


def search_goodput(
    policy: str,
    cluster: Cluster,
    *,
    trace: str | TraceMaker = "poisson",
    cv: float = 3.0,
    csv_path: str | Path | None = None,
    weights: Sequence[float] | None = None,
    requests: int = 20_000,
    seed: int = 1,
    target: float = 0.99,
    rel_tol: float = 0.02,
    max_probes: int = 16,
    config: SimConfig | None = None,
    policy_config: PolicyConfig | None = None,
    log: Callable[[str], None] | None = None,
    min_slos: float = 50.0,
) -> SearchResult:
    """Bisect on the mean rate for the highest one at which ``target`` of requests meet SLO.

    ``trace`` is a kind (``TRACE_KINDS``; ``cv`` for gamma, ``csv_path`` for replay) or
    a ``trace_maker``-style function; by default arrivals split over the served models in
    proportion to their bounds. Raises ``ValueError`` when no model is served, or for a
    bad kind, ``requests < 100`` or ``target`` outside (0, 1].

    Each probe's trace lasts at least ``min_slos`` times the longest SLO (more requests
    than ``requests`` at high rates): workers keep serving for up to one SLO after the
    last arrival, and over a trace only a few SLOs long that tail lets the goodput,
    counted over the trace's span, exceed what the workers can sustain (seen: 1.06x the
    bound at N=32, SLO 100 ms with 20,000 requests in 0.68 s).
    """
    served = [m for m in cluster.profiles if any(m in ms for ms in cluster.workers)]
    if not served:
        raise ValueError("no worker serves any model")
    if requests < 100:
        raise ValueError(f"requests must be >= 100, got {requests}")
    if not 0 < target <= 1:
        raise ValueError(f"target must lie in (0, 1], got {target}")
    if weights is None and len(served) > 1:
        bounds = _model_bounds(cluster)
        weights = [bounds[m] for m in served]
        if not sum(weights) > 0:
            weights = None
    make = trace if callable(trace) else trace_maker(
        trace, served, weights=weights, cv=cv, csv_path=csv_path)
    bound = bound_rps(cluster)
    probes: list[Probe] = []
    min_duration_s = min_slos * max(cluster.slo_ns.values()) / 1e9

    def probe(rate: float) -> Probe:
        tr = make(rate, max(requests / rate, min_duration_s), seed)
        res = simulate_policy(policy, tr, cluster, config, policy_config)
        p = Probe(rate, res.attainment, res.goodput_rps, res.n_requests,
                  res.attainment >= target)
        probes.append(p)
        if log is not None:
            log(f"probe {rate:10.1f} req/s: attainment {p.attainment:.4f} "
                f"goodput {p.goodput_rps:10.1f} {'pass' if p.passed else 'fail'}")
        return p

    best: Probe | None = None
    lo, hi = 0.0, max(bound, 1.0)
    p = probe(hi)
    while p.passed and len(probes) < max_probes:  # the bound is beaten: widen
        lo, best = hi, p
        hi *= 2
        p = probe(hi)
    while hi - lo > rel_tol * hi and len(probes) < max_probes:
        mid = (lo + hi) / 2
        p = probe(mid)
        if p.passed:
            lo, best = mid, p
        else:
            hi = mid
    if best is None:
        return SearchResult(0.0, 0.0, 0.0, bound, tuple(probes))
    return SearchResult(best.rate_rps, best.goodput_rps, best.attainment, bound, tuple(probes))


def main(argv: list[str] | None = None) -> int:
    """Search each (trace kind, policy) pair for one model and print a table and JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n")[0])
    p.add_argument("--policy", nargs="+", default=list(policy_names()),
                   help="policies to search (default: every registered one)")
    p.add_argument("--trace", nargs="+", choices=TRACE_KINDS, default=["poisson"])
    p.add_argument("--k-ms", type=float, default=1.082)
    p.add_argument("--c-ms", type=float, default=5.204)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--slo-ms", type=float, default=25.0)
    p.add_argument("-n", "--workers", type=int, default=8)
    p.add_argument("--cv", type=float, default=3.0, help="inter-arrival CV of --trace gamma")
    p.add_argument("--csv", default=None, help="log to replay (--trace replay)")
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rel-tol", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--noise-cv", type=float, default=0.0)
    p.add_argument("--json", action="store_true", help="print every probe as JSON too")
    p.add_argument("-v", "--verbose", action="store_true", help="log each probe")
    args = p.parse_args(argv)
    if "replay" in args.trace and args.csv is None:
        p.error("--trace replay needs --csv PATH (e.g. ../shared/traces/azure_llm_2023_conv.csv)")
    prof = Profile(round(args.k_ms * MS), round(args.c_ms * MS), args.max_batch)
    cluster = Cluster.shared({"m": prof}, round(args.slo_ms * MS), args.workers)
    config = SimConfig(noise=Noise(cv=args.noise_cv), seed=args.seed)
    bound = bound_rps(cluster)
    print(f"l(b) = {args.k_ms} ms * b + {args.c_ms} ms, SLO {args.slo_ms} ms, N = "
          f"{args.workers}, noise CV {args.noise_cv}: analytic bound {bound:.0f} req/s")
    print(f"{'trace':10s} {'policy':14s} {'goodput':>9s} {'of bound':>8s} {'per GPU':>8s} probes")
    rows = []
    for kind in args.trace:
        for name in args.policy:
            res = search_goodput(name, cluster, trace=kind, cv=args.cv, csv_path=args.csv,
                                 requests=args.requests, seed=args.seed, rel_tol=args.rel_tol,
                                 config=config, log=print if args.verbose else None)
            print(f"{kind:10s} {name:14s} {res.goodput_rps:9.0f} {res.goodput_rps / bound:8.3f} "
                  f"{res.goodput_rps / args.workers:8.0f} {len(res.probes):6d}", flush=True)
            rows.append({"trace": kind, "policy": name, **asdict(res)})
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
