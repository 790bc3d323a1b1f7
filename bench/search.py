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

The ``uncoordinated`` baseline is searched *tuned* (``tune_uncoordinated``), as the live
peers are (``bench.peers.tune_peer``): its analytic defaults (the largest batch with
``2 l(b)`` within the budget and a queue delay of ``l(b)``) are a handicap no deployment of
Triton or Ray Serve would keep. A grid of max batch (the analytic ``b`` and up to ``2 b``)
times queue delay (0 to ``l(b)``) is scored on one seeded trace at a rate just above the
system's own capacity, the best setting is searched, and the scoring repeats at the new
capacity; the answer is the best search, the defaults' included.

Run: ``.venv/bin/python -m bench.search --trace poisson gamma --k-ms 1.082 --c-ms 5.204
--slo-ms 25 -n 8 --cv 3`` (a table of every registered policy, or ``--policy symphony
eager``; ``--json`` adds the probes).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.sim.config import Cluster, Noise, SimConfig
from bench.sim.engine import policy_config_for, simulate
from bench.traces import Trace, gamma, piecewise, poisson, replay_csv
from central.policy import PolicyConfig, Profile, analytic_bound, make_policy, policy_names
from central.policy.baselines.uncoordinated import UncoordinatedConfig, default_limits

__all__ = [
    "Probe",
    "SearchResult",
    "TRACE_KINDS",
    "Trial",
    "TunedSearch",
    "bisect_passing_rate",
    "bound_rps",
    "knobs_text",
    "main",
    "search_goodput",
    "trace_maker",
    "tune_uncoordinated",
    "uncoordinated_grid",
]

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


@dataclass(frozen=True, slots=True)
class Trial:
    """One ``uncoordinated`` knob setting scored at one rate by ``tune_uncoordinated``."""

    max_batch: int  # UncoordinatedConfig.max_batch
    max_queue_delay_ns: int  # UncoordinatedConfig.max_queue_delay_ns
    rate_rps: float  # the tuning rate (the same seeded trace for every setting)
    attainment: float  # fraction of requests within SLO
    goodput_rps: float  # requests within SLO per second


@dataclass(frozen=True, slots=True)
class TunedSearch:
    """The ``uncoordinated`` baseline's goodput search with tuned knobs."""

    knobs: UncoordinatedConfig  # the setting of the answer (the defaults' values if they won)
    result: SearchResult  # the goodput search with ``knobs``: the figure to quote
    pinned: SearchResult  # the same search with the analytic defaults
    pinned_knobs: UncoordinatedConfig  # the defaults' values, as fixed knobs
    trials: tuple[Trial, ...]  # every setting scored, round after round
    searched: tuple[tuple[UncoordinatedConfig, float], ...]  # (knobs, goodput) per search


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
            return piecewise(
                segments,
                seed,
                bursts=bursts,
                burst_s=_BURST_S,
                burst_factor=_BURST_FACTOR,
                model=names,
                weights=weights,
            )

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
            out[name] = analytic_bound(
                n, prof.k_ns, prof.c_ns, cluster.slo_ns[name], max_batch=prof.max_batch
            ).goodput_rps
    return out


def _probe_traces(
    cluster: Cluster,
    trace: str | TraceMaker,
    cv: float,
    csv_path: str | Path | None,
    weights: Sequence[float] | None,
    requests: int,
    seed: int,
    min_slos: float,
) -> Callable[[float], Trace]:
    """``rate -> Trace``: a search probe's arrivals (see ``search_goodput``).

    Raises ``ValueError`` when no model is served or for a bad trace kind.
    """
    served = [m for m in cluster.profiles if any(m in ms for ms in cluster.workers)]
    if not served:
        raise ValueError("no worker serves any model")
    if weights is None and len(served) > 1:
        bounds = _model_bounds(cluster)
        weights = [bounds[m] for m in served]
        if not sum(weights) > 0:
            weights = None
    make = trace if callable(trace) else trace_maker(trace, served, weights=weights, cv=cv, csv_path=csv_path)
    min_duration_s = min_slos * max(cluster.slo_ns.values()) / 1e9
    return lambda rate: make(rate, max(requests / rate, min_duration_s), seed)


