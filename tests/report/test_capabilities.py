"""The figures and commands read a model only through its capabilities:
every built-in family provides what ``pyrovae plot`` needs and its
``decode_mean`` is E[x|z] written out by hand; a model that shows its data as
text gets text files; a model lacking a capability is told so up front, in
one line, and the end-of-training figures skip what they cannot draw."""

import pyro
import pytest
import torch
import torch.nn.functional as F
import pyro.distributions as dist

import pyrovae
from pyrovae import cli
from pyrovae.commands import plot as plot_command
from pyrovae.models import build_model, models
from pyrovae.models.protocol import COMMAND_NEEDS, MissingCapability, has_capability, require_command
from pyrovae.report.figures import FIGURE_NEEDS, FIGURES, PlotInputs, figure_needs, write_figures, write_plots


SHAPE = (1, 4, 4)
SMALL = {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [8]}, "decoder": {"name": "mlp", "hidden": [8]}}
#: what each built-in family is built with for these tests: config overrides, data shape
BUILT_IN = {
    "vae": ({}, SHAPE),
    "cvae": ({"options": {"num_classes": 3}}, SHAPE),
    "m2": ({"options": {"num_classes": 3}}, SHAPE),
    "hvae": ({"encoder": "mlp", "decoder": "mlp", "options": {"hidden": 8, "z2_dim": 3}}, SHAPE),
    "text_vae": ({"encoder": "mlp", "decoder": "mlp", "options": {"hidden": 8, "embed_dim": 4}}, (6,)),
}
#: built-in models without a latent code, so without the figures' capabilities
NO_LATENT = {"char_lm"}


def built_in(name):
    overrides, shape = BUILT_IN[name]
    model = {**SMALL, **overrides, "name": name}
    if name in ("hvae", "text_vae"):  # they build their own networks
        model.pop("encoder"), model.pop("decoder")
    pyro.set_rng_seed(0)
    return build_model(pyrovae.load_config({"model": model}).model, shape)


def pyrovae_families():
    return [name for name in models.names() if models.get(name).__module__.startswith("pyrovae.")]


def test_every_family_of_pyrovae_is_covered_here():
    assert set(pyrovae_families()) <= set(BUILT_IN) | NO_LATENT
    assert {"vae", "cvae", "m2", "hvae"} <= set(pyrovae_families())


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_family_provides_what_plot_needs(name):
    if name not in pyrovae_families():
        pytest.skip(f"{name} is not registered")
    model = built_in(name)
    missing = [need for need in COMMAND_NEEDS["plot"] if not has_capability(model, need)]
    assert not missing, f"{name} lacks {missing}"
    require_command(model, "plot")
    codes = model.prior_draws(5)
    assert codes.shape[0] == 5 and codes.dim() == 2
    fields = {"y": torch.tensor([0, 1, 2, 0, 1])} if "y" in model.fields else {}
    assert model.decode_mean(codes, **fields).shape == (5, *model.data_shape)


@pytest.mark.parametrize("name", sorted(NO_LATENT))
def test_a_model_without_a_latent_cannot_plot(name):
    if name not in pyrovae_families():
        pytest.skip(f"{name} is not registered")
    model = build_model(pyrovae.load_config({"model": {"name": name, "options": {"hidden": 8}}}).model, (6,))
    with pytest.raises(MissingCapability, match="pyrovae plot needs the model capability"):
        require_command(model, "plot")


def test_the_figures_need_exactly_what_the_plot_command_checks():
    assert set(FIGURE_NEEDS) == set(FIGURES)
    assert set(figure_needs()) == set(COMMAND_NEEDS["plot"])
    assert figure_needs(["training_curves"]) == ()


