"""The exact-bin rational splines of the flow prior, against Pyro's spline
(away from the knots), float64 arithmetic and autograd (everywhere), and
a bisection inverse of the float64 forward map (the flow prior's density
at points that invert onto a knot).

Pyro's splines put an input that lies less than ``1e-6`` above a knot into
the bin below; the bin's rational function is then evaluated outside the
segment where it is monotone, and can return ``±inf`` or NaN. The inputs
here sit on every knot, a few float32 steps either side of it, and across
that band.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from pyro.distributions.transforms.spline import _calculate_knots
from pyro.distributions.transforms.spline import _monotonic_rational_spline as pyro_spline

import pyrovae
from pyrovae.components import spline
from pyrovae.components.spline import monotonic_rational_spline

from helpers import tiny_model_config

BINS = 8
ORDERS = ["linear", "quadratic"]


def random_parameters(seed, scale=3.0, order="linear", dims=1):
    """Spline parameters ``(w, h, d, lambdas)`` for ``dims`` coordinates, as Pyro normalizes them."""
    g = torch.Generator().manual_seed(seed)
    w = F.softmax(scale * torch.randn(dims, BINS, generator=g), -1)
    h = F.softmax(scale * torch.randn(dims, BINS, generator=g), -1)
    d = F.softplus(scale * torch.randn(dims, BINS - 1, generator=g))
    lam = torch.sigmoid(scale * torch.randn(dims, BINS, generator=g)) if order == "linear" else None
    return w, h, d, lam


def knots(params, inverse, bound=3.0):
    """The knots in the input space of the map: y-knots for the inverse, x-knots forward ``(K + 1,)``."""
    w, h, _, _ = params
    lengths = h if inverse else w
    return _calculate_knots(1e-3 + (1 - 1e-3 * BINS) * lengths, -bound, bound)[1][0]


def around_knots(points, steps=12):
    """Every knot, ``steps`` float32 neighbours on each side, and points across the 2e-6 band above it ``(M, 1)``."""
    out = []
    for k in points:
        for direction in (-10.0, 10.0):
            v = k.clone()
            for _ in range(steps):
                v = torch.nextafter(v, torch.tensor(direction))
                out.append(v.clone())
        out.append(k)
        out += list(k + torch.linspace(1e-8, 2e-6, 25))
    return torch.stack(out)[:, None]


def call(fn, x, params, inverse):
    n = x.shape[0]
    w, h, d, lam = (None if p is None else p.to(x.dtype).expand(n, *p.shape) for p in params)
    return fn(x, w, h, d, lam, inverse=inverse)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_agrees_with_pyro_away_from_the_knots(order, inverse):
    """Pyro's spline is the reference: ours equals it in float64, and in
    float32 within rounding."""
    for seed in range(5):
        params = random_parameters(seed, order=order)
        x = torch.linspace(-3.3, 3.3, 2001)[:, None]
        x = x[((x - knots(params, inverse)).abs() > 1e-5).all(-1)].reshape(-1, 1)
        reference = call(pyro_spline, x.double(), params, inverse)
        ours64 = call(monotonic_rational_spline, x.double(), params, inverse)
        ours32 = call(monotonic_rational_spline, x, params, inverse)
        for mine, theirs in zip(ours64, reference):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
        # float32: the quadratic spline computes Pyro's expressions; the linear one's are
        # rearranged (see the module), and round differently where a flat bin amplifies rounding
        tolerance = (1e-6, 1e-6) if order == "quadratic" else (5e-4, 1e-2)
        for mine, theirs, tol in zip(ours32, call(pyro_spline, x, params, inverse), tolerance):
            torch.testing.assert_close(mine, theirs, rtol=tol, atol=tol)


def knots64(params, inverse, bound=3.0):
    return knots(tuple(None if p is None else p.double() for p in params), inverse, bound)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_finite_monotone_and_exact_at_the_knots(order, inverse):
    """At and around every knot (and the bounds): finite in float32, and
    close to float64; in float64 monotone, with the log-Jacobian of autograd."""
    for seed in range(20):
        params = random_parameters(seed, order=order)
        x = around_knots(knots(params, inverse))
        y, log_det = call(monotonic_rational_spline, x, params, inverse)
        assert bool(torch.isfinite(y).all() and torch.isfinite(log_det).all()), f"seed {seed}: non-finite"

        x64 = x.double().requires_grad_(True)
        y64, log_det64 = call(monotonic_rational_spline, x64, params, inverse)
        (slope,) = torch.autograd.grad(y64.sum(), x64)
        ascending = x.flatten().argsort()
        assert bool((y64.detach().flatten()[ascending].diff() >= -1e-12).all()), f"seed {seed}: not monotone"
        # the bounds themselves: the spline's slope is 1 - 1e-3 there (Pyro's), the identity's 1 outside
        inside = x64.detach().abs() < 3.0
        torch.testing.assert_close(log_det64[inside], slope.log()[inside], rtol=1e-6, atol=1e-6)

        # float32 outputs: within the float64 ones over [x - r, x + r], r covering the
        # float32 rounding of the knots themselves (its log-Jacobian is not compared:
        # next to a derivative of 1e-3 it moves by 2 nats within r, beyond float32's reach;
        # nor is the linear inverse, whose (wc - wa) y + wa ya - wc yc, Pyro's, cancels digits)
        if inverse and order == "linear":
            continue
        r = float((knots(params, inverse).double() - knots64(params, inverse)).abs().max()) + 5e-7
        seen = torch.stack([call(monotonic_rational_spline, x.double() + shift, params, inverse)[0]
                            for shift in torch.linspace(-r, r, 41)])
        lo, hi = seen.min(0).values, seen.max(0).values
        ok = (y.double() >= lo - 2e-3) & (y.double() <= hi + 2e-3)
        assert bool(ok.all()), f"seed {seed}: float32 output off at x = {x[~ok][:3].tolist()}"


@pytest.mark.parametrize("order", ORDERS)
def test_inverse_undoes_forward_in_float64(order):
    for seed in range(5):
        params = random_parameters(seed, order=order)
        x = torch.cat([around_knots(knots(params, False)), torch.linspace(-3.5, 3.5, 301)[:, None]]).double()
        y, log_det = call(monotonic_rational_spline, x, params, False)
        back, log_det_inv = call(monotonic_rational_spline, y, params, True)
        torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
        inside = x.abs() < 3.0  # at the bounds the log-Jacobian jumps from log(1 - 1e-3) to 0
        torch.testing.assert_close(log_det_inv[inside], -log_det[inside], rtol=1e-7, atol=1e-7)


def test_layer_keeps_pyros_parameters_and_initialization():
    torch.manual_seed(0)
    ours = spline.spline_coupling(4, hidden_dims=[8])
    torch.manual_seed(0)
    theirs = __import__("pyro.distributions.transforms", fromlist=["x"]).spline_coupling(4, hidden_dims=[8])
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_linear_inverse_in_a_flat_bin_is_finite():
    """Parameters a perturbed flow prior's conditioner produced (torch's AVX2
    kernels): Pyro's linear inverse, (wc - wb) y + wb yb - wc yc, cancels to
    exactly 0 at this y and returns -inf. (The float64 map is no reference
    here: weights of 1e-14 move its knots by more than float32's answer
    differs from it.) The forward map undoes it."""
    w = torch.tensor([[3.8467665164354514e-10, 1.2228584811424525e-10, 6.392497642337958e-11, 0.9995627999305725,
                       2.1610609110211954e-05, 1.6111902922943955e-09, 1.6382731895256755e-14, 0.0004155640199314803]])
    h = torch.tensor([[0.00017668148211669177, 3.181952756836637e-10, 0.994716227054596, 1.3130944628066826e-13,
                       3.0021167773952584e-09, 0.005094772670418024, 1.2321333997533657e-05, 1.2160371376523926e-08]])
    d = torch.tensor([[0.0006463893805630505, 0.2203533947467804, 3.1676909923553467, 18.239418029785156,
                       6.925255001988262e-05, 4.4570447244041134e-07, 3.8418705463409424]])
    lam = torch.tensor([[3.2068001587504114e-07, 0.05752170830965042, 0.09426576644182205, 1.876963029445733e-09,
                         0.1418759673833847, 9.00691156857647e-05, 0.9309858679771423, 0.04622349888086319]])
    params = (w, h, d, lam)
    y = torch.tensor([[2.9396657943725586]])
    x, log_det = call(monotonic_rational_spline, y, params, True)
    assert bool(torch.isfinite(x).all() and torch.isfinite(log_det).all())
    back, log_det_back = call(monotonic_rational_spline, x, params, False)
    torch.testing.assert_close(back, y, rtol=0, atol=1e-5)
    torch.testing.assert_close(log_det_back, -log_det, rtol=0, atol=1e-3)


# -- the flow prior: its density where the inverse meets a knot --------------------------


def bisect(fn, target, low=-40.0, high=40.0, steps=200):
    """The x with fn(x) = target for a monotone increasing elementwise ``fn``, in float64."""
    lo = torch.full_like(target, low)
    hi = torch.full_like(target, high)
    for _ in range(steps):
        mid = (lo + hi) / 2
        below = fn(mid) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def test_flow_prior_density_is_finite_and_right_where_the_inverse_meets_a_knot():
    """A one-layer spline-coupling prior with a narrow bin beside a steep one;
    log p(z) at points whose first coordinate lies on, and just above, each
    knot of the lower spline: finite in float32, and in float64 equal to
    log N(eps) - log|det dT/deps| with eps found by bisection on the forward
    map (checked against Pyro's away from the knots above) and the Jacobian
    from autograd."""
    vae = pyrovae.VAE.from_config(
        tiny_model_config(latent_dim=2, prior={"name": "flow", "layer": "spline_coupling", "num_layers": 1, "hidden": [8]}),
        data_shape=(1, 8, 8),
    )
    prior = vae.prior_module
    layer = prior.layers[0]
    g = torch.Generator().manual_seed(230)
    lower = layer.lower_spline
    with torch.no_grad():
        for p in (lower.unnormalized_widths, lower.unnormalized_heights, lower.unnormalized_derivatives,
                  lower.unnormalized_lambdas):
            p.copy_(6.0 * torch.randn(p.shape, generator=g))
    y_knots = knots(tuple(p.detach() for p in lower._params()), inverse=True)
    y1 = around_knots(y_knots[1:-1], steps=3)
    y = torch.cat([y1, torch.full_like(y1, 0.3)], -1)  # the coupling's output
    perm = prior.permutations[0]
    z = y[:, perm]  # Permute(perm) maps y to y[..., perm]
    with torch.no_grad():
        log_p = prior.dist().log_prob(z)
    assert bool(torch.isfinite(log_p).all()), f"{int((~torch.isfinite(log_p)).sum())} non-finite log p(z)"

    # the value, in float64 (float32 cannot resolve a log-Jacobian that moves by nats within 1e-7)
    prior64 = copy.deepcopy(prior).double()
    z64 = z.double()
    with torch.no_grad():
        log_p64 = prior64.dist().log_prob(z64)
    twin = prior64.layers[0]
    y64 = z64[:, perm.argsort()]
    with torch.no_grad():
        x1 = bisect(lambda t: twin.lower_spline(t), y64[:, :1])
        upper = twin.upper_spline.condition(x1)
        x2 = bisect(lambda t: upper(t), y64[:, 1:])
    eps = torch.cat([x1, x2], -1).requires_grad_(True)
    out = twin(eps)
    torch.testing.assert_close(out.detach(), y64, rtol=0, atol=1e-9)
    jac = torch.stack([torch.autograd.grad(out[:, i].sum(), eps, retain_graph=True)[0] for i in range(2)], 1)
    expected = (-0.5 * eps.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1) - torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(log_p64, expected.detach(), rtol=1e-6, atol=1e-6)
