"""The semi-supervised M2 (pyrovae.models.m2) against answers computed another
way: its enumerated ELBO against a hand-written sum over the classes, its
partly labelled objective against the weights of Kingma et al.'s J^alpha
written out, its importance-sampled log p(x) against the exact marginal of a
linear-Gaussian mixture, and with every label observed against the
conditional VAE it then is."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical, MultivariateNormal, Normal

import pyro
import pyro.distributions as dist

import pyrovae
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.enumerated import EnumeratedObjective
from pyrovae.infer.objectives import build_objective
from pyrovae.models import build_model

from helpers import assert_resumes_exactly, checked_traces, tiny_config

C = 4  # the synthetic source's classes


def m2_config(epochs=2, labelled=40, **model):
    cfg = tiny_config(train={"epochs": epochs, "batch_size": 40, "labelled_batch_size": 10, "progress": False},
                      data={"labelled": labelled} if labelled else {})
    cfg["model"] = {"name": "m2", "latent_dim": 3, "options": {"num_classes": C, "classification_weight": 0.5},
                    "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]}, **model}
    return cfg


def build(shape=(1, 8, 8), dtype=torch.float64, **model):
    model = build_model(pyrovae.load_config(m2_config(**model)).model, shape)
    return model.to(dtype)


def m2_objective(model, counts=None):
    """M2's own objective (its ``objective`` capability), as the trainer builds
    it for a training set of ``counts`` = (labelled, unlabelled) points
    (None: no training set, so each batch's own counts)."""
    fields = None
    if counts is not None:
        n_l, n_u = counts
        fields = {"y": torch.cat([torch.arange(n_l) % C, torch.full((n_u,), -1)])}
    return model.objective({"name": "elbo"}, fields)


def binary(n, shape=(1, 8, 8), seed=0):
    return torch.rand(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)).round()


def hand_written_terms(model, x, eps, y=None):
    """Per class and point (or per point for given y), the pieces of the ELBO
    written out with torch.distributions from the networks' outputs, under
    the reparameterization noise ``eps``."""
    D = model.latent_dim
    ys = torch.arange(C)[:, None].expand(C, len(x)) if y is None else y[None]
    onehot = F.one_hot(ys, C).double()
    xf = x.flatten(1).expand(*ys.shape, -1)
    h = model.encoder.net(torch.cat([xf, onehot], -1))
    loc, scale = h[..., :D], F.softplus(h[..., D:]) + 1e-4
    z = loc + scale * eps
    logits = model.decoder.net(torch.cat([z, onehot], -1)).reshape(*ys.shape, *x.shape[1:])
    log_px = Bernoulli(logits=logits).log_prob(x.expand(*ys.shape, *x.shape[1:])).flatten(2).sum(-1)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = Normal(loc, scale).log_prob(z).sum(-1)
    log_qy = Categorical(logits=model.classifier(x)).log_prob(ys)
    return log_px, log_pz, log_qz, log_qy


def test_enumerated_elbo_equals_the_hand_written_sum_over_classes():
    """-sum_i sum_y q(y|x_i) [log p(y) - log q(y|x_i) + log p(x_i|z, y) + log p(z) - log q(z|x_i, y)]."""
    model = build()
    x = binary(5)
    objective = build_objective({"name": "elbo"}, model)
    assert isinstance(objective, EnumeratedObjective) and objective.partial_field == "y"
    torch.manual_seed(3)
    loss = objective.loss(model.model, model.guide, x)
    torch.manual_seed(3)
    eps = Normal(torch.zeros(C, 5, 3, dtype=torch.float64), 1.0).rsample()
    with torch.no_grad():
        log_px, log_pz, log_qz, log_qy = hand_written_terms(model, x, eps)
        per_class = -math.log(C) - log_qy + log_px + log_pz - log_qz
        expected = -(log_qy.exp() * per_class).sum()
    assert loss == pytest.approx(float(expected), abs=1e-8, rel=0)


