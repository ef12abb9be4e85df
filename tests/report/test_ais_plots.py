"""The IS-against-AIS figure: its points are the inputs, read back from the
Axes, and its text box prints the mean gap computed here from the inputs."""

import re

import numpy as np
import pyro
import pytest
import torch

from pyrovae import DataError
from pyrovae.report import plots


@pytest.fixture(autouse=True)
def _validation():
    pyro.enable_validation(True)
    yield


def _inputs(n=25, seed=0):
    g = np.random.default_rng(seed)
    is_ll = g.normal(-90.0, 5.0, n)
    ais_ll = is_ll + g.exponential(0.8, n)
    return is_ll, ais_ll


@pytest.mark.parametrize("n", [1, 2, 25])
def test_scatter_holds_the_points(n):
    is_ll, ais_ll = _inputs(n)
    fig = plots.is_vs_ais_figure(torch.tensor(is_ll, dtype=torch.float32), torch.tensor(ais_ll, dtype=torch.float32))
    (ax,) = fig.axes
    (points,) = ax.collections
    offsets = np.asarray(points.get_offsets())
    np.testing.assert_allclose(offsets, np.stack([is_ll, ais_ll], axis=1), rtol=0, atol=1e-4)
    (diagonal,) = ax.lines
    xs, ys = diagonal.get_data()
    np.testing.assert_array_equal(xs, ys)
    assert xs[0] <= min(is_ll.min(), ais_ll.min()) and xs[-1] >= max(is_ll.max(), ais_ll.max())


def test_text_box_prints_the_mean_gap_and_its_standard_error():
    is_ll, ais_ll = _inputs(40, seed=3)
    fig = plots.is_vs_ais_figure(torch.tensor(is_ll), torch.tensor(ais_ll), title="t")
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    gaps = [a - b for a, b in zip(ais_ll.tolist(), is_ll.tolist())]
    mean = sum(gaps) / len(gaps)
    sd = (sum((d - mean) ** 2 for d in gaps) / (len(gaps) - 1)) ** 0.5
    printed_mean = float(re.search(r"mean gap AIS - IS: (-?[\d.]+)", text).group(1))
    printed_sem = float(re.search(r"standard error: (-?[\d.]+)", text).group(1))
    assert printed_mean == pytest.approx(mean, abs=6e-4)
    assert printed_sem == pytest.approx(sd / len(gaps) ** 0.5, abs=6e-4)
    assert fig.axes[0].get_title() == "t"


def test_figure_saves_as_png(tmp_path):
    is_ll, ais_ll = _inputs(5)
    fig = plots.is_vs_ais_figure(torch.tensor(is_ll), torch.tensor(ais_ll))
    path = tmp_path / "is_vs_ais.png"
    plots.save_figure(fig, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("shapes", [((3,), (4,)), ((0,), (0,))])
def test_mismatched_or_empty_inputs_are_refused(shapes):
    with pytest.raises(DataError, match="same points"):
        plots.is_vs_ais_figure(torch.zeros(shapes[0]), torch.zeros(shapes[1]))
