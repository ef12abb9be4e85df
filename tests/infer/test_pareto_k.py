"""The PSIS diagnostic of evaluate (pyrovae.infer.psis): per-point Pareto k̂
of the importance weights, against the closed-form tail index of a Gaussian
target N(0, sp²) under a narrower Gaussian proposal N(0, sq²):

    w(z) ∝ exp(a z²),  a = (1/sq² - 1/sp²) / 2,  P(w > t) ∝ t^(-1 / (2 a sq²))   =>   k = 1 - sq² / sp²

and the streaming top-M merge against the top-M of all K weights at once,
fitted with Pyro's own ``fit_generalized_pareto``."""

import math
import warnings

import pytest
import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.ops.stats import fit_generalized_pareto

import pyrovae
from pyrovae.infer.evaluate import _warn_pareto
from pyrovae.infer.psis import PARETO_K_WARN_SHARE, merge_top, pareto_k, tail_size

from tiny_run import one_thread

pyro.enable_validation(True)


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


class GaussianPair(nn.Module):
    """Model z ~ N(0, sp²) with an observed site that adds the same log N(x; 0, 1)
    to every weight; guide z ~ N(0, sq²), whatever x. The guide keeps its draws."""

    fields = ("x",)
    max_plate_nesting = 1

    def __init__(self, sigma_p: float, sigma_q: float):
        super().__init__()
        self.sigma_p, self.sigma_q = sigma_p, sigma_q
        self.register_buffer("zero", torch.zeros((), dtype=torch.float64))
        self.draws = []

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.zero, self.sigma_p))
            pyro.sample("x", dist.Normal(self.zero, 1.0).expand(x.shape).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            self.draws.append(pyro.sample("z", dist.Normal(self.zero, self.sigma_q)))


def points(n=16):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


@pytest.mark.parametrize("ratio", [0.5, 0.8])
def test_k_hat_is_the_closed_form_tail_index(ratio):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ratio 0.5: most points are above 0.7
        result = pyrovae.evaluate(GaussianPair(1.0, ratio), points(), 4000, seed=0)
    k = result.per_point["pareto_k"]
    assert k.shape == (16,)
    assert float(k.mean()) == pytest.approx(1 - ratio ** 2, abs=0.1)
    summary = result.summary()
    assert summary["pareto_k_mean"] == pytest.approx(float(k.mean()))
    assert summary["pareto_k_max"] == pytest.approx(float(k.max()))
    assert summary["share_pareto_k_above_0_7"] == pytest.approx(float((k > 0.7).double().mean()))


def test_a_proposal_equal_to_the_target_has_a_small_k_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = pyrovae.evaluate(GaussianPair(1.0, 1.0), points(), 4000, seed=0)
    assert float(result.per_point["pareto_k"].max()) <= 0.1
    assert result.summary()["share_pareto_k_above_0_7"] == 0.0


def test_a_heavy_tail_warns_and_names_ais():
    with pytest.warns(UserWarning, match=r"Pareto k > 0\.7.*pyrovae\.ais_log_likelihood"):
        pyrovae.evaluate(GaussianPair(1.0, 0.3), points(8), 1000, seed=0)  # k = 0.91


def test_the_streamed_tail_is_that_of_all_k_weights_at_once():
    """Small particle and point chunks against the weights written out by hand
    from the guide's draws (all K at once), fitted row by row with Pyro."""
    model, x, k = GaussianPair(1.0, 0.6), points(6), 1000
    result = pyrovae.evaluate(model, x, k, batch_size=3, chunk_size=170, seed=1)
    draws = model.draws[-12:]                     # 2 point chunks x 6 particle chunks (earlier draws: input checks)
    draws = torch.cat([torch.cat(draws[:6]), torch.cat(draws[6:])], 1)
    assert draws.shape == (k, 6)
    log_w = (dist.Normal(0.0, 1.0).log_prob(draws) - dist.Normal(0.0, 0.6).log_prob(draws)
             + dist.Normal(0.0, 1.0).log_prob(x[:, 0]))                     # (K, N)
    m = int(math.ceil(min(0.2 * k, 3 * math.sqrt(k))))
    top = log_w.topk(m + 1, 0).values                                       # descending
    expected = []
    for column in top.t():
        w = (column - column[0]).exp()
        expected.append(fit_generalized_pareto(w[:m] - w[m])[0])
    torch.testing.assert_close(result.per_point["pareto_k"], torch.tensor(expected, dtype=torch.float64))


def test_merge_top_over_chunks_is_topk_of_the_whole():
    g = torch.Generator().manual_seed(2)
    log_w = torch.randn(997, 5, generator=g) * 3
    m = tail_size(997)
    top = None
    for chunk in log_w.split(64):
        top = merge_top(top, chunk, m)
    assert torch.equal(top.sort(0, descending=True).values, log_w.topk(m + 1, 0).values)


def test_the_vectorized_fit_is_pyros_fit_row_by_row():
    g = torch.Generator().manual_seed(3)
    log_w = torch.randn(41, 7, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, 7, dtype=torch.float64)
    got = pareto_k(log_w)
    lw = log_w.sort(0, descending=True).values
    expected = [fit_generalized_pareto((c[:-1] - c[0]).exp() - (c[-1] - c[0]).exp())[0] for c in lw.t()]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_too_few_samples_give_no_k_hat():
    model, x = GaussianPair(1.0, 0.8), points(4)
    small = pyrovae.evaluate(model, x, 20, seed=0)
    assert "pareto_k" not in small.per_point
    summary = small.summary()
    assert summary["pareto_k_mean"] is None and summary["share_pareto_k_above_0_7"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 5 weights in the tail: k̂ is rough
        assert pyrovae.evaluate(model, x, 21, seed=0).per_point["pareto_k"].shape == (4,)


@pytest.mark.parametrize("above, warns", [(10, False), (11, True)])
def test_the_warning_fires_above_the_threshold_share_only(above, warns):
    assert PARETO_K_WARN_SHARE == 0.1
    k = torch.cat([torch.full((above,), 0.9), torch.full((100 - above,), 0.3)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_pareto(k, 1000)
    assert len(caught) == int(warns)
    if warns:
        message = str(caught[0].message)
        assert "\n" not in message and "11% of the 100 points" in message


def test_a_summed_out_site_keeps_the_largest_of_all_c_times_k_weights():
    """Each value c of a summed-out site streams its own K weights; the kept
    tail is the top M + 1 of all C·K, as topk over them at once gives."""
    from pyrovae.infer.loglik import _combine

    g = torch.Generator().manual_seed(4)
    k, b = 100, 3
    m = tail_size(k)
    full = [torch.randn(k, b, generator=g) * (c + 1) for c in range(3)]           # (K, B) per value
    zero = torch.zeros(b)
    parts = []
    for log_w in full:
        top = None
        for chunk in log_w.split(30):
            top = merge_top(top, chunk, m)
        stats = (log_w.logsumexp(0), (2 * log_w).logsumexp(0), torch.zeros(3, b), None, top)
        parts.append((torch.full((b,), -math.log(3)), zero, stats))
    kept = _combine(parts, k)["top"]
    assert torch.equal(kept.sort(0, descending=True).values, torch.cat(full).topk(m + 1, 0).values)