def _by_hand(name, model, z, y):
    """E[x | z] from the networks' outputs with the Bernoulli mean written out (sigmoid of the logits)."""
    if name == "vae":
        logits = model.decoder.net(z)
    elif name in ("cvae", "m2"):
        logits = model.decoder.net.net(torch.cat([z, F.one_hot(y, 3).to(z.dtype)], -1))
    else:  # hvae: z is z2, and z1 is the mean of p(z1 | z2), the first half of dec1's output
        z1 = model.decoder_z1(z)[..., : model.latent_dim]
        logits = model.decoder_x(z1, z)
    return torch.sigmoid(logits.reshape(len(z), *SHAPE))


@pytest.mark.parametrize("name", ["vae", "cvae", "m2", "hvae"])
def test_decode_mean_is_the_likelihood_mean_of_the_decoder_output(name):
    model = built_in(name).double()
    z = torch.linspace(-2.0, 2.0, 4 * model.prior_draws(1).shape[-1], dtype=torch.float64).reshape(4, -1)
    y = torch.tensor([0, 1, 2, 1])
    fields = {"y": y} if "y" in model.fields else {}
    with torch.no_grad():
        torch.testing.assert_close(model.decode_mean(z, **fields), _by_hand(name, model, z, y))


# -- a model that shows its data as text ------------------------------------------

ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class FakeText(torch.nn.Module):
    """Words of four letters as codes 0..25 ``(4,)``. The code of a word is
    its first and last letter; E[x | z] spells z1 twice, then z2 twice
    ("abcd" -> (0, 3) -> "aadd"). The k-th prior draw is (k, k + 1)."""

    fields = ("x",)
    data_shape = (4,)
    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def model(self, x):
        pass

    def guide(self, x):
        pass

    def encode(self, x):
        return dist.Normal(x[:, [0, -1]].float(), 0.1 * self.scale.detach()).to_event(1)

    def decode_mean(self, z):
        return z.repeat_interleave(2, -1)

    def prior_draws(self, n):
        k = torch.arange(n, dtype=torch.float)
        return torch.stack([k, k + 1], -1) % 26

    def sample(self, n, mean=True):
        return self.decode_mean(self.prior_draws(n))

    def reconstruct(self, x):
        return self.decode_mean(self.encode(x).mean)

    @staticmethod
    def to_text(x):
        return ["".join(ALPHABET[int(c)] for c in row.round().clamp(0, 25)) for row in x]


def words(*texts):
    return torch.tensor([[float(ALPHABET.index(c)) for c in t] for t in texts])


TEST_WORDS = ("abcd", "efgh", "gxyj", "mnop")


def lines_of(path):
    return [line for line in path.read_text().splitlines() if line.strip()]


def check_text_files(out):
    recon = lines_of(out / "reconstructions.txt")
    assert recon[1:3] == ["input:  abcd", "recon.: aadd"] and recon[3:5] == ["input:  efgh", "recon.: eehh"]
    assert lines_of(out / "samples.txt")[1:4] == ["aabb", "bbcc", "ccdd"]
    interp = lines_of(out / "interpolations.txt")
    # pair 1: codes (0, 3) of "abcd" and (6, 9) of "gxyj", three steps
    assert interp[1:6] == ["input A  abcd", "t=0.00   aadd", "t=0.50   ddgg", "t=1.00   ggjj", "input B  gxyj"]
    assert interp[6] == "input A  efgh" and interp[10] == "input B  mnop"


def test_a_text_model_gets_text_files(tmp_path):
    inp = PlotInputs(FakeText(), words(*TEST_WORDS), torch.full((4,), -1), steps=3, num_samples=5)
    written = write_plots(inp, tmp_path)
    for name in ("reconstructions", "samples", "interpolations"):
        assert written[name] == tmp_path / f"{name}.txt"
    check_text_files(tmp_path)
    assert len(lines_of(tmp_path / "samples.txt")) == 1 + 5
    for name in ("manifold", "traversals", "class_samples", "analogies"):
        assert "images only" in written[name]
    assert written["latent_scatter"].suffix == ".png"
    assert not list(tmp_path.glob("reconstructions.png"))


class Splits:
    def __init__(self, x):
        self.test = (x, torch.full((len(x),), -1))
        self.train = self.test