@pytest.mark.parametrize("weighting", ["data", "batch"])
@pytest.mark.parametrize("counts, num_data", [(None, None), ((40, 760), None), (None, 70), ((40, 760), 800)])
def test_a_partly_labelled_batch_scores_kingmas_objective(counts, num_data, weighting):
    """U_b + w L_b + s A_b with w = (N_l/N_u)(B_u/B_l) (``data``; 1 for
    ``batch``), s = (N/N_u)(B_u/B_l), each part written out by hand (the
    batch's own counts when none are given); with ``num_data`` N_u/B_u times
    that (counts in the batch's proportions when none are given)."""
    model = build(options={"num_classes": C, "classification_weight": 0.5, "labelled_weighting": weighting})
    x = binary(7)
    y = torch.tensor([-1, 2, -1, -1, 0, -1, 3])
    known = y >= 0
    objective = m2_objective(model, counts)
    torch.manual_seed(5)
    loss = objective.loss(model.model, model.guide, x, y=y, **({"num_data": num_data} if num_data else {}))
    n_l, n_u = counts or ((3, 4) if num_data is None else (num_data * 3 / 7, num_data * 4 / 7))
    b_l, b_u = 3, 4
    torch.manual_seed(5)  # the unlabelled part draws first, then the labelled part
    eps_u = Normal(torch.zeros(C, b_u, 3, dtype=torch.float64), 1.0).rsample()
    eps_l = Normal(torch.zeros(b_l, 3, dtype=torch.float64), 1.0).rsample()
    with torch.no_grad():
        log_px, log_pz, log_qz, log_qy = hand_written_terms(model, x[~known], eps_u)
        unlabelled = -(log_qy.exp() * (-math.log(C) - log_qy + log_px + log_pz - log_qz)).sum()
        log_px, log_pz, log_qz, log_qy = hand_written_terms(model, x[known], eps_l, y[known])
        labelled = -(-math.log(C) + log_px + log_pz - log_qz).sum()
        classification = -0.5 * log_qy.sum()  # classification_weight a = 0.5
        w = (n_l / n_u) * (b_u / b_l) if weighting == "data" else 1.0
        s = ((n_l + n_u) / n_u) * (b_u / b_l)
        expected = (unlabelled + w * labelled + s * classification) * (1 if num_data is None else n_u / b_u)
    assert loss == pytest.approx(float(expected), abs=1e-8, rel=0)


class FixedNoiseNormal(dist.Normal):
    """A Normal whose reparameterized draw is ``loc + scale * eps`` with a
    given ``eps`` (broadcast over the enumerated classes): the same noise for
    a data point in any batch, any share of a batch and any process."""

    def __init__(self, loc, scale, eps):
        super().__init__(loc, scale)
        self.eps = eps

    def expand(self, batch_shape, _instance=None):
        return FixedNoiseNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape), self.eps)

    def rsample(self, sample_shape=torch.Size()):
        assert not sample_shape, sample_shape
        return self.loc + self.scale * self.eps


def fix_noise(model, seed=5):
    """Make q(z | x, y)'s draw a fixed function of x: eps = flat(x) @ R (R
    seeded); returns that function, ``x (B, *data_shape) -> eps (B, latent_dim)``."""
    d = math.prod(model.data_shape)
    dtype = next(model.parameters()).dtype
    r = torch.randn(d, model.latent_dim, generator=torch.Generator().manual_seed(seed), dtype=dtype) / math.sqrt(d)
    encode = model.encode

    def noise(x):
        return x.flatten(1).to(dtype) @ r

    def fixed(x, y=None):
        base = encode(x, y).base_dist
        return FixedNoiseNormal(base.loc, base.scale, noise(x)).to_event(1)

    model.encode = fixed
    return noise


def full_data_estimate(model, x, y, noise, counts, num_data=None, a=0.5):
    """Kingma et al.'s J^alpha = sum_l L + sum_u U + a N mean_l[-log q(y|x)]
    estimated from the batch (x, y) with the fixed ``noise``, written out by
    hand (float64, differentiable): with ``num_data`` = N the full-data
    estimate (N_u/B_u) sum_b U + (N_l/B_l) sum_b L + (a N/B_l) sum_b -log q;
    without it B_u/N_u times that (the trainer's per-step scale)."""
    n_l, n_u = counts
    known = y >= 0
    b_l, b_u = int(known.sum()), int((~known).sum())
    xu, xl = x[~known], x[known]
    log_px, log_pz, log_qz, log_qy = hand_written_terms(model, xu, noise(xu).expand(C, -1, -1))
    unlabelled = -(log_qy.exp() * (-math.log(C) - log_qy + log_px + log_pz - log_qz)).sum()
    log_px, log_pz, log_qz, log_qy = hand_written_terms(model, xl, noise(xl)[None], y[known])
    labelled = -(-math.log(C) + log_px + log_pz - log_qz).sum()
    classification = -log_qy.sum()
    estimate = (n_u / b_u) * unlabelled + (n_l / b_l) * labelled + (a * (n_l + n_u) / b_l) * classification
    return estimate if num_data is not None else estimate * b_u / n_u


