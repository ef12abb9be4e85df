"""Models: registered Pyro model/guide pairs built from components.

:mod:`pyrovae.models.base` holds the registry and the contract a model
keeps; each model family is one module that registers itself.
"""

from .base import build_model, models, register_model
from . import vae  # noqa: F401  (registers "vae")
from . import hvae  # noqa: F401  (registers "hvae")
from . import cvae, m2  # noqa: F401  (register "cvae" and "m2")
from . import text  # noqa: F401  (registers "text_vae" and "char_lm")

__all__ = ["models", "register_model", "build_model"]
