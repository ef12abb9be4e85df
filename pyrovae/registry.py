"""A small, explicit registry of named components, in the spirit of
:func:`torch.distributions.kl.register_kl`.

Every swappable part of pyrovae (priors, likelihoods, encoders, decoders,
guide families, data sets, objectives, optimizers, schedules) lives in one
:class:`Registry`. A component is a callable (usually an ``nn.Module``
class) registered under a name::

    @register_prior("my_prior")
    class MyPrior(Prior):
        def __init__(self, latent_dim, *, temperature=1.0): ...

and built from a spec ``{"name": "my_prior", "temperature": 0.5}``.
The builder passes *context* arguments (``latent_dim``, ``data_shape``, ...)
that the component may accept; the user's keyword arguments must match the
component's signature exactly, so a typo fails when the model is built.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from .errors import ConfigError, PyrovaeError

__all__ = ["Registry", "spec_name", "spec_kwargs", "REGISTRIES", "all_registries"]


def spec_name(spec: Any) -> str:
    """The component name of a spec: ``"mlp"`` or ``{"name": "mlp", ...}``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise ConfigError(
                f"component spec {dict(spec)!r} has no 'name' key; write it as "
                "{name: <component>, <keyword>: <value>, ...}"
            )
        return str(spec["name"])
    raise ConfigError(
        f"a component spec must be a name or a mapping with a 'name' key, got {spec!r}"
    )


def spec_kwargs(spec: Any) -> Dict[str, Any]:
    """The keyword arguments of a spec (everything but ``name``)."""
    if isinstance(spec, Mapping):
        return {k: v for k, v in spec.items() if k != "name"}
    return {}


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def _check_option_type(kind: str, name: str, key: str, value: Any, default: Any) -> None:
    """A spec's value must have the type of the option's default where that
    default is a bool, a number or a string (``None`` and sequences are left
    to the component): a ``"0.5"`` for a float or a ``"yes"`` for a bool
    fails here, not deep inside torch at the first step."""
    if default is inspect.Parameter.empty or default is None:
        return
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        expected = "true or false"
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        expected = "a string"
    else:
        return
    if not ok:
        raise ConfigError(
            f"{kind} {name!r}: option {key!r} must be {expected} (default {default!r}), "
            f"got {value!r} ({type(value).__name__})"
        )