def shares(n, world=2):
    """The rows of each rank's share of an n-point batch, cut as ``Batches`` cuts them."""
    return [torch.arange(n)[rank::world] for rank in range(world)]


def partly_labelled_batch(b_u, b_l, seed=1):
    """``b_u`` unlabelled points, then ``b_l`` labelled ones (a batch of ``Batches``)."""
    x = binary(b_u + b_l, seed=seed)
    labels = torch.randint(0, C, (b_l,), generator=torch.Generator().manual_seed(seed))
    return x, torch.cat([torch.full((b_u,), -1), labels])


#: (B_u, B_l) of global batches cut into two shares: equal shares, uneven ones,
#: a last short batch, and a share without labelled points
SHARDED_BATCHES = [(20, 20), (41, 10), (3, 10), (40, 3), (40, 1)]


@pytest.mark.parametrize("num_data", [None, 800])
@pytest.mark.parametrize("b_u, b_l", SHARDED_BATCHES)
def test_shares_scored_with_the_whole_batchs_counts_add_up_to_its_loss(b_u, b_l, num_data):
    """The whole batch and the sum of its two shares (each scored with the
    whole batch's counts, as a data-parallel step does) both equal the
    hand-written estimate, loss and gradient."""
    model = build()
    noise = fix_noise(model)
    x, y = partly_labelled_batch(b_u, b_l)
    objective = m2_objective(model, (40, 760))
    extra = {"num_data": num_data} if num_data else {}
    params = [p for p in model.parameters() if p.requires_grad]
    expected = full_data_estimate(model, x, y, noise, (40, 760), num_data)
    expected_grads = torch.autograd.grad(expected, params, allow_unused=True)
    whole = objective.differentiable_loss(model.model, model.guide, x, y=y, **extra)
    assert whole.item() == pytest.approx(expected.item(), abs=1e-8 * abs(expected.item()), rel=0)
    total = 0.0
    with objective.over_batch(objective.batch_counts({"x": x, "y": y})):
        for rows in shares(len(x)):
            total = total + objective.differentiable_loss(model.model, model.guide, x[rows], y=y[rows], **extra)
    assert total.item() == pytest.approx(expected.item(), abs=1e-8 * abs(expected.item()), rel=0)
    grads = torch.autograd.grad(total, params, allow_unused=True)
    for got, want in zip(grads, expected_grads):
        want = torch.zeros_like(got) if want is None else want
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_num_data_that_disagrees_with_the_counts_is_an_error():
    model = build()
    x, y = partly_labelled_batch(4, 3)
    objective = m2_objective(model, (40, 760))
    with pytest.raises(ValueError, match="num_data=700 but the objective's counts say 40 known and 760"):
        objective.loss(model.model, model.guide, x, y=y, num_data=700)


def test_with_every_label_observed_m2_is_the_conditional_vae():
    """Same networks: the M2 loss with y observed is the cvae's loss plus
    -log p(y) = log C per point, and so are the IS estimates of log p(x, y) and log p(x | y)."""
    m2 = build()
    cfg = pyrovae.load_config(m2_config())
    cfg.model.name, cfg.model.options = "cvae", {"num_classes": C}
    cvae = build_model(cfg.model, (1, 8, 8)).double()
    cvae.load_state_dict({k: v for k, v in m2.state_dict().items() if not k.startswith(("classifier", "class_logits"))})
    x, y = binary(6), torch.tensor([0, 1, 2, 3, 0, 1])
    elbo = pyro.infer.Trace_ELBO()
    torch.manual_seed(1)
    loss_m2 = elbo.loss(m2.model, m2.guide, x, y)
    torch.manual_seed(1)
    loss_cvae = elbo.loss(cvae.model, cvae.guide, x, y)
    assert loss_m2 == pytest.approx(loss_cvae + 6 * math.log(C), abs=1e-8)
    ll_m2 = pyrovae.log_likelihood(m2, x, 20, y=y, seed=2)
    ll_cvae = pyrovae.log_likelihood(cvae, x, 20, y=y, seed=2)
    torch.testing.assert_close(ll_m2, ll_cvae - math.log(C), rtol=0, atol=1e-9)


