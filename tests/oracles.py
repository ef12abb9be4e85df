"""Answers computed without pyrovae's own arithmetic: quadrature grids,
exhaustive sums over discrete supports, and the variants of each registered
component that the density tests sweep.

Quadrature uses the trapezoid rule after the substitution
``z = c + s * sinh(u)``, which is spectrally accurate for smooth densities
and reaches far into heavy tails (``sinh(8) ~ 1490`` scales) with a few
hundred nodes per dimension.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch.distributions import constraints


def sinh_nodes(center: float, scale: float, half_width: float = 8.0, step: float = 0.025):
    """1-D nodes and weights ``(n,)`` (float64) of the trapezoid rule in u."""
    u = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    return center + scale * torch.sinh(u), scale * torch.cosh(u) * step


def product_grid(axes):
    """Tensor product of 1-D ``(nodes, weights)`` pairs: nodes ``(M, d)``, weights ``(M,)``."""
    nodes = torch.cartesian_prod(*[a[0] for a in axes]).reshape(-1, len(axes))
    weights = torch.cartesian_prod(*[a[1] for a in axes]).reshape(-1, len(axes)).prod(-1)
    return nodes, weights


def grid_for_samples(samples: torch.Tensor, **kw):
    """A sinh product grid centred on the samples' median, with its fine
    central region as wide as half their smallest interquartile spread."""
    s = samples.double()
    q = torch.quantile(s, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)
    scale = float(((q[2] - q[0]) / 1.35).min().clamp(min=1e-3)) * 0.5
    return product_grid([sinh_nodes(float(c), scale, **kw) for c in q[1]])


@torch.no_grad()
def expectation(log_density, nodes, weights, fns=(), chunk: int = 200_000):
    """Quadrature of ``exp(log_density(z))`` times each of ``1, *fns``; returns a
    float64 tensor ``(1 + len(fns),)``: the total mass, then the unnormalized
    integrals of the test functions."""
    out = torch.zeros(1 + len(fns), dtype=torch.float64)
    for start in range(0, nodes.shape[0], chunk):
        z = nodes[start : start + chunk]
        w = weights[start : start + chunk]
        p = log_density(z.float()).double().exp() * w
        out[0] += p.sum()
        for i, f in enumerate(fns):
            out[1 + i] += (p * f(z)).sum()
    return out


def apply_transforms(transforms, eps):
    z = eps
    for t in transforms:
        z = t(z)
    return z


def log_abs_det_jacobian(fn, eps):
    """log|det d fn(eps)/d eps| for each row of ``eps`` ``(M, d)``, from
    autograd (d backward passes; ``fn`` must act on each row independently)."""
    eps = eps.detach().requires_grad_(True)
    with torch.enable_grad():
        z = fn(eps)
        rows = [torch.autograd.grad(z[:, i].sum(), eps, retain_graph=i + 1 < z.shape[1])[0] for i in range(z.shape[1])]
    return torch.linalg.slogdet(torch.stack(rows, 1)).logabsdet, z.detach()


def transformed_expectation(d, fns=(), num_samples: int = 4000, chunk: int = 50_000):
    """:func:`expectation` for a ``TransformedDistribution`` ``d`` with base
    ``b`` and map ``z = T(eps)``, after the substitution z = T(eps):
    int f(z) p(z) dz = int f(T(eps)) p(T(eps)) |det dT/deps| d eps, with
    p(T(eps)) from ``d.log_prob`` of a copy of z (no cached inverse) and the
    Jacobian from autograd. If ``d.log_prob`` is right the integrand is the
    smooth base density, which a grid in eps integrates accurately even when
    p(z) has narrow modes (spline flows)."""
    with torch.no_grad():
        samples = d.base_dist.sample((num_samples,))
    # the bases here are Gaussian: +-10 standard deviations hold all their mass
    nodes, weights = grid_for_samples(samples, half_width=4.0, step=0.02)
    out = torch.zeros(1 + len(fns), dtype=torch.float64)
    for start in range(0, nodes.shape[0], chunk):
        eps = nodes[start : start + chunk].to(samples.dtype)
        log_det, z = log_abs_det_jacobian(lambda e: apply_transforms(d.transforms, e), eps)
        with torch.no_grad():
            log_p = d.log_prob(z.clone())
        p = (log_p + log_det).double().exp() * weights[start : start + chunk]
        out[0] += p.sum()
        for i, f in enumerate(fns):
            out[1 + i] += (p * f(z.double())).sum()
    return out


def density_expectation(d, fns=(), num_samples: int = 4000):
    """Total mass and unnormalized integrals of ``fns`` under ``d``'s density,
    by quadrature: directly in z, or through the substitution z = T(eps) for
    a transformed distribution (see :func:`transformed_expectation`)."""
    if isinstance(d, torch.distributions.TransformedDistribution):
        return transformed_expectation(d, fns, num_samples)
    with torch.no_grad():
        samples = d.sample((num_samples,))
    nodes, weights = grid_for_samples(samples)
    return expectation(d.log_prob, nodes, weights, fns)


def gauss_legendre(low: float, high: float, n: int = 64):
    """Gauss-Legendre nodes and weights on ``[low, high]`` (float64)."""
    x, w = np.polynomial.legendre.leggauss(n)
    x = torch.as_tensor(x, dtype=torch.float64)
    w = torch.as_tensor(w, dtype=torch.float64)
    half = (high - low) / 2
    return low + half * (x + 1), half * w


def support_points(support, num_elements: int):
    """Every point of a finite discrete support on ``num_elements`` elements,
    ``(M, num_elements)``; ``None`` for a continuous support."""
    if support is constraints.boolean:
        values = [0.0, 1.0]
    elif isinstance(support, constraints.integer_interval):
        values = [float(v) for v in range(support.lower_bound, support.upper_bound + 1)]
    else:
        return None
    return torch.tensor(list(itertools.product(values, repeat=num_elements)))


def smooth_test_functions(samples: torch.Tensor):
    """Bounded smooth functions of z (sigmoids of 1-D projections around the
    samples' quartiles), so that sample means have finite variance even under
    heavy tails; each maps ``(M, d)`` float64 to ``(M,)``."""
    d = samples.shape[-1]
    directions = [torch.eye(d, dtype=torch.float64)[i] for i in range(d)]
    directions.append(torch.ones(d, dtype=torch.float64) / math.sqrt(d))
    fns = []
    for w in directions:
        proj = samples.double() @ w
        q = torch.quantile(proj, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        width = float((q[2] - q[0]).clamp(min=1e-3)) / 2
        for t in q:
            fns.append(lambda z, w=w, t=float(t), h=width: torch.sigmoid((z @ w - t) / h))
    return fns


#: option sets of each component that the density tests sweep, beyond its defaults
VARIANTS = {
    ("prior", "flow"): [{"layer": layer, "hidden": [8]} for layer in ("spline_coupling", "affine_coupling", "maf")],
    ("prior", "vamp"): [{"num_components": 5}, {"num_components": 5, "bounds": [0, 1]}],
    ("prior", "mog"): [{"num_components": 3}],
    ("likelihood", "normal"): [{"scale_mode": m, "scale": 0.7} for m in ("fixed", "shared", "per_dim", "decoder")],
    ("likelihood", "laplace"): [{"scale_mode": m, "scale": 0.7} for m in ("fixed", "shared", "per_dim", "decoder")],
    ("likelihood", "categorical"): [{"levels": 256}, {"levels": 5}],
    ("guide", "iaf"): [{"num_flows": 2, "context_dim": 4, "hidden": [8]}],
}


def variants(kind: str, registry):
    """``(name, options)`` for every registered component of ``kind``, with
    the option sets of :data:`VARIANTS` (defaults for anything unlisted)."""
    out = []
    for name in registry.names():
        for options in VARIANTS.get((kind, name), [{}]):
            out.append((name, options))
    return out


def variant_id(pair):
    name, options = pair
    return name + "".join(f"-{k}={v}" for k, v in options.items() if k not in ("hidden", "num_components", "context_dim", "num_flows"))


@torch.no_grad()
def perturb_parameters(module: torch.nn.Module, std: float = 0.3, seed: int = 0):
    """Move every parameter away from its initialization, so a learned density
    is tested away from the special case it starts in (identity flows, unit
    scales, equal mixture weights)."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))

