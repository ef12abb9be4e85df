"""Every figure: the PNG exists, is valid, has the size of its figure, and is
not blank. Drawn from a tiny VAE trained on synthetic data."""

import struct

import matplotlib.image
import numpy as np
import pytest
import torch

from pyrovae import DataError, cli, load_data, load_run
from pyrovae.report import plots
from pyrovae.report.figures import FIGURES, PlotInputs, write_figures, write_plots
from pyrovae.runs import RunDir

from tiny_run import one_thread, train_tiny_run


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the PNG header; fails unless the file is a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_good_png(path, fig=None, min_variance=1e-3):
    assert path.exists(), f"{path} was not written"
    width, height = png_size(path)
    if fig is not None:
        w, h = fig.get_size_inches() * fig.dpi
        assert (width, height) == (round(w), round(h))
    assert 300 <= width <= 2000 and 200 <= height <= 2000, f"{path}: odd size {width}x{height}"
    pixels = matplotlib.image.imread(path)[..., :3].mean(-1)
    assert pixels.shape == (height, width)
    assert float(np.var(pixels)) > min_variance, f"{path} looks blank"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("plots") / "run"
    train_tiny_run(path)
    return path


@pytest.fixture(scope="module")
def inputs(run):
    vae, cfg, _ = load_run(run)
    x, labels = load_data(cfg.data).test
    return PlotInputs(vae, x, labels, RunDir(run).read_metrics(), grid_size=8)


#: figures of models conditioned on a class label only
LABEL_FIGURES = ("class_samples", "analogies")


@pytest.fixture(scope="module")
def m2_inputs(run, inputs):
    """An (untrained) m2 with a 2-D latent on the same test data: every figure applies."""
    import pyrovae

    likelihood = load_run(run)[1].model.likelihood
    cfg = pyrovae.load_config({"model": {"name": "m2", "latent_dim": 2, "options": {"num_classes": 4}, "likelihood": likelihood,
                                         "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}}})
    model = pyrovae.build_model(cfg.model, inputs.x.shape[1:])
    return PlotInputs(model, inputs.x, inputs.labels, inputs.records, grid_size=8)


@pytest.mark.parametrize("name", list(FIGURES))
@pytest.mark.parametrize("kind", ["vae", "m2"])
def test_each_figure_is_a_good_png(inputs, m2_inputs, kind, name, tmp_path):
    inp = inputs if kind == "vae" else m2_inputs
    fig = FIGURES[name](inp)
    if kind == "vae" and name in LABEL_FIGURES:
        assert "not conditioned on a class label" in fig
        return
    assert not isinstance(fig, str), f"{name} should apply to a 2-D latent with metrics: {fig}"
    assert fig.axes[0].get_title(), f"{name} has no title"
    path = tmp_path / f"{name}.png"
    plots.save_figure(fig, path)
    assert_good_png(path, fig)


def test_figures_are_deterministic_under_seed(inputs, tmp_path):
    a = write_plots(inputs, tmp_path / "a", only=["samples", "manifold"])
    b = write_plots(inputs, tmp_path / "b", only=["samples", "manifold"])
    for name in a:
        assert np.array_equal(matplotlib.image.imread(a[name]), matplotlib.image.imread(b[name]))


def test_plot_command_writes_every_figure(run):
    assert cli.main(["plot", str(run), "--max-points", "150"]) == 0
    for name in FIGURES:
        if name not in LABEL_FIGURES:  # the run's model takes no label
            assert_good_png(run / "plots" / f"{name}.png")


def test_figures_that_do_not_apply_say_why(inputs, tmp_path):
    vae5 = type("Stub", (), {"latent_dim": 5, "data_shape": (1, 8, 8), "prior_draws": staticmethod(lambda n: torch.zeros(n, 5))})
    assert "2-D latent" in FIGURES["manifold"](PlotInputs(vae5, inputs.x))
    no_records = PlotInputs(inputs.vae, inputs.x, records=[])
    assert "metrics" in FIGURES["training_curves"](no_records)
    written = write_plots(no_records, tmp_path, only=["training_curves", "samples"])
    assert isinstance(written["training_curves"], str) and written["samples"].exists()


def test_data_that_are_not_images():
    assert plots.image_shape_problem((784,)) is None and plots.image_shape_problem((3, 8, 8)) is None
    assert "cannot be drawn" in plots.image_shape_problem((10,))
    with pytest.raises(DataError, match="cannot be drawn"):
        plots.as_images(torch.zeros(2, 10))
    not_images = type("Stub", (), {"latent_dim": 2, "data_shape": (10,)})
    for name in ("reconstructions", "samples", "manifold", "traversals", "interpolations"):
        assert "cannot be drawn" in FIGURES[name](PlotInputs(not_images, torch.zeros(4, 10)))


def test_end_of_training_figures(run, inputs, tmp_path):
    splits = load_data(load_run(run)[1].data)
    written = write_figures(inputs.vae, splits, tmp_path)
    assert [p.name for p in written] == ["reconstructions.png", "samples.png"]
    for path in written:
        assert_good_png(path)


def test_scatter_of_a_larger_latent_uses_pca(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    codes = torch.randn(300, 6, generator=g) + 4 * torch.nn.functional.one_hot(labels, 6).float()
    fig = plots.latent_scatter_figure(codes, labels)
    assert "PCA" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel().startswith("PC 1")
    plots.save_figure(fig, tmp_path / "scatter.png")
    assert_good_png(tmp_path / "scatter.png", fig)


def test_scatter_without_labels_and_1d_latent(tmp_path):
    codes = torch.linspace(-2, 2, 100)[:, None]
    fig = plots.latent_scatter_figure(codes, torch.full((100,), -1))
    plots.save_figure(fig, tmp_path / "s.png")
    assert_good_png(tmp_path / "s.png", fig, min_variance=1e-4)


def test_imputation_and_side_by_side_figures(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., 2:6, 2:6] = False
    fig = plots.imputation_figure(x, mask, x.flip(-1))
    plots.save_figure(fig, tmp_path / "imp.png")
    assert_good_png(tmp_path / "imp.png", fig)
    fig = plots.side_by_side_figure({"VAE": {"samples": x, "recon": x}, "AE": {"samples": x.flip(-1), "recon": x}})
    plots.save_figure(fig, tmp_path / "side.png")
    assert_good_png(tmp_path / "side.png", fig)


def test_plot_of_a_run_without_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    (tmp_path / "config.yaml").write_text((run / "config.yaml").read_text())
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_hierarchical_vae_figures(inputs, tmp_path):
    """Traversals and the manifold decode the bottom latent, whose quantiles
    come from draws down the hierarchy (the prior is over the top one)."""
    from pyrovae import VAE

    vae = VAE.from_config({"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]},
                           "likelihood": "continuous_bernoulli",
                           "hierarchy": [{"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}]},
                          data_shape=(1, 8, 8)).eval()
    written = write_plots(PlotInputs(vae, inputs.x, inputs.labels, grid_size=5), tmp_path,
                          only=["samples", "manifold", "traversals", "interpolations", "latent_scatter"])
    for path in written.values():
        assert_good_png(path, min_variance=1e-5)


def test_training_curves_label_whole_epochs():
    from pyrovae.report.plots import training_curves_figure

    records = [{"epoch": e, "train_loss": 100.0 - e, "val_loss": 101.0 - e, "val_reconstruction": 90.0, "val_kl": 10.0}
               for e in (1, 2, 3)]
    fig = training_curves_figure(records)
    for ax in fig.axes[:2]:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