def bisect_passing_rate(
    passes: Callable[[float], bool],
    lo: float,
    hi: float,
    *,
    max_probes: int,
    rel_tol: float | None = None,
    widen: bool = False,
) -> tuple[float, float]:
    """The one goodput bisection (the simulator's ``search_goodput`` and the live
    ``bench.replay.bisect_rate``): the highest rate at which ``passes(rate)``.

    With ``widen``, ``hi`` is probed first and doubled (``lo`` moving up to it) while it
    passes. Then each probe at the bracket's middle moves ``lo`` up when it passes, ``hi``
    down when not, until ``max_probes`` probes in all or, with ``rel_tol``, until
    ``hi - lo <= rel_tol * hi``. Returns the final ``(lo, hi)``; ``passes`` records
    what it measured (passing rates only grow, so the last passing probe is the answer).
    """
    n = 0
    if widen:
        n = 1
        ok = passes(hi)
        while ok and n < max_probes:  # hi is beaten: widen
            lo, hi = hi, hi * 2
            n += 1
            ok = passes(hi)
    while n < max_probes and (rel_tol is None or hi - lo > rel_tol * hi):
        mid = (lo + hi) / 2
        n += 1
        if passes(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


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
    options: Any = None,
) -> SearchResult:
    """Bisect on the mean rate for the highest one at which ``target`` of requests meet SLO.

    ``trace`` is a kind (``TRACE_KINDS``; ``cv`` for gamma, ``csv_path`` for replay) or
    a ``trace_maker``-style function; by default arrivals split over the served models in
    proportion to their bounds. ``options`` are the policy's own knobs (``make_policy``;
    e.g. an ``UncoordinatedConfig``). Raises ``ValueError`` when no model is served, or
    for a bad kind, ``requests < 100`` or ``target`` outside (0, 1].

    Each probe's trace lasts at least ``min_slos`` times the longest SLO (more requests
    than ``requests`` at high rates): workers keep serving for up to one SLO after the
    last arrival, and over a trace only a few SLOs long that tail lets the goodput,
    counted over the trace's span, exceed what the workers can sustain (seen: 1.06x the
    bound at N=32, SLO 100 ms with 20,000 requests in 0.68 s).
    """
    if requests < 100:
        raise ValueError(f"requests must be >= 100, got {requests}")
    if not 0 < target <= 1:
        raise ValueError(f"target must lie in (0, 1], got {target}")
    make = _probe_traces(cluster, trace, cv, csv_path, weights, requests, seed, min_slos)
    bound = bound_rps(cluster)
    probes: list[Probe] = []
    config = config if config is not None else SimConfig()
    pcfg = policy_config if policy_config is not None else policy_config_for(cluster, config)

    def probe(rate: float) -> Probe:
        tr = make(rate)
        res = simulate(make_policy(policy, pcfg, options=options), tr, cluster, config)
        p = Probe(rate, res.attainment, res.goodput_rps, res.n_requests, res.attainment >= target)
        probes.append(p)
        if log is not None:
            log(
                f"probe {rate:10.1f} req/s: attainment {p.attainment:.4f} "
                f"goodput {p.goodput_rps:10.1f} {'pass' if p.passed else 'fail'}"
            )
        return p

    bisect_passing_rate(
        lambda rate: probe(rate).passed,
        0.0,
        max(bound, 1.0),
        max_probes=max_probes,
        rel_tol=rel_tol,
        widen=True,
    )
    best = next((p for p in reversed(probes) if p.passed), None)  # the highest passing
    if best is None:
        return SearchResult(0.0, 0.0, 0.0, bound, tuple(probes))
    return SearchResult(best.rate_rps, best.goodput_rps, best.attainment, bound, tuple(probes))


# ----------------------------------------------------------- the uncoordinated baseline, tuned

# The grid around the analytic defaults (b, l(b)): max batch b times these factors (rounded
# up, capped by the profile), each with a queue delay of these fractions of l(its batch).
# The defaults are one setting of it, so tuning can only keep or beat them.
UNCOORD_BATCH_FACTORS = (1.0, 4 / 3, 5 / 3, 2.0)
UNCOORD_DELAY_FRACTIONS = (0.0, 1 / 16, 1 / 8, 1 / 4, 1.0)