def linear_gaussian_m2(sigma=0.5):
    """An m2 whose p(x | z, y) = N(W z + B onehot(y) + b, sigma^2 I) is linear
    in z and y, and whose q(z | x, y) is the exact posterior (W has
    orthogonal columns, so the posterior covariance is diagonal)."""
    cfg = m2_config(likelihood={"name": "normal", "scale_mode": "fixed", "scale": sigma},
                    encoder={"name": "mlp", "hidden": []}, decoder={"name": "mlp", "hidden": []})
    cfg["model"]["latent_dim"] = 2
    model = build_model(pyrovae.load_config(cfg).model, (3,)).double()
    g = torch.Generator().manual_seed(0)
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    Bm = torch.randn(3, C, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64) + W.T @ W / sigma**2
    cov = torch.linalg.inv(precision)
    A = cov @ W.T / sigma**2  # posterior mean = A (x - B onehot(y) - b)
    with torch.no_grad():
        dec = model.decoder.net.net[0]
        dec.weight.copy_(torch.cat([W, Bm], 1))
        dec.bias.copy_(b)
        enc = model.encoder.net.net[0]
        raw = torch.log(torch.expm1(cov.diagonal().sqrt() - 1e-4))  # softplus^-1 of the posterior std
        enc.weight.zero_()
        enc.weight[:2, :3] = A
        enc.weight[:2, 3:] = -A @ Bm
        enc.bias.copy_(torch.cat([-A @ b, raw]))
    marginals = [MultivariateNormal(Bm[:, c] + b, W @ W.T + sigma**2 * torch.eye(3, dtype=torch.float64)) for c in range(C)]
    return model, marginals


