"""The trainer asks a model for its capabilities, and uses what it gets:
its own ``objective`` (the calls are recorded), its ``metrics`` (``val_<name>``
against the value computed by hand), its ``batch_needs`` (every batch holds
that many known points), and a model that takes ``index`` gets the batch's
rows in the training set and no validation."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.infer import Trace_ELBO

import pyrovae
from pyrovae.data import Splits
from pyrovae.data.batches import BatchNeeds
from pyrovae.training.trainer import Trainer

pyro.enable_validation(True)

N_TRAIN, N_VAL = 40, 30


class Gaussian(nn.Module):
    """z ~ N(0, 1), x | z ~ N(w z, I) for x ``(B, 2)``; guide q(z | x) = N(a·x, softplus(s))."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -1.0]))
        self.a = nn.Parameter(torch.zeros(2))
        self.s = nn.Parameter(torch.zeros(()))

    def _model(self, x, plate):
        with plate:
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z[..., None] * self.w, 1.0).to_event(1), obs=x)

    def _guide(self, x, plate, loc=None):
        with plate:
            pyro.sample("z", dist.Normal(x @ self.a if loc is None else loc, F.softplus(self.s)))

    def model(self, x):
        self._model(x, pyro.plate("data", x.shape[0]))

    def guide(self, x):
        self._guide(x, pyro.plate("data", x.shape[0]))


def splits(labels=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VAL, 2, generator=g)
    y = torch.full((N_TRAIN + N_VAL,), -1) if labels is None else labels
    return Splits(train=(x[:N_TRAIN], y[:N_TRAIN]), val=(x[N_TRAIN:], y[N_TRAIN:]), test=(x[:0], y[:0]))


def config(epochs=2, **train):
    return pyrovae.load_config({"data": {"name": "synthetic", "binarize": "none"},
                                "train": {"epochs": epochs, "batch_size": 10, "progress": False, "device": "cpu",
                                          **train}})


class RecordingELBO(Trace_ELBO):
    """Trace_ELBO that counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def differentiable_loss(self, *args, **kwargs):
        self.calls += 1
        return super().differentiable_loss(*args, **kwargs)


class WithObjective(Gaussian):
    def objective(self, spec, train_fields):
        self.asked = (spec, train_fields)
        self.recorder = RecordingELBO()
        return self.recorder


def test_a_models_own_objective_is_the_one_trained_with():
    model, data, cfg = WithObjective(), splits(), config(epochs=2)
    history = Trainer(model, data, cfg).fit()
    spec, train_fields = model.asked
    assert spec == cfg.train.objective and torch.equal(train_fields["x"], data.train[0])
    assert model.recorder.calls == 2 * math.ceil(N_TRAIN / 10)  # every step of both epochs
    assert all(math.isfinite(r["train_loss"]) for r in history)


class WithMetrics(Gaussian):
    def metrics(self, fields):
        x = fields["x"]
        return {"positive": ((x[:, 0] > 0).sum(), torch.tensor(len(x))), "never": (0.0, 0.0)}


@pytest.mark.parametrize("eval_batch_size", [7, 1000])
def test_metrics_are_reported_as_val_name_summed_over_the_chunks(eval_batch_size):
    data = splits()
    history = Trainer(WithMetrics(), data, config(epochs=1, eval_batch_size=eval_batch_size)).fit()
    expected = sum(1 for v in data.val[0][:, 0].tolist() if v > 0) / N_VAL
    assert history[0]["val_positive"] == pytest.approx(expected, abs=1e-12)
    assert "val_never" not in history[0]  # a count of 0: no rate


class WithNeeds(Gaussian):
    """Takes the field y (and ignores it); asks for 3 points with a known y in every step."""

    def model(self, x, y=None):
        self._model(x, pyro.plate("data", x.shape[0]))

    def guide(self, x, y=None):
        self._guide(x, pyro.plate("data", x.shape[0]))

    def batch_needs(self, train):
        return BatchNeeds(field="y", per_step=3)


def test_batch_needs_put_that_many_known_points_in_every_batch():
    labels = torch.full((N_TRAIN + N_VAL,), -1)
    labels[torch.tensor([0, 5, 17, 33, 50])] = torch.tensor([1, 0, 1, 1, 0])  # 4 known training points
    data = splits(labels)
    trainer = Trainer(WithNeeds(), data, config(epochs=1))
    batches = list(trainer.batches)
    assert len(batches) == math.ceil(36 / 10)  # one pass over the 36 unknown points
    for batch in batches:
        assert int((batch["y"] >= 0).sum()) == 3
        rows = [int(torch.nonzero((data.train[0] == x).all(1))) for x in batch["x"]]
        torch.testing.assert_close(batch["y"], data.train[1][rows], rtol=0, atol=0)
    assert math.isfinite(trainer.fit()[0]["train_loss"])


class Local(Gaussian):
    """A guide with a free code per training point, in the data plate subsampled by ``index``."""

    def __init__(self):
        super().__init__()
        self.locs = nn.Parameter(torch.zeros(N_TRAIN))

    def model(self, x, index=None, num_data=None):
        self._model(x, pyro.plate("data", num_data, subsample=index))

    def guide(self, x, index=None, num_data=None):
        self._guide(x, pyro.plate("data", num_data, subsample=index), self.locs[index])


def test_a_model_that_takes_index_gets_its_rows_and_no_validation():
    data = splits()
    trainer = Trainer(Local(), data, config(epochs=2))
    for batch in trainer.batches:
        assert torch.equal(batch["x"], data.train[0][batch["index"]]) and batch["num_data"] == N_TRAIN
    assert trainer.val_batch is None
    history = trainer.fit()
    assert all("val_loss" not in r and math.isfinite(r["train_loss"]) for r in history)
    touched = trainer.vae.locs.detach() != 0
    assert bool(touched.all())  # every training point's own code was trained