def uncoordinated_grid(cluster: Cluster, policy_config: PolicyConfig) -> list[UncoordinatedConfig]:
    """The knob settings ``tune_uncoordinated`` tries, for a cluster serving one model.

    Max batch from the analytic ``b`` (``default_limits``, the policy's own rule, with the
    model's SLO as its budget) up to ``2 b``; queue delays from 0 to ``l(max batch)``; the
    defaults ``(b, l(b))`` first. Raises ``ValueError`` unless exactly one model is served
    (the knobs are one per cluster).
    """
    served = [m for m in cluster.profiles if any(m in ms for ms in cluster.workers)]
    if len(served) != 1:
        raise ValueError(f"tuning the uncoordinated knobs needs one served model, got {served}")
    prof = cluster.profiles[served[0]]
    b_u, _ = default_limits(prof, cluster.slo_ns[served[0]], policy_config)
    sizes = sorted({min(prof.max_batch, math.ceil(b_u * f - 1e-9)) for f in UNCOORD_BATCH_FACTORS})
    grid = [UncoordinatedConfig(max_batch=b_u, max_queue_delay_ns=prof.latency_ns(b_u))]
    for b in sizes:
        for f in UNCOORD_DELAY_FRACTIONS:
            delay = round(f * prof.latency_ns(b))
            knobs = UncoordinatedConfig(max_batch=b, max_queue_delay_ns=delay)
            if knobs not in grid:
                grid.append(knobs)
    return grid


def knobs_text(knobs: UncoordinatedConfig | None) -> str:
    """``"b 8, 0.73 ms"`` (max batch, queue delay), or ``"-"`` for None."""
    if knobs is None or knobs.max_batch is None or knobs.max_queue_delay_ns is None:
        return "-"
    return f"b {knobs.max_batch}, {knobs.max_queue_delay_ns / 1e6:.2f} ms"


def _tuning_rate(res: SearchResult) -> float:
    """Just above the capacity a search found: its lowest failing rate above the answer
    (the highest probe when none failed)."""
    failed = [p.rate_rps for p in res.probes if not p.passed and p.rate_rps > res.rate_rps]
    return min(failed) if failed else max(p.rate_rps for p in res.probes)


def tune_uncoordinated(
    cluster: Cluster,
    *,
    rounds: int = 2,
    grid: Sequence[UncoordinatedConfig] | None = None,
    log: Callable[[str], None] | None = None,
    **search: Any,
) -> TunedSearch:
    """The ``uncoordinated`` baseline's goodput search with its knobs tuned on ``grid``.

    ``search`` are ``search_goodput``'s keywords (trace, requests, seed, config...). First
    the defaults are searched; then, ``rounds`` times, every setting of ``grid`` (default
    ``uncoordinated_grid``) runs on the probe trace at the last search's lowest failing
    rate (just above the system's own capacity: below it every good setting passes, far
    above it every setting collapses and the ranking is noise); the best by attainment,
    then goodput (ties: the smaller batch, then the shorter delay) is searched, unless it
    was already. The answer is the search with the highest goodput (the first on ties);
    the defaults are a grid point and searched first, so it is never below theirs.
    Deterministic: every run uses the search's seeded probe trace for its rate. Raises
    ``ValueError`` as ``search_goodput`` and ``uncoordinated_grid`` do, and for a grid
    setting without both knobs.
    """
    config = search.get("config") or SimConfig()
    search["config"] = config
    pcfg = search.get("policy_config") or policy_config_for(cluster, config)
    grid = list(grid) if grid is not None else uncoordinated_grid(cluster, pcfg)
    if any(k.max_batch is None or k.max_queue_delay_ns is None for k in grid):
        raise ValueError("every grid setting needs max_batch and max_queue_delay_ns")
    make = _probe_traces(
        cluster,
        search.get("trace", "poisson"),
        search.get("cv", 3.0),
        search.get("csv_path"),
        search.get("weights"),
        search.get("requests", 20_000),
        search.get("seed", 1),
        search.get("min_slos", 50.0),
    )
    pinned = search_goodput("uncoordinated", cluster, log=log, **search)
    pinned_knobs = uncoordinated_grid(cluster, pcfg)[0]
    searched: list[tuple[UncoordinatedConfig, SearchResult]] = [(pinned_knobs, pinned)]
    trials: list[Trial] = []
    last = pinned
    for _ in range(rounds):
        rate = _tuning_rate(last)
        tr = make(rate)
        scored = []
        for knobs in grid:
            res = simulate(make_policy("uncoordinated", pcfg, options=knobs), tr, cluster, config)
            trial = Trial(
                knobs.max_batch or 0, knobs.max_queue_delay_ns or 0, rate, res.attainment, res.goodput_rps
            )
            trials.append(trial)
            scored.append((trial, knobs))
        best_trial, best = max(scored, key=lambda s: _trial_score(s[0]))
        if log is not None:
            log(
                f"tuning at {rate:.1f} req/s: best {knobs_text(best)} (attainment "
                f"{best_trial.attainment:.4f}) of {len(grid)} settings"
            )
        if any(k == best for k, _ in searched):
            break
        last = search_goodput("uncoordinated", cluster, options=best, log=log, **search)
        searched.append((best, last))
    knobs, result = max(searched, key=lambda s: s[1].goodput_rps)  # max keeps the first tie
    return TunedSearch(
        knobs, result, pinned, pinned_knobs, tuple(trials), tuple((k, r.goodput_rps) for k, r in searched)
    )