def test_end_of_training_figures_of_a_text_model(tmp_path):
    written = write_figures(FakeText(), Splits(words(*TEST_WORDS)), tmp_path, n=5)
    assert sorted(p.name for p in written) == ["interpolations.txt", "reconstructions.txt", "samples.txt"]
    assert lines_of(tmp_path / "samples.txt")[1:3] == ["aabb", "bbcc"]


def _run_of(model, monkeypatch, x):
    """``pyrovae plot`` of a run whose model is ``model`` and whose test data is ``x``."""
    import pyrovae.data

    monkeypatch.setattr(plot_command, "load_run_of", lambda args: (model, pyrovae.load_config({}), {}))
    monkeypatch.setattr(pyrovae.data, "load_data", lambda cfg: Splits(x))


def test_the_plot_command_writes_a_text_models_files(tmp_path, monkeypatch, capsys):
    _run_of(FakeText(), monkeypatch, words(*TEST_WORDS))
    out = tmp_path / "plots"
    assert cli.main(["plot", str(tmp_path), "--out", str(out), "--only", "reconstructions", "samples",
                     "interpolations", "-n", "3"]) == 0
    assert lines_of(out / "samples.txt")[1:] == ["aabb", "bbcc", "ccdd"]
    assert lines_of(out / "reconstructions.txt")[1:3] == ["input:  abcd", "recon.: aadd"]
    assert lines_of(out / "interpolations.txt")[1] == "input A  abcd"


class NoPriorDraws(FakeText):
    """A user's model that samples but cannot say where its prior's codes lie."""

    prior_draws = None

    def sample(self, n, mean=True):
        return words(*["abcd"] * n)


def test_plot_says_up_front_what_a_model_lacks(tmp_path, monkeypatch, capsys):
    _run_of(NoPriorDraws(), monkeypatch, words(*TEST_WORDS))
    out = tmp_path / "plots"
    assert cli.main(["plot", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs the model capability prior_draws(n)" in err[0]
    assert not out.exists()  # nothing was drawn before the error
    # a figure that does not read prior_draws is drawn when asked for alone
    assert cli.main(["plot", str(tmp_path), "--out", str(out), "--only", "samples"]) == 0
    assert lines_of(out / "samples.txt")[1] == "abcd"


def test_end_of_training_figures_skip_what_a_model_lacks(tmp_path):
    class NoReconstruct(FakeText):
        reconstruct = None

    said = []
    written = write_figures(NoReconstruct(), Splits(words(*TEST_WORDS)), tmp_path, n=2, say=said.append)
    assert sorted(p.name for p in written) == ["interpolations.txt", "samples.txt"]
    assert len(said) == 1 and "no reconstructions figure" in said[0] and "reconstruct" in said[0]
    with pytest.warns(UserWarning, match="reconstruct"):
        write_figures(NoReconstruct(), Splits(words(*TEST_WORDS)), tmp_path / "again", n=2)


def test_the_sample_command_writes_a_text_models_samples_as_text(tmp_path, monkeypatch, capsys):
    from pyrovae.commands import sample as sample_command

    monkeypatch.setattr(sample_command, "load_run_of", lambda args: (FakeText(), pyrovae.load_config({}), {}))
    assert cli.main(["sample", str(tmp_path), "-n", "3"]) == 0
    assert (tmp_path / "plots" / "samples-seed0.txt").read_text() == "aabb\nbbcc\nccdd\n"
    assert cli.main(["sample", str(tmp_path), "-n", "3", "--out", str(tmp_path / "s.png")]) == 2
    assert "as text, not images" in capsys.readouterr().err
    image_model = built_in("vae")
    monkeypatch.setattr(sample_command, "load_run_of", lambda args: (image_model, pyrovae.load_config({}), {}))
    assert cli.main(["sample", str(tmp_path), "--out", str(tmp_path / "s.txt")]) == 2
    assert "needs the model capability to_text" in capsys.readouterr().err and not (tmp_path / "s.txt").exists()
