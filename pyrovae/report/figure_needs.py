"""Which capabilities each figure of :mod:`pyrovae.report.figures` reads,
and which figures do not apply to a model at all (a language model has no
latent code to show), so that ``pyrovae plot`` can refuse up front only
what a model lacks.

Example::

    >>> from pyrovae.report.figure_needs import figure_needs
    >>> figure_needs(["samples"])
    ('sample', 'data_shape')
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ..errors import ConfigError, DataError
from ..infer.seeds import seeded
from ..models.base import model_device, required_fields, unregistered
from ..models.protocol import COMMAND_NEEDS, has_capability

__all__ = ["FIGURE_NEEDS", "LATENT_NEEDS", "figure_needs", "has_latent", "not_applicable"]

#: the capabilities each figure reads (a conditional model's figures also
#: read ``classify`` for data without labels, and ``num_classes``); together
#: they are ``COMMAND_NEEDS["plot"]``
FIGURE_NEEDS: Dict[str, Tuple[str, ...]] = {
    "reconstructions": ("data_shape", "reconstruct"),
    "samples": ("data_shape", "sample"),
    "latent_scatter": ("encode",),
    "manifold": ("data_shape", "prior_draws", "decode_mean"),
    "traversals": ("data_shape", "encode", "prior_draws", "decode_mean"),
    "interpolations": ("data_shape", "encode", "decode_mean"),
    "class_samples": ("data_shape", "prior_draws", "decode_mean"),
    "analogies": ("data_shape", "encode", "decode_mean"),
    "training_curves": (),
}


#: the capabilities of a latent code
LATENT_NEEDS: Tuple[str, ...] = ("latent_dim", "reconstruct", "encode", "decode_mean", "prior_draws")


def has_latent(vae, x: Optional[torch.Tensor] = None) -> bool:
    """Whether ``vae`` has a latent code: one of :data:`LATENT_NEEDS`, or
    for a model with none of them, a latent site in its guide's trace on
    the first two points of data ``x`` ``(N, *data_shape)`` (a language
    model has none). Without ``x``, or where the guide needs fields other
    than ``x``, the answer is yes. The global RNG is left as it was."""
    if x is None or any(has_capability(vae, c) for c in LATENT_NEEDS):
        return True
    if set(required_fields(vae)) - {"x"}:  # a label, or index (a guide over training points only)
        return True
    from ..infer.weights import latent_sites, trace_pair

    device = model_device(vae)
    try:
        with seeded(0, device), torch.no_grad(), unregistered(vae):
            guide = trace_pair(vae, {"x": x[:2].to(device)}).guide
    except (ConfigError, DataError):  # the guide needs a label: the figures say what they lack
        return True
    return bool(latent_sites(guide))


def not_applicable(vae, name: str, x: Optional[torch.Tensor] = None) -> Optional[str]:
    """Why the figure ``name`` does not apply to ``vae`` (one line), or None:
    a figure of a latent code does not apply to a model without one
    (:func:`has_latent` on data ``x``; a model with a latent code but not a
    figure's capabilities lacks them instead: an error up front).

    Example::

        reason = not_applicable(model, "traversals", x)   # a language model: "the model has no latent code ..."
    """
    if set(FIGURE_NEEDS[name]) & set(LATENT_NEEDS) and not has_latent(vae, x):
        return "the model has no latent code (its guide samples no latent site), and this figure shows one"
    return None


def figure_needs(names: Optional[Sequence[str]] = None, vae: Any = None, x: Optional[torch.Tensor] = None) -> Tuple[str, ...]:
    """The capabilities the figures ``names`` (default: all) read, in the
    order of ``COMMAND_NEEDS["plot"]``; with ``vae`` and its data ``x``,
    only those of the figures that apply to it (see :func:`not_applicable`).

    Example::

        >>> figure_needs(["samples", "latent_scatter"])
        ('sample', 'encode', 'data_shape')
    """
    names = [n for n in names or FIGURE_NEEDS if vae is None or not_applicable(vae, n, x) is None]
    wanted = {need for name in names for need in FIGURE_NEEDS[name]}
    return tuple(need for need in COMMAND_NEEDS["plot"] if need in wanted)
