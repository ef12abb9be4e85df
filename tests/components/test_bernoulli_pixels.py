"""The bernoulli likelihood's distribution, ``BernoulliPixels``, against the
Bernoulli log-mass written out and against torch's own
``Independent(Bernoulli)``, to the bit, with broadcasting as in
importance sampling (K particles over a batch)."""

import pytest
import torch

import pyro
import pyro.distributions as dist

from pyrovae.components.likelihoods import BernoulliPixels


def test_log_prob_is_the_written_out_bernoulli_mass_and_torchs_to_the_bit():
    torch.manual_seed(0)
    logits = 4 * torch.randn(6, 3, 1, 4, 4, dtype=torch.float64)  # (K, B, *data_shape)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64).round()  # (B, *data_shape)
    p = torch.sigmoid(logits)
    written = (x * p.log() + (1 - x) * (1 - p).log()).sum((-3, -2, -1))
    ours = BernoulliPixels(dist.Bernoulli(logits=logits), 3).log_prob(x)
    assert ours.shape == (6, 3)
    assert torch.allclose(ours, written, atol=1e-9)
    assert torch.equal(ours, dist.Bernoulli(logits=logits).to_event(3).log_prob(x))


def test_it_stays_itself_when_pyro_expands_it_and_checks_support_under_validation():
    d = BernoulliPixels(dist.Bernoulli(logits=torch.zeros(3, 4)), 1)
    assert isinstance(d.expand((2, 3)), BernoulliPixels)
    with pyro.validation_enabled(True):
        with pytest.raises(ValueError):
            BernoulliPixels(dist.Bernoulli(logits=torch.zeros(3, 4), validate_args=True), 1, validate_args=True).log_prob(torch.full((3, 4), 0.5))