class Registry:
    """Maps names to component factories.

    :param str kind: what the registry holds, used in error messages
        (for example ``"prior"``).
    :param tuple context: the names of the arguments the builder supplies
        itself (for example ``("latent_dim",)``). A spec may not set them.
    """

    def __init__(self, kind: str, context: Tuple[str, ...] = ()):
        self.kind = kind
        self.context = tuple(context)
        self._factories: Dict[str, Callable[..., Any]] = {}

    # -- registration ---------------------------------------------------
    def register(self, name: str, factory: Optional[Callable[..., Any]] = None):
        """Register ``factory`` under ``name``; usable as a decorator.

        This is what ``pyrovae.register_prior``, ``register_likelihood``,
        ``register_encoder``, ``register_decoder``, ``register_guide``,
        ``register_dataset`` and ``register_model`` are, each bound to its
        registry. The factory's keyword arguments become the component's
        options in a config; the registry's context arguments (for a prior
        ``latent_dim``) are passed by pyrovae. Registering a name twice is an
        error, so that a component is defined once. Use
        :meth:`~pyrovae.registry.Registry.unregister`
        first to replace one deliberately.

        Example::

            >>> import torch, pyro.distributions as dist
            >>> import pyrovae
            >>> @pyrovae.register_prior("wide_normal")
            ... class WideNormal(pyrovae.Prior):
            ...     "N(0, width^2 I) over R^latent_dim."
            ...     def __init__(self, latent_dim, width=2.0):
            ...         super().__init__(latent_dim)
            ...         self.register_buffer("scale", torch.full((latent_dim,), width))
            ...     def dist(self):
            ...         return dist.Normal(torch.zeros_like(self.scale), self.scale).to_event(1)
            >>> cfg = {"latent_dim": 3, "prior": {"name": "wide_normal", "width": 3.0}}
            >>> vae = pyrovae.VAE.from_config(cfg, data_shape=(784,))
            >>> vae.prior().stddev
            tensor([3., 3., 3.])
            >>> pyrovae.VAE.from_config({"prior": {"name": "wide_normal", "widht": 3.0}}, data_shape=(784,))
            Traceback (most recent call last):
            ...
            pyrovae.errors.ConfigError: prior 'wide_normal' has no option 'widht'. Did you mean 'width'? Valid options: width
            >>> from pyrovae.components.priors import priors
            >>> priors.unregister("wide_normal")   # leave the registry as it was
        """

        def decorator(fn):
            if not isinstance(name, str) or not name:
                raise ValueError(f"{self.kind} name must be a non-empty string")
            if name in self._factories and self._factories[name] is not fn:
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered "
                    f"({self._factories[name]!r}); unregister it first"
                )
            self._check_signature(name, fn)
            self._factories[name] = fn
            if isinstance(fn, type):
                fn.registered_name = name  # lets error messages use the config name
            return fn

        return decorator(factory) if factory is not None else decorator

    def unregister(self, name: str) -> None:
        """Remove ``name``; a no-op for unknown names."""
        self._factories.pop(name, None)

    def _check_signature(self, name, fn) -> None:
        params = inspect.signature(fn).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            raise TypeError(
                f"{self.kind} {name!r}: factories may not take **kwargs, because a "
                "misspelled config key would then be silently ignored"
            )

    # -- lookup -------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self):
        """The registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name``; a clear error otherwise."""
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{_did_you_mean(name, self._factories)} "
                f"Valid choices: {', '.join(self.names())}"
            ) from None

    def options(self, name: str) -> Dict[str, Any]:
        """The user-settable keyword arguments of ``name`` with their defaults
        (``inspect.Parameter.empty`` for required ones)."""
        sig = inspect.signature(self.get(name))
        return {
            p.name: p.default
            for p in sig.parameters.values()
            if p.name not in self.context
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        }

    def describe(self) -> str:
        """One line per component: ``name(arg=default, ...)`` and its summary."""
        lines = []
        for name in self.names():
            args = ", ".join(
                k if v is inspect.Parameter.empty else f"{k}={v!r}"
                for k, v in self.options(name).items()
            )
            doc = " ".join((inspect.getdoc(self._factories[name]) or "").split("\n\n")[0].split())
            lines.append(f"  {name}({args})" + (f"  - {doc}" if doc else ""))
        return "\n".join(lines)

    # -- building -----------------------------------------------------
    def build(self, spec: Any, **context: Any) -> Any:
        """Build a component from ``spec``, passing the context arguments
        the factory accepts.

        :raises ConfigError: for an unknown name, an unknown keyword, a
            missing required keyword, or an attempt to set a context argument.
        """
        name = spec_name(spec)
        factory = self.get(name)
        kwargs = spec_kwargs(spec)
        options = self.options(name)
        for key in kwargs:
            if key in self.context:
                raise ConfigError(
                    f"{self.kind} {name!r}: {key!r} is set by pyrovae itself and "
                    "cannot be given in the spec"
                )
            if key not in options:
                raise ConfigError(
                    f"{self.kind} {name!r} has no option {key!r}."
                    f"{_did_you_mean(key, options)} Valid options: "
                    f"{', '.join(options) or '(none)'}"
                )
            _check_option_type(self.kind, name, key, kwargs[key], options[key])
        missing = [
            k for k, v in options.items() if v is inspect.Parameter.empty and k not in kwargs
        ]
        if missing:
            raise ConfigError(f"{self.kind} {name!r} needs option(s) {', '.join(missing)}")
        params = inspect.signature(factory).parameters
        ctx = {k: v for k, v in context.items() if k in params}
        try:
            return factory(**ctx, **kwargs)
        except PyrovaeError:
            raise
        except (MemoryError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not isinstance(e, MemoryError) and "allocat" not in str(e):
                # torch's own complaint about a size or value (a negative
                # dimension, an empty stack): the options are wrong
                raise ConfigError(f"{self.kind} {name!r} with options {kwargs}: {first}") from e
            error = ConfigError(
                f"{self.kind} {name!r} with options {kwargs} is too large to build here ({first}); "
                "choose smaller sizes"
            )
            error.too_large = True
            raise error from None
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.kind} {name!r} with options {kwargs}: {e}") from e


#: every registry of pyrovae, once: ``(module, attribute)``, in the order
#: ``pyrovae list`` shows them. A new registry is added here and nowhere else.
REGISTRIES = (
    ("pyrovae.models.base", "models"),
    ("pyrovae.components.priors", "priors"),
    ("pyrovae.components.likelihoods", "likelihoods"),
    ("pyrovae.components.nets", "encoders"),
    ("pyrovae.components.nets", "decoders"),
    ("pyrovae.components.guides", "guides"),
    ("pyrovae.data.sources", "datasets"),
    ("pyrovae.infer.objectives", "objectives"),
    ("pyrovae.training.optim", "optimizers"),
    ("pyrovae.training.optim", "schedules"),
    ("pyrovae.training.optim", "kl_schedules"),
    ("pyrovae.infer.masks", "masks"),
    ("pyrovae.infer.impute", "imputers"),
)


def all_registries() -> Tuple[Registry, ...]:
    """The :class:`Registry` objects that :data:`REGISTRIES` names (imported
    here, not at the top, because those modules import this one).

    Example::

        [r.kind for r in all_registries()]   # ['model', 'prior', 'likelihood', ...]
    """
    import importlib

    return tuple(getattr(importlib.import_module(module), name) for module, name in REGISTRIES)
