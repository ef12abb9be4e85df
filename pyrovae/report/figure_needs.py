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


#: the capabilities of a latent code; a model with none of them (a language model) has no code to show
LATENT_NEEDS: Tuple[str, ...] = ("latent_dim", "reconstruct", "encode", "decode_mean", "prior_draws")


def has_latent(vae) -> bool:
    """Whether ``vae`` has any of :data:`LATENT_NEEDS`."""
    return any(has_capability(vae, c) for c in LATENT_NEEDS)


def not_applicable(vae, name: str) -> Optional[str]:
    """Why the figure ``name`` does not apply to ``vae`` (one line), or None:
    a figure of a latent code does not apply to a model with none of
    :data:`LATENT_NEEDS` (one with some lacks a capability: an error up front).

    Example::

        reason = not_applicable(model, "traversals")   # a language model: "the model has no latent code ..."
    """
    if set(FIGURE_NEEDS[name]) & set(LATENT_NEEDS) and not has_latent(vae):
        return f"the model has no latent code (none of {', '.join(LATENT_NEEDS)}), and this figure shows one"
    return None


def figure_needs(names: Optional[Sequence[str]] = None, vae: Any = None) -> Tuple[str, ...]:
    """The capabilities the figures ``names`` (default: all) read, in the
    order of ``COMMAND_NEEDS["plot"]``; with ``vae``, only those of the
    figures that apply to it (see :func:`not_applicable`).

    Example::

        >>> figure_needs(["samples", "latent_scatter"])
        ('sample', 'encode', 'data_shape')
    """
    names = [n for n in names or FIGURE_NEEDS if vae is None or not_applicable(vae, n) is None]
    wanted = {need for name in names for need in FIGURE_NEEDS[name]}
    return tuple(need for need in COMMAND_NEEDS["plot"] if need in wanted)
