"""The inference-gap figures: bar heights, bottoms and order read back from
the matplotlib artists against the inputs sorted and averaged by numpy, and
one-line errors for bad input."""

from typing import NamedTuple

import numpy as np
import pyro
import pytest
import torch

from pyrovae import DataError
from pyrovae.report import inference_plots
from pyrovae.report.inference_plots import evaluation_figures, gap_figure, gaps_by_row_figure


@pytest.fixture(autouse=True)
def _validation():
    pyro.enable_validation(True)
    yield


def _gaps(n, seed=0):
    g = np.random.default_rng(seed)
    approx = g.normal(1.0, 0.8, n)  # some negative: AIS noise
    amort = g.exponential(0.7, n)
    return approx, amort


def _bars(container):
    return (np.array([p.get_x() for p in container]), np.array([p.get_y() for p in container]),
            np.array([p.get_width() for p in container]), np.array([p.get_height() for p in container]))


@pytest.mark.parametrize("n", [1, 7, 40])
def test_per_point_bars_are_the_inputs_sorted_then_the_mean(n):
    approx, amort = _gaps(n, seed=n)
    fig = gap_figure({"approximation_gap": torch.tensor(approx), "amortization_gap": torch.tensor(amort)})
    (ax,) = fig.axes
    lower, upper = ax.containers
    order = np.argsort(approx + amort, kind="stable")
    want_lower = np.append(approx[order], approx.mean())
    want_upper = np.append(amort[order], amort.mean())
    x0, y0, _, h0 = _bars(lower)
    x1, y1, _, h1 = _bars(upper)
    np.testing.assert_allclose(h0, want_lower, rtol=0, atol=1e-12)
    np.testing.assert_allclose(y0, 0.0, atol=1e-12)
    np.testing.assert_allclose(h1, want_upper, rtol=0, atol=1e-12)
    np.testing.assert_allclose(y1, want_lower, rtol=0, atol=1e-12)  # stacked on the approximation gap
    np.testing.assert_allclose(x0, x1)
    assert np.all(np.diff(x0[:-1]) > 0) and x0[-1] - x0[-2] > 1.5  # the mean bar stands apart
    # the tick on each bar is the inference gap, the sum of the inputs
    (ticks,) = ax.collections
    np.testing.assert_allclose(np.asarray(ticks.get_offsets())[:, 1], np.append((approx + amort)[order],
                               approx.mean() + amort.mean()), atol=1e-9)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[-1] == "mean"
    if n <= 30:
        assert labels[:-1] == [str(i) for i in order]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {
        "approximation gap log p(x) - L[q*]", "amortization gap L[q*] - L[q]", "inference gap log p(x) - L[q]"}


class _Result(NamedTuple):
    approximation_gap: torch.Tensor
    amortization_gap: torch.Tensor


def test_takes_a_gaps_result_or_lists():
    approx, amort = _gaps(5)
    from_result = gap_figure(_Result(torch.tensor(approx, dtype=torch.float32), torch.tensor(amort)))
    from_lists = gap_figure({"approximation_gap": approx.tolist(), "amortization_gap": amort.tolist()}, title="t")
    np.testing.assert_allclose(_bars(from_result.axes[0].containers[1])[3], _bars(from_lists.axes[0].containers[1])[3],
                               atol=1e-6)
    assert from_lists.axes[0].get_title() == "t"


