"""Where a model's plates sit, read from its trace.

A model may nest plates inside its data plate: pixels observed in their own
plate, a plate over time steps. Particles (of IWAE, of importance
sampling, of a vectorized ELBO) must then go to the left of every plate the
model uses, and per-point quantities must keep the data plate's dim and sum
the inner plates' dims. This module answers both questions from one trace:

- :func:`plate_nesting`: how many plate dims the model and guide use,
  found as Pyro's ``ELBO._guess_max_plate_nesting`` finds it (trace the
  guide, replay the model, take the leftmost dim of a vectorized plate), but
  on a forked random generator, so that the guess leaves the caller's noise
  as it was (a seeded estimate, or a resumed training run, draws the same);
- :func:`data_frame`: the data plate of a trace (the plate named ``"data"``,
  or the model's only plate).

Example::

    nesting = plate_nesting(vae.model, vae.guide, (x,), {})    # x: (B, *data_shape)
    with pyro.plate("particles", K, dim=-(nesting + 1)):
        ...                                                     # particles left of every plate
"""

from __future__ import annotations

import weakref
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

import pyro.poutine as poutine
from pyro.poutine.util import prune_subsample_sites

from ..errors import ConfigError

__all__ = ["plate_nesting", "model_nesting", "data_frame", "NestingFromTrace", "DATA_PLATE"]

#: the name of the plate over data points (pyrovae's models and the README's contract)
DATA_PLATE = "data"


def _devices(args: Sequence[Any], kwargs: Mapping[str, Any]):
    """The CUDA devices of the tensors among ``args`` and ``kwargs`` (whose generators a fork must save)."""
    return sorted({v.device.index or 0 for v in (*args, *kwargs.values())
                   if torch.is_tensor(v) and v.device.type == "cuda"})


def plate_nesting(model, guide, args: Sequence[Any] = (), kwargs: Optional[Mapping[str, Any]] = None,
                  model_args: Optional[Sequence[Any]] = None, model_kwargs: Optional[Mapping[str, Any]] = None) -> int:
    """The number of plate dims that ``model`` and ``guide`` use: minus the
    leftmost ``dim`` of a vectorized plate among their sample sites (0
    without plates). ``guide(*args, **kwargs)`` is traced and
    ``model(*model_args, **model_kwargs)`` (default: the guide's arguments)
    replayed on it, as in Pyro's ``_guess_max_plate_nesting``, which assumes
    a static plate structure. Runs without autograd, hidden from enclosing
    handlers, on a forked random generator, under the caller's Pyro validation.

    Example::

        plate_nesting(vae.model, vae.guide, (x,))   # 1: pyrovae's models use the data plate alone
    """
    kwargs = dict(kwargs or {})
    model_args = tuple(args) if model_args is None else tuple(model_args)
    model_kwargs = kwargs if model_kwargs is None else dict(model_kwargs)
    devices = _devices((*args, *model_args), {**kwargs, **model_kwargs})
    with torch.random.fork_rng(devices=devices), torch.no_grad(), poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*model_args, **model_kwargs)
    dims = [
        frame.dim
        for trace in (prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace))
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return -min(dims) if dims else 0


#: per model object, the nesting found for each set of field names
_NESTINGS: "weakref.WeakKeyDictionary[Any, Dict[Tuple, int]]" = weakref.WeakKeyDictionary()


def model_nesting(vae, x: torch.Tensor, fields: Mapping[str, Any], model_x: torch.Tensor,
                  model_fields: Mapping[str, Any]) -> int:
    """:func:`plate_nesting` of ``vae.model`` and ``vae.guide``, found once
    per model object and set of field names (``guide(x, **fields)``,
    ``model(model_x, **model_fields)``) and remembered: the inner loops of
    importance sampling and validation pay for one trace, not one per chunk."""
    key = (tuple(sorted(fields)), tuple(sorted(model_fields)))
    try:
        known = _NESTINGS.setdefault(vae, {})
    except TypeError:  # an object without weak references: found each time
        known = {}
    if key not in known:
        from ..models.base import pyro_callables

        model_fn, guide_fn = pyro_callables(vae)
        known[key] = plate_nesting(model_fn, guide_fn, (x,), fields, (model_x,), model_fields)
    return known[key]


def data_frame(trace, trace_name: str = "model"):
    """The ``CondIndepStackFrame`` of the data plate among the sample sites of
    ``trace``: the plate named ``"data"``, else the only vectorized plate the
    trace uses; None when it uses none. Several plates, none named ``"data"``:
    a :class:`~pyrovae.errors.ConfigError`, since which one holds the data
    points cannot be told."""
    frames = {}
    for site in trace.nodes.values():
        if site["type"] == "sample":
            for frame in site["cond_indep_stack"]:
                if frame.vectorized:
                    if frame.name == DATA_PLATE:
                        return frame
                    frames[frame.name] = frame
    if len(frames) > 1:
        raise ConfigError(
            f"the {trace_name} uses the plates {', '.join(sorted(frames))} and none is named {DATA_PLATE!r}; "
            f"per-point weights need to know which holds the data points: name it pyro.plate({DATA_PLATE!r}, ...)"
        )
    return next(iter(frames.values()), None)


class NestingFromTrace:
    """A mixin for a Pyro ELBO built with ``max_plate_nesting=inf``: at its
    first vectorized call Pyro asks ``_guess_max_plate_nesting``, answered
    here by :func:`plate_nesting`, which leaves the random generator as it
    was (Pyro's own guess draws from the guide), so a resumed run, whose
    objective is new, draws the same noise as the run it continues.

    Example::

        class LearningTraceELBO(NestingFromTrace, Trace_ELBO):
            pass

        elbo = LearningTraceELBO(num_particles=8, vectorize_particles=True)   # particles left of every plate
    """

    def _guess_max_plate_nesting(self, model, guide, args, kwargs):
        particles = 1 if self.vectorize_particles and self.num_particles > 1 else 0
        self.max_plate_nesting = plate_nesting(model, guide, args, kwargs) + particles