def test_the_is_log_likelihood_sums_y_out_to_the_exact_mixture_marginal():
    """log p(x) = logsumexp_y [log p(y) + log N(x; B_y + b, W W^T + sigma^2 I)], to 1e-6,
    with y summed out by pyrovae.log_likelihood and by evaluate."""
    model, marginals = linear_gaussian_m2()
    x = torch.randn(9, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    exact = torch.logsumexp(torch.stack([m.log_prob(x) for m in marginals]), 0) - math.log(C)
    result = pyrovae.log_likelihood(model, x, 7, seed=0, return_stats=True)
    torch.testing.assert_close(result.log_likelihood, exact, rtol=0, atol=1e-6)
    assert float(result.stderr.max()) < 1e-6  # every weight is exact: no spread
    summary = pyrovae.evaluate(model, (x, torch.zeros(9, dtype=torch.long)), 5).summary()
    assert summary["log_likelihood"] == pytest.approx(float(exact.mean()), abs=1e-6)
    assert summary["summed_out"] == ["y"] and summary["conditioned_on"] == []
    # the ELBO sums y out exactly too: below log p(x) by KL(q(y|x) || p(y|x)) >= 0
    assert summary["elbo"] <= summary["log_likelihood"] + 1e-9
    assert summary["elbo"] == pytest.approx(summary["reconstruction"] - summary["kl"], abs=1e-9)


def test_the_summed_out_stderr_adds_the_classes_variances():
    """The stderr of log p̂(x) = log sum_c p̂(x, c) is sqrt(sum_c Var p̂_c) / p̂:
    the spread of the estimate over 40 seeds over the RMS reported stderr is
    1. The model ignores y and its guide is a widened exact posterior (light
    tails), so the C classes' estimates are independent and alike: one
    class's variance alone would give sqrt(C) = 2."""
    model, _ = linear_gaussian_m2()
    with torch.no_grad():
        model.decoder.net.net[0].weight[:, 2:] = 0
        model.encoder.net.net[0].weight[:, 3:] = 0
        model.encoder.net.net[0].bias[:2] = 0
        model.encoder.net.net[0].bias[2:] += 0.7  # q(z|x) wider than the posterior
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    results = [pyrovae.log_likelihood(model, x, 50, seed=s, return_stats=True) for s in range(40)]
    spread = torch.stack([r.log_likelihood for r in results]).std(0)
    reported = torch.stack([r.stderr for r in results]).pow(2).mean(0).sqrt()
    assert 0.8 < float((spread / reported).median()) < 1.25


def test_the_summed_out_elbo_and_its_terms_are_exact_for_the_linear_gaussian_mixture():
    """With the exact q(z | x, y): ELBO = sum_y q(y|x) [log p(x, y) - log q(y|x)]
    (exact for any K), and the reconstruction term is
    sum_y q(y|x) E_q(z|x,y)[log p(x | z, y)], written out in closed form."""
    sigma = 0.5
    model, marginals = linear_gaussian_m2(sigma)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    result = pyrovae.evaluate(model, x, 4000, seed=0)
    with torch.no_grad():
        q_y = torch.softmax(model.classifier(x), -1).T  # (C, N)
        log_joint = torch.stack([m.log_prob(x) for m in marginals]) - math.log(C)  # log p(x, y)
        elbo = (q_y * (log_joint - q_y.log())).sum(0)
        W = model.decoder.net.net[0].weight[:, :2]
        recon = []
        for c in range(C):
            post = model.encode(x, torch.full((5,), c))
            loc, var = post.base_dist.loc, post.base_dist.scale ** 2
            mean = model.decoder.net(torch.cat([loc, F.one_hot(torch.full((5,), c), C).double()], -1))
            trace = (W ** 2 * var[:, None, :]).sum((-1, -2))  # tr(W diag(var) W^T)
            recon.append(Normal(mean, sigma).log_prob(x).sum(-1) - trace / (2 * sigma ** 2))
        recon = (q_y * torch.stack(recon)).sum(0)
    torch.testing.assert_close(result.per_point["elbo"], elbo, rtol=0, atol=1e-6)
    torch.testing.assert_close(result.per_point["reconstruction"], recon, rtol=0, atol=0.05)


def test_evaluate_reports_the_classifiers_test_error():
    model = build(dtype=torch.float32)
    x, y = binary(30).float(), torch.randint(0, C, (30,), generator=torch.Generator().manual_seed(0))
    y[3] = -1  # an unlabelled point is left out of the error
    summary = pyrovae.evaluate(model, (x, y), 2).summary()
    predicted = model.classifier(x).argmax(-1)
    expected = float((predicted != y)[y >= 0].float().mean())
    assert summary["classification_error"] == pytest.approx(expected)
    assert summary["labelled_points"] == 29


@pytest.mark.parametrize("missing", [0.5, 1.0])
def test_the_validation_error_counts_only_labelled_points(missing):
    """val_error is the classifier's error on the validation points that have
    a label (-1 marks none), as evaluate's classification_error; without
    any labelled validation point there is none."""
    from pyrovae.training.trainer import Trainer

    cfg = pyrovae.load_config(m2_config(epochs=1))
    splits = pyrovae.load_data(cfg.data)
    x, y = splits.val
    y = y.clone()
    y[: int(missing * len(y))] = -1
    splits.val = (x, y)
    model = build_model(cfg.model, splits.data_shape)
    record = Trainer(model, splits, cfg).validate()
    known = y >= 0
    if not bool(known.any()):
        assert "val_error" not in record
        return
    with torch.no_grad():
        predicted = model.classifier(x).argmax(-1)
    expected = float((predicted[known] != y[known]).double().mean())
    assert record["val_error"] == pytest.approx(expected, abs=1e-12)


def test_m2_trains_on_partly_labelled_data_and_resumes_exactly(tmp_path):
    cfg = m2_config(epochs=3)
    splits = pyrovae.load_data(pyrovae.load_config(cfg).data)
    y = splits.train[1]
    assert int((y >= 0).sum()) == 40 and torch.bincount(y[y >= 0]).tolist() == [10] * C
    history = pyrovae.train(build_model(pyrovae.load_config(cfg).model, splits.data_shape), splits, cfg)
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["val_error"] <= 1 for r in history)
    assert_resumes_exactly(lambda epochs: m2_config(epochs=epochs), tmp_path)


def test_m2_learns_to_classify_the_synthetic_prototypes():
    """With 40 labels of 4 well-separated prototypes the classifier's
    validation error falls well below chance (0.75)."""
    cfg = m2_config(epochs=6)
    splits = pyrovae.load_data(pyrovae.load_config(cfg).data)
    pyro.set_rng_seed(0)
    model = build_model(pyrovae.load_config(cfg).model, splits.data_shape)
    history = pyrovae.train(model, splits, cfg)
    assert history[-1]["val_error"] < 0.2


def test_m2_also_trains_with_every_label_and_with_none():
    for labelled in (None, 0):
        cfg = m2_config(epochs=1, labelled=None)
        splits = pyrovae.load_data(pyrovae.load_config(cfg).data)
        if labelled == 0:
            splits.train = (splits.train[0], torch.full_like(splits.train[1], -1))
        model = build_model(pyrovae.load_config(cfg).model, splits.data_shape)
        history = pyrovae.train(model, splits, cfg)
        assert math.isfinite(history[0]["train_loss"])


