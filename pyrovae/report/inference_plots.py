"""Figures of the inference gaps (Cremer et al. 2018, :func:`pyrovae.inference_gaps`)
and the figures ``pyrovae evaluate`` writes from its eval.json record.

The gap between log p(x) and the amortized ELBO L[q] splits in two::

    log p(x) - L[q]  =  (log p(x) - L[q*])  +  (L[q*] - L[q])
    inference gap       approximation gap      amortization gap

Both gap figures draw it as stacked bars: the approximation gap from 0, the
amortization gap on top of it, so the top of each bar is the inference gap
(also marked by a black tick). AIS is a stochastic lower bound, so an
approximation gap can come out slightly negative; its bar then points down
from 0 and the amortization bar starts below 0. Like
:mod:`pyrovae.report.plots`, every function returns a
:class:`matplotlib.figure.Figure` made without pyplot.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from ..errors import DataError
from .plots import is_vs_ais_figure, new_figure

__all__ = ["gap_figure", "gaps_by_row_figure", "evaluation_figures", "GAP_PARTS"]

#: the two gaps stacked in each bar, bottom first
GAP_PARTS = ("approximation_gap", "amortization_gap")
_STYLE = {"approximation_gap": ("tab:blue", "approximation gap log p(x) - L[q*]"),
          "amortization_gap": ("tab:orange", "amortization gap L[q*] - L[q]")}
_TOTAL_LABEL = "inference gap log p(x) - L[q]"


def _part(gaps: Any, key: str, where: str) -> torch.Tensor:
    """``gaps[key]`` (a mapping) or ``gaps.key`` (a GapsResult) as a float64 tensor, checked finite."""
    value = gaps.get(key) if isinstance(gaps, Mapping) else getattr(gaps, key, None)
    if value is None:
        raise DataError(f"{where} needs {key!r} (and {', '.join(k for k in GAP_PARTS if k != key)!r}): pass a "
                        "GapsResult or a mapping such as eval.json's gaps['per_point']")
    try:
        values = torch.as_tensor(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                 dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: {key} must be numbers, got {type(value).__name__} ({e})") from None
    if not bool(torch.isfinite(values).all()):
        raise DataError(f"{where}: {key} holds NaN or infinite values; drop those points or rerun the estimate")
    return values


def gap_figure(gaps: Any, title: str = "Inference gaps per data point", max_labels: int = 30):
    """One stacked bar per data point, sorted by inference gap, and a last
    bar for the mean over the points (approximation gap below, amortization
    gap on top; in nats).

    :param gaps: a :class:`~pyrovae.infer.gaps.GapsResult`, or a mapping with
        ``approximation_gap`` and ``amortization_gap``, each ``(N,)`` (eval.json's
        ``gaps["per_point"]``).
    :param int max_labels: up to this many points, each bar is labelled with
        the point's index in the input.
    :raises DataError: for a missing part, shapes that are not the same ``(N,)``
        with N >= 1, or a value that is NaN or infinite.

    Example::

        >>> import torch
        >>> from pyrovae.report.inference_plots import gap_figure
        >>> fig = gap_figure({"approximation_gap": torch.tensor([1.0, 0.5]),
        ...                   "amortization_gap": torch.tensor([0.25, 1.0])})
        >>> [float(p.get_height()) for p in fig.axes[0].containers[1]]  # amortization: by inference gap, then the mean
        [0.25, 1.0, 0.625]
    """
    approx, amort = (_part(gaps, k, "gap_figure") for k in GAP_PARTS)
    if approx.dim() != 1 or approx.shape != amort.shape or approx.numel() == 0:
        raise DataError(f"gap_figure needs approximation_gap and amortization_gap of the same shape (N,), N >= 1; "
                        f"got {tuple(approx.shape)} and {tuple(amort.shape)}: pass one value per point for each")
    n = approx.numel()
    order = torch.argsort(approx + amort, stable=True)
    parts = {"approximation_gap": torch.cat([approx[order], approx.mean()[None]]),
             "amortization_gap": torch.cat([amort[order], amort.mean()[None]])}
    xs = list(range(n)) + [n + 1]  # the mean bar stands one bar apart
    fig = new_figure(max(6.0, min(14.0, 2.5 + 0.12 * n)), 4.5)
    ax = fig.add_subplot(1, 1, 1)
    _stacked(ax, xs, parts, vertical=True, legend="upper left")
    labels = [str(i) for i in order.tolist()] if n <= max_labels else [""] * n
    ax.set_xticks(xs, labels + ["mean"], fontsize=7 if n > 12 else 9)
    ax.set_xlabel("data points (index), sorted by inference gap" if n <= max_labels
                  else f"{n} data points, sorted by inference gap")
    ax.set_ylabel("nats")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def gaps_by_row_figure(rows: Mapping[str, Mapping[str, float]], title: str = "Inference gaps"):
    """One horizontal stacked bar per named row (a model, a run), in the
    order given: approximation gap from 0, amortization gap after it, the
    inference gap printed at the end; in nats.

    :param rows: ``{name: {"approximation_gap": a, "amortization_gap": b, ...}}``
        (mean gaps; other keys, such as eval.json's other means, are ignored).
    :raises DataError: for no rows, a row without both gaps, or a value that
        is not a finite number.

    Example::

        >>> from pyrovae.report.inference_plots import gaps_by_row_figure
        >>> fig = gaps_by_row_figure({"vae": {"approximation_gap": 1.2, "amortization_gap": 0.8},
        ...                           "iwae": {"approximation_gap": 0.9, "amortization_gap": 0.4}})
        >>> [float(p.get_width()) for p in fig.axes[0].containers[0]]
        [1.2, 0.9]
    """
    if not isinstance(rows, Mapping) or not rows:
        raise DataError("gaps_by_row_figure needs a non-empty mapping {name: {approximation_gap, amortization_gap}}")
    parts: Dict[str, list] = {k: [] for k in GAP_PARTS}
    for name, row in rows.items():
        if not isinstance(row, Mapping):
            raise DataError(f"gaps_by_row_figure: row {name!r} must be a mapping with {' and '.join(GAP_PARTS)}, "
                            f"got {type(row).__name__}")
        for key in GAP_PARTS:
            value = _part(row, key, f"gaps_by_row_figure, row {name!r}")
            if value.numel() != 1:
                raise DataError(f"gaps_by_row_figure, row {name!r}: {key} must be one number (the mean gap), "
                                f"got shape {tuple(value.shape)}")
            parts[key].append(float(value))
    names = [str(name) for name in rows]
    fig = new_figure(9.5, 1.4 + 0.45 * len(names))
    ax = fig.add_subplot(1, 1, 1)
    totals = _stacked(ax, list(range(len(names))), {k: torch.tensor(v, dtype=torch.float64) for k, v in parts.items()},
                      vertical=False, legend="upper left", anchor=(1.02, 1.0))  # beside the bars, never over them
    for y, total in enumerate(totals.tolist()):
        ax.annotate(f"{total:.2f}", (max(total, 0.0), y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.margins(x=0.1)  # room for the printed totals
    ax.invert_yaxis()  # the first row on top
    ax.set_xlabel("nats")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _stacked(ax, positions, parts: Mapping[str, torch.Tensor], vertical: bool, legend: str,
             anchor=None) -> torch.Tensor:
    """Draw ``parts`` stacked at ``positions`` (GAP_PARTS order, one container
    each), tick each total and add the legend at ``legend``; returns the totals."""
    base = torch.zeros(len(positions), dtype=torch.float64)
    handles = []
    for key in GAP_PARTS:
        colour, label = _STYLE[key]
        size = parts[key]
        if vertical:
            handles.append(ax.bar(positions, size.tolist(), bottom=base.tolist(), width=0.8, color=colour, label=label))
        else:
            handles.append(ax.barh(positions, size.tolist(), left=base.tolist(), height=0.6, color=colour, label=label))
        base = base + size
    ticks = (positions, base.tolist()) if vertical else (base.tolist(), positions)
    handles.append(ax.scatter(*ticks, marker="_" if vertical else "|", s=120, color="black", zorder=3,
                              label=_TOTAL_LABEL))
    ax.legend(handles=handles, fontsize=8, loc=legend, bbox_to_anchor=anchor)  # in the order of the sum: parts, then the total
    (ax.axhline if vertical else ax.axvline)(0.0, color="0.3", lw=0.8)
    ax.grid(alpha=0.3, axis="y" if vertical else "x")
    return base


def evaluation_figures(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The figures of a ``pyrovae evaluate`` record (eval.json), by file name:
    ``is_vs_ais.png`` from its ``ais`` block (IS against AIS on the same
    points) and ``gaps.png`` from its ``gaps`` block; none for a record with
    neither.

    Example::

        figures = evaluation_figures(json.loads(Path("runs/mnist/eval.json").read_text()))
    """
    figures = {}
    if "ais" in record:
        ais = record["ais"]
        k = record.get("num_samples")
        figures["is_vs_ais.png"] = is_vs_ais_figure(
            torch.tensor(ais["is_per_point"]), torch.tensor(ais["per_point"]),
            title=f"IS (K = {k}) against AIS (T = {ais['num_steps']})")
    if "gaps" in record:
        gaps = record["gaps"]
        title = (f"Inference gaps, {gaps['num_points']} points (mean inference gap "
                 f"{gaps['means']['inference_gap']:.2f} nats)")
        figures["gaps.png"] = gap_figure(gaps["per_point"], title=title)
    return figures