def test_rows_are_stacked_in_the_order_given():
    rows = {"burda_vae_1l_fast": {"approximation_gap": 1.2, "amortization_gap": 0.8, "log_px": -90.0},
            "iwae": {"approximation_gap": -0.1, "amortization_gap": 0.5},
            "m2": {"approximation_gap": 2.5, "amortization_gap": 0.0}}
    fig = gaps_by_row_figure(rows, title="gaps")
    (ax,) = fig.axes
    lower, upper = ax.containers
    x0, y0, w0, _ = _bars(lower)
    x1, y1, w1, _ = _bars(upper)
    np.testing.assert_allclose(w0, [1.2, -0.1, 2.5])
    np.testing.assert_allclose(x0, 0.0)
    np.testing.assert_allclose(w1, [0.8, 0.5, 0.0])
    np.testing.assert_allclose(x1, [1.2, -0.1, 2.5])
    np.testing.assert_allclose(y0, y1)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(rows)
    assert ax.yaxis_inverted()  # the first row on top
    assert [t.get_text() for t in ax.texts] == ["2.00", "0.40", "2.50"]
    assert ax.get_title() == "gaps"


def _record(n=4):
    approx, amort = _gaps(n)
    is_ll = np.linspace(-95, -90, n)
    return {"num_samples": 8,
            "ais": {"num_steps": 20, "per_point": (is_ll + 0.5).tolist(), "is_per_point": is_ll.tolist()},
            "gaps": {"num_points": n, "means": {"inference_gap": float((approx + amort).mean())},
                     "per_point": {"approximation_gap": approx.tolist(), "amortization_gap": amort.tolist()}}}


def test_evaluation_figures_follow_the_record_blocks():
    record = _record()
    figures = evaluation_figures(record)
    assert sorted(figures) == ["gaps.png", "is_vs_ais.png"]
    points = np.asarray(figures["is_vs_ais.png"].axes[0].collections[0].get_offsets())
    np.testing.assert_allclose(points, np.stack([record["ais"]["is_per_point"], record["ais"]["per_point"]], 1), atol=1e-4)
    assert "K = 8" in figures["is_vs_ais.png"].axes[0].get_title()
    heights = _bars(figures["gaps.png"].axes[0].containers[0])[3]
    np.testing.assert_allclose(np.sort(heights[:-1]), np.sort(record["gaps"]["per_point"]["approximation_gap"]))
    assert evaluation_figures({"num_samples": 8}) == {}
    assert list(evaluation_figures({k: v for k, v in record.items() if k != "ais"})) == ["gaps.png"]


@pytest.mark.parametrize("gaps, match", [
    ({"approximation_gap": [1.0, 2.0], "amortization_gap": [0.5]}, "same shape"),
    ({"approximation_gap": [], "amortization_gap": []}, "N >= 1"),
    ({"approximation_gap": [[1.0]], "amortization_gap": [[0.5]]}, r"shape \(N,\)"),
    ({"approximation_gap": [1.0, float("nan")], "amortization_gap": [0.5, 0.5]}, "NaN"),
    ({"approximation_gap": [1.0], "amortization_gap": [float("inf")]}, "amortization_gap holds NaN or infinite"),
    ({"approximation_gap": [1.0]}, "needs 'amortization_gap'"),
    ({"approximation_gap": ["a"], "amortization_gap": [0.5]}, "must be numbers"),
])
def test_bad_per_point_input_is_one_clear_error(gaps, match):
    with pytest.raises(DataError, match=match) as info:
        gap_figure(gaps)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rows, match", [
    ({}, "non-empty"),
    ([("a", 1.0)], "non-empty mapping"),
    ({"a": 1.0}, "row 'a' must be a mapping"),
    ({"a": {"approximation_gap": 1.0}}, "row 'a'.*needs 'amortization_gap'"),
    ({"a": {"approximation_gap": float("nan"), "amortization_gap": 1.0}}, "row 'a'.*NaN"),
    ({"a": {"approximation_gap": [1.0, 2.0], "amortization_gap": 1.0}}, "one number"),
])
def test_bad_rows_are_one_clear_error(rows, match):
    with pytest.raises(DataError, match=match) as info:
        gaps_by_row_figure(rows)
    assert "\n" not in str(info.value)


def test_gap_parts_name_the_stack_order():
    assert inference_plots.GAP_PARTS == ("approximation_gap", "amortization_gap")
