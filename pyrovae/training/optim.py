"""Optimizers, learning-rate schedules and KL-weight schedules, chosen by name.

- optimizers: torch optimizers over all the model's parameters at once.
- schedules: ``torch.optim.lr_scheduler`` objects stepped once per epoch.
- kl_schedules: the KL weight (beta) at each step.
"""

from __future__ import annotations

import torch
from pyro.optim.clipped_adam import ClippedAdam

from ..registry import Registry
from ..validators import int_at_least, positive_number

__all__ = ["optimizers", "schedules", "kl_schedules"]

optimizers = Registry("optimizer", context=("params",))
schedules = Registry("lr_schedule", context=("optimizer", "epochs"))


def _check_positive(**values) -> None:
    """Raise ValueError unless every value is a finite number > 0 (NaN fails too)."""
    for key, value in values.items():
        positive_number(value, key)


def _fused_supported(params) -> bool:
    return all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in params)


@optimizers.register("adam")
def adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=None):
    """torch.optim.Adam; ``fused=None`` picks torch's fused kernel where the
    parameters allow it (the same update in one kernel; see the README's Performance section)."""
    params = list(params)
    if fused is not None and not isinstance(fused, bool):
        raise ValueError(f"fused must be true, false or null (choose where supported), got {fused!r}")
    if fused is None:
        fused = _fused_supported(params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)


@optimizers.register("clipped_adam")
def clipped_adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=10.0, lrd=1.0):
    """Pyro's ClippedAdam: Adam with per-parameter gradient clipping and a per-step lr decay ``lrd``."""
    _check_positive(clip_norm=clip_norm, lrd=lrd)
    if not (len(betas) == 2 and all(0 <= b < 1 for b in betas)) or not eps >= 0 or not weight_decay >= 0:
        raise ValueError(f"betas must be two numbers in [0, 1) and eps, weight_decay >= 0, got {betas}, {eps}, {weight_decay}")
    return ClippedAdam(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, clip_norm=clip_norm, lrd=lrd)


@optimizers.register("rmsprop")
def rmsprop(params, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.0):
    """torch.optim.RMSprop (Keras' defaults: rho=0.9, eps=1e-7)."""
    return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps, momentum=momentum)


@optimizers.register("sgd")
def sgd(params, lr=1e-2, momentum=0.0, nesterov=False):
    """torch.optim.SGD."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov)


@schedules.register("constant")
def constant(optimizer):
    """A fixed learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@schedules.register("exponential")
def exponential(optimizer, gamma=0.99):
    """lr * gamma ** epoch."""
    _check_positive(gamma=gamma)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)


@schedules.register("step")
def step(optimizer, step_size=10, gamma=0.5):
    """lr * gamma ** (epoch // step_size)."""
    _check_positive(gamma=gamma)
    step_size = int_at_least(step_size, 1, "step_size")
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


@schedules.register("cosine")
def cosine(optimizer, epochs, min_lr=0.0):
    """Cosine annealing from lr to ``min_lr`` over the run's epochs."""
    if not 0 <= min_lr < float("inf"):
        raise ValueError(f"min_lr must be a finite number >= 0, got {min_lr!r}")
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), eta_min=min_lr)


@schedules.register("burda")
def burda(optimizer, base=3.0):
    """Burda et al. (2015): passes of 3**i epochs at lr * 10**(-i/7), i = 0..7."""
    if not 1 < base < float("inf"):
        raise ValueError(f"base must be a finite number > 1, got {base!r}")

    def factor(epoch):
        # epoch e falls in stage i where sum_{j<=i} base**j > e
        i, total = 0, 1
        while epoch >= total and i < 7:
            i += 1
            total += base**i
        return 10 ** (-i / 7)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# -- KL weight (beta) schedules: step -> weight ---------------------------------

kl_schedules = Registry("kl_schedule", context=("beta", "steps_per_epoch"))


@kl_schedules.register("constant")
def constant_beta(beta):
    """beta at every step."""
    return lambda step: beta


@kl_schedules.register("linear")
def linear_warmup(beta, steps_per_epoch, warmup_epochs=10.0):
    """KL warm-up: beta ramped linearly from 0 over ``warmup_epochs`` epochs, then held."""
    if not 0 <= warmup_epochs < float("inf"):
        raise ValueError(f"warmup_epochs must be a finite number >= 0, got {warmup_epochs!r}")
    steps = warmup_epochs * steps_per_epoch
    return lambda step: beta if step >= steps else beta * step / steps


@kl_schedules.register("cyclical")
def cyclical(beta, steps_per_epoch, cycle_epochs=10.0, ramp_fraction=0.5):
    """Cyclical annealing (Fu et al. 2019): in each cycle of ``cycle_epochs``
    epochs, beta rises linearly from 0 over the first ``ramp_fraction`` of
    the cycle and is held for the rest."""
    if not (0 < cycle_epochs < float("inf") and 0 < ramp_fraction <= 1):
        raise ValueError(f"cycle_epochs must be > 0 and ramp_fraction in (0, 1], got {cycle_epochs!r} and {ramp_fraction!r}")
    period = cycle_epochs * steps_per_epoch

    def weight(step):
        phase = (step % period) / period
        return beta * min(1.0, phase / ramp_fraction)

    return weight