def _trial_score(t: Trial) -> tuple[float, float, int, int]:
    """Higher is better: attainment, goodput, then the smaller batch and shorter delay."""
    return (t.attainment, t.goodput_rps, -t.max_batch, -t.max_queue_delay_ns)


def main(argv: list[str] | None = None) -> int:
    """Search each (trace kind, policy) pair for one model and print a table and JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n")[0])
    p.add_argument(
        "--policy",
        nargs="+",
        default=list(policy_names()),
        help="policies to search (default: every registered one)",
    )
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
    p.add_argument(
        "--pinned-uncoordinated",
        action="store_true",
        help="search uncoordinated with its analytic defaults only (no tuning)",
    )
    p.add_argument("--json", action="store_true", help="print every probe as JSON too")
    p.add_argument("-v", "--verbose", action="store_true", help="log each probe")
    args = p.parse_args(argv)
    if "replay" in args.trace and args.csv is None:
        p.error("--trace replay needs --csv PATH (e.g. ../shared/traces/azure_llm_2023_conv.csv)")
    prof = Profile(round(args.k_ms * MS), round(args.c_ms * MS), args.max_batch)
    cluster = Cluster.shared({"m": prof}, round(args.slo_ms * MS), args.workers)
    config = SimConfig(noise=Noise(cv=args.noise_cv), seed=args.seed)
    bound = bound_rps(cluster)
    print(
        f"l(b) = {args.k_ms} ms * b + {args.c_ms} ms, SLO {args.slo_ms} ms, N = "
        f"{args.workers}, noise CV {args.noise_cv}: analytic bound {bound:.0f} req/s"
    )
    print(
        f"{'trace':10s} {'policy':14s} {'goodput':>9s} {'of bound':>8s} {'per GPU':>8s} "
        f"probes  knobs (uncoordinated: tuned; defaults' goodput)"
    )
    rows = []
    for kind in args.trace:
        for name in args.policy:
            kw: dict[str, Any] = {
                "trace": kind,
                "cv": args.cv,
                "csv_path": args.csv,
                "requests": args.requests,
                "seed": args.seed,
                "rel_tol": args.rel_tol,
                "config": config,
                "log": print if args.verbose else None,
            }
            knobs, extra = "", {}
            if name == "uncoordinated" and not args.pinned_uncoordinated:
                tuned = tune_uncoordinated(cluster, **kw)
                res = tuned.result
                knobs = f"{knobs_text(tuned.knobs)}; defaults {tuned.pinned.goodput_rps:.0f}"
                extra = {
                    "knobs": asdict(tuned.knobs),
                    "pinned": asdict(tuned.pinned),
                    "trials": [asdict(t) for t in tuned.trials],
                }
            else:
                res = search_goodput(name, cluster, **kw)
                if name == "uncoordinated":
                    knobs = "analytic defaults"
            print(
                f"{kind:10s} {name:14s} {res.goodput_rps:9.0f} {res.goodput_rps / bound:8.3f} "
                f"{res.goodput_rps / args.workers:8.0f} {len(res.probes):6d}  {knobs}",
                flush=True,
            )
            rows.append({"trace": kind, "policy": name, **asdict(res), **extra})
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
