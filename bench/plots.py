"""PNG plots of the simulator's results: plain data in, one file out per function.

Theory of operation: every function takes lists and dicts (as ``bench/sim_table.py``
writes them to JSON) and a path, draws one figure with matplotlib's object-oriented API
on the Agg canvas (no pyplot, so no global figure state and no display is touched) and
saves it as PNG. Policies keep one colour and marker across every plot.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

__all__ = ["attainment_vs_load", "batch_size_distribution", "gantt", "goodput_vs_n"]

_DPI = 120
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_FIXED = {"symphony": 0, "uncoordinated": 1, "eager": 2, "nexus": 3}


def _style(policy: str, order: Sequence[str]) -> dict[str, Any]:
    """The same colour and marker for a policy in every plot."""
    i = _FIXED.get(policy)
    if i is None:
        rest = [p for p in order if p not in _FIXED]
        i = len(_FIXED) + (rest.index(policy) if policy in rest else 0)
    i %= len(_PALETTE)
    return {"color": _PALETTE[i], "marker": _MARKERS[i % len(_MARKERS)]}


def _new(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself: savefig renders with Agg
    return fig


def _save(fig: Figure, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)


def goodput_vs_n(
    ns: Sequence[int],
    panels: Mapping[float, Mapping[str, Any]],
    path: str | Path,
    *,
    title: str = "Goodput vs N",
) -> None:
    """Goodput against worker count N, one column per SLO (ms), two rows.

    ``panels[slo_ms]`` holds ``goodput`` ({policy: [req/s per N]}, nan for a missing
    point) and the bound lines ``coord``, ``coord_overhead`` and ``uncoord`` (req/s per
    N). The top row is goodput in req/s (log axes: N doubles and goodput grows with it);
    the bottom row is the same divided by the coordinated bound, where the policies'
    differences are visible.
    """
    fig = _new(max(9.0, 4.6 * len(panels) + 0.5), 8.6)
    grid = fig.subplots(
        2, len(panels), sharex=True, sharey="row", squeeze=False, gridspec_kw={"height_ratios": [3, 2]}
    )
    top_ratio, low_ratio = 1.05, 1.0
    for col, (slo, panel) in enumerate(panels.items()):
        ax, rel = grid[0, col], grid[1, col]
        coord = list(panel["coord"])
        lines = (
            ("coord", "coordinated bound", {"color": "black", "lw": 1.6}),
            (
                "coord_overhead",
                "coordinated bound, with overheads",
                {"color": "darkorange", "lw": 1.2, "ls": "--"},
            ),
            ("uncoord", "uncoordinated bound", {"color": "grey", "lw": 1.6, "ls": ":"}),
        )
        for key, label, kw in lines:
            ax.plot(ns, panel[key], label=label, **kw)
            bound = [v / c if c else math.nan for v, c in zip(panel[key], coord)]
            rel.plot(ns, bound, **kw)
            low_ratio = min([low_ratio, *(b for b in bound if not math.isnan(b))])
        order = list(panel["goodput"])
        for pol, ys in panel["goodput"].items():
            pts = [(n, y, c) for n, y, c in zip(ns, ys, coord) if y > 0 and not math.isnan(y)]
            if not pts:
                continue
            st = _style(pol, order)
            ax.plot([n for n, _, _ in pts], [y for _, y, _ in pts], lw=1.2, ms=6, alpha=0.9, label=pol, **st)
            ratios = [y / c for _, y, c in pts if c]
            rel.plot([n for n, _, c in pts if c], ratios, lw=1.2, ms=6, alpha=0.9, **st)
            top_ratio = max([top_ratio, *ratios])
            low_ratio = min([low_ratio, *ratios])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"SLO {slo:g} ms")
        ax.grid(True, which="both", alpha=0.3)
        rel.set_xticks(list(ns), [str(n) for n in ns])
        rel.set_xlabel("workers N (GPUs)")
        rel.grid(True, alpha=0.3)
    grid[1, 0].set_ylim(max(0.0, low_ratio - 0.05), top_ratio + 0.05)
    grid[0, 0].set_ylabel("goodput (requests/s within SLO)")
    grid[1, 0].set_ylabel("goodput / coordinated bound")
    handles, labels = grid[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), frameon=False)
    fig.suptitle(title)
    _save(fig, path)


def attainment_vs_load(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    target: float = 0.99,
    overhead_load: float | None = None,
    uncoord_load: float | None = None,
    bound_rps: float | None = None,
    title: str = "SLO attainment vs offered load",
) -> None:
    """SLO attainment against offered load (a fraction of the coordinated bound).

    ``curves[policy]`` is a list of ``(load, attainment)``. Two panels: the whole range
    and a zoom on the top (``target`` and above). ``overhead_load`` and ``uncoord_load``
    mark where the bound with overheads and the uncoordinated bound lie on that axis.
    """
    fig = _new(11.5, 4.8)
    full, zoom = fig.subplots(1, 2)
    order = list(curves)
    low = min((a for pts in curves.values() for _, a in pts), default=0.0)
    for ax in (full, zoom):
        for pol, pts in curves.items():
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, lw=1.4, ms=5, label=pol, **_style(pol, order))
        ax.axhline(target, color="black", lw=1, ls="-.", label=f"target {target:g}")
        ax.axvline(1.0, color="black", lw=1.2, label="coordinated bound (1.0)")
        if overhead_load is not None:
            ax.axvline(
                overhead_load,
                color="darkorange",
                lw=1.2,
                ls="--",
                label=f"coordinated bound, with overheads ({overhead_load:.3f})",
            )
        if uncoord_load is not None:
            ax.axvline(
                uncoord_load, color="grey", lw=1.4, ls=":", label=f"uncoordinated bound ({uncoord_load:.3f})"
            )
        ax.set_xlabel("offered load (× coordinated bound)")
        ax.grid(True, alpha=0.3)
    full.set_ylim(max(0.0, min(low, target) - 0.05), 1.005)
    full.set_ylabel("SLO attainment (fraction of requests within SLO)")
    full.set_title("full range")
    zoom.set_ylim(1 - 2.5 * (1 - target), 1 + 0.1 * (1 - target))
    zoom.set_title(f"zoom: attainment ≥ {1 - 2.5 * (1 - target):.3g}")
    handles, labels = full.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False)
    fig.suptitle(title + (f"\nload 1.0 = the coordinated bound, {bound_rps:.0f} req/s" if bound_rps else ""))
    _save(fig, path)


def batch_size_distribution(
    histograms: Mapping[str, Sequence[int]],
    path: str | Path,
    *,
    marks: Mapping[str, int] | None = None,
    title: str = "Batch-size distribution",
) -> None:
    """One panel per policy: the fraction of batches of each size.

    ``histograms[policy][b]`` counts batches of size ``b`` (index 0 unused). ``marks``
    draws labelled vertical lines (e.g. the analytic ``b*``).
    """
    pols = list(histograms)
    cols = 2 if len(pols) > 1 else 1
    rows = math.ceil(len(pols) / cols)
    fig = _new(5.5 * cols, 2.8 * rows + 0.8)
    axes = fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    top = max((len(h) - 1 for h in histograms.values()), default=1)
    top = max([top, *(marks or {}).values()]) + 1
    line_styles = ("--", ":", "-.")
    for ax, pol in zip(axes, pols):
        h = list(histograms[pol])
        total = sum(h)
        sizes = list(range(1, len(h)))
        frac = [h[b] / total if total else 0.0 for b in sizes]
        mean = sum(b * h[b] for b in sizes) / total if total else 0.0
        ax.bar(
            sizes,
            frac,
            width=0.9,
            color=_style(pol, pols)["color"],
            alpha=0.85,
            label=f"{total} batches, mean {mean:.1f}",
        )
        for j, (name, b) in enumerate((marks or {}).items()):
            ax.axvline(b, color="black", lw=1.1, ls=line_styles[j % len(line_styles)], label=f"{name} = {b}")
        ax.set_title(pol)
        ax.set_xlim(0, top)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    for ax in axes[len(pols) :]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel("batch size (requests)")
    for ax in axes[::cols]:
        ax.set_ylabel("fraction of batches")
    fig.suptitle(title)
    _save(fig, path)


def gantt(
    panels: Mapping[str, Mapping[str, Any]],
    n_workers: int,
    path: str | Path,
    *,
    title: str = "Batches per worker",
    clock: str = "simulated",
) -> None:
    """One panel per policy: a row per worker, a bar per batch coloured by its size.

    ``panels[policy]`` has ``worker``, ``start_ms``, ``end_ms`` and ``size`` lists (times
    from the window's start), ``window_ms`` and ``window_start_ms`` (where the window lies
    in the run, for the label) and optionally the run's ``attainment``. Bars are clipped
    to the window.
    """
    pols = list(panels)
    biggest = max((max(p["size"], default=1) for p in panels.values()), default=1)
    cmap = colormaps["viridis"]
    edges = _size_bins(biggest)
    norm = BoundaryNorm(edges, cmap.N)
    fig = _new(12.0, 0.42 * n_workers * len(pols) + 1.6 * len(pols) + 0.8)
    axes = fig.subplots(len(pols), 1, sharex=True, squeeze=False)[:, 0]
    for ax, pol in zip(axes, pols):
        d = panels[pol]
        starts, ends = d["start_ms"], d["end_ms"]
        ax.barh(
            d["worker"],
            [e - s for s, e in zip(starts, ends)],
            left=starts,
            height=0.72,
            color=[cmap(norm(b)) for b in d["size"]],
            edgecolor="white",
            linewidth=0.8,
        )
        ax.set_xlim(0, d["window_ms"])
        ax.set_ylim(n_workers - 0.5, -0.5)  # worker 0 on top
        ax.set_yticks(range(n_workers), [str(w) for w in range(n_workers)])
        ax.set_ylabel("worker")
        run = f", run's SLO attainment {d['attainment']:.3f}" if "attainment" in d else ""
        ax.set_title(
            f"{pol}: {len(starts)} batches, mean size "
            f"{(sum(d['size']) / len(starts)) if starts else 0:.1f}{run} "
            f"(window from {d['window_start_ms']:.0f} ms into the run)"
        )
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlabel(f"{clock} time in the window (ms)")
    sm = _mappable(cmap, norm)
    bar = fig.colorbar(sm, ax=list(axes), label="batch size (requests)", pad=0.01, aspect=30)
    lows = [math.ceil(e) for e in edges[:-1]]
    highs = [math.floor(e) for e in edges[1:]]
    bar.set_ticks(
        [(a + b) / 2 for a, b in itertools.pairwise(edges)],
        labels=[str(a) if a == b else f"{a}–{b}" for a, b in zip(lows, highs)],
    )
    fig.suptitle(title)
    _save(fig, path)


def _size_bins(biggest: int) -> list[float]:
    """Colour bins for batch sizes 1..biggest: one per size when few, else ~12 bins."""
    if biggest <= 12:
        return [b - 0.5 for b in range(1, biggest + 2)]
    step = math.ceil(biggest / 12)
    return [0.5 + i * step for i in range(math.ceil(biggest / step) + 1)]


def _mappable(cmap: Any, norm: Any) -> Any:
    from matplotlib.cm import ScalarMappable

    sm = ScalarMappable(norm=norm, cmap=cmap)
    sm.set_array([])
    return sm