@pytest.mark.parametrize("bad, message", [
    (torch.tensor([0, 1, 4]), "label 4 at index 2 is outside 0..3"),
    (torch.tensor([0.0, float("nan"), 1.0]), "NaN"),
    (torch.tensor([0.5, 1.0, 2.0]), "not an integer"),
    (torch.tensor([0, 1]), "2 rows but x has 3"),
    (torch.tensor([[0], [1], [2]]), "shape"),
])
def test_bad_labels_are_clear_errors(bad, message):
    model = build(dtype=torch.float32)
    with pytest.raises(DataError, match=message):
        pyrovae.log_likelihood(model, binary(3).float(), 2, y=bad)


def test_a_missing_label_inside_one_model_call_is_a_clear_error():
    model = build(dtype=torch.float32)
    with pytest.raises(DataError, match="-1"):
        pyro.infer.Trace_ELBO().loss(model.model, model.guide, binary(2).float(), torch.tensor([0, -1]))


@pytest.mark.parametrize("labelled, message", [(2000, "exceeds"), (42, "not divisible by the 4 classes"),
                                               (1000, "needs 250 points of class")])
def test_bad_labelled_counts_are_clear_errors(labelled, message):
    with pytest.raises(DataError, match=message):
        pyrovae.load_data(pyrovae.load_config(m2_config(labelled=labelled)).data)


def test_bad_m2_options_are_clear_errors():
    for options, message in [({"num_classes": 1}, "num_classes"), ({"classification_weight": -1.0}, "classification_weight"),
                             ({"classes": 3}, "classes"), ({"labelled_weighting": "equal"}, "data, batch")]:
        cfg = m2_config()
        cfg["model"]["options"] = options
        with pytest.raises(ConfigError, match=message):
            build_model(pyrovae.load_config(cfg).model, (1, 8, 8))
    cfg = pyrovae.load_config(m2_config())
    model = build_model(cfg.model, (1, 8, 8))
    for name in ("iwae", "meanfield"):
        with pytest.raises(ConfigError, match="enumeration"):
            build_objective({"name": name}, model)


@pytest.mark.parametrize("labelled", [False, True])
def test_model_and_guide_traces_agree_site_by_site(labelled):
    """With y observed the guide has only z; without, y and z (y enumerated
    by the objective, drawn here), in a particles plate, validation on."""
    model = build(dtype=torch.float32)
    x = binary(5).float()
    fields = {"y": torch.tensor([0, 1, 2, 3, 0])} if labelled else {}
    guide_trace, model_trace = checked_traces(model, x, 3, **fields)
    latent = [n for n, s in guide_trace.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "data"]
    assert latent == (["z"] if labelled else ["y", "z"])
    assert model_trace.nodes["y"]["is_observed"] == labelled
    assert guide_trace.nodes["z"]["value"].shape == (3, 5, 3)


def test_the_cli_reports_the_summed_out_likelihood_and_the_test_error(tmp_path, capsys):
    import yaml

    from pyrovae.cli import main

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(m2_config(epochs=1)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--iw-samples", "2", "--no-compile", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "log p(x), y summed out, IS" in out and "classification error of q(y|x)" in out
    assert main(["sample", str(run), "--label", "1", "-n", "4", "--out", str(tmp_path / "ones.png")]) == 0
    assert main(["plot", str(run), "--only", "analogies", "class_samples"]) == 0
    assert (run / "plots" / "analogies.png").exists()


def test_m2_asks_for_labelled_points_in_every_step_and_counts_its_mistakes():
    """batch_needs: train.labelled_batch_size labelled points a step (else
    train.batch_size); metrics: the classifier's wrong labels among the points
    that have one, and their number."""
    from pyrovae.data.batches import BatchNeeds

    model = build(dtype=torch.float32)
    assert model.batch_needs(pyrovae.load_config(m2_config()).train) == BatchNeeds("y", 10)
    cfg = m2_config()
    del cfg["train"]["labelled_batch_size"]
    assert model.batch_needs(pyrovae.load_config(cfg).train) == BatchNeeds("y", 40)
    x = binary(12).float()
    y = torch.tensor([0, 1, 2, 3, -1, -1, 0, 1, 2, 3, -1, 0])
    wrong, labelled = model.metrics({"x": x, "y": y})["error"]
    with torch.no_grad():
        predicted = model.classifier(x).argmax(-1)
    assert float(labelled) == 9 and float(wrong) == sum(int(p != t) for p, t in zip(predicted, y) if t >= 0)
    assert model.metrics({"x": x}) == {}
