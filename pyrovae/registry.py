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
import os
import site
import sysconfig
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

from .errors import ConfigError, OutOfMemoryError, PyrovaeError, is_out_of_memory
from .validators import is_number

__all__ = ["Registry", "spec_name", "spec_kwargs", "REGISTRIES", "all_registries"]


def spec_name(spec: Any) -> str:
    """The component name of a spec: ``"mlp"`` or ``{"name": "mlp", ...}``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise _named(ConfigError(
                f"component spec {dict(spec)!r} has no 'name' key; write it as "
                "{name: <component>, <keyword>: <value>, ...}"
            ))
        return str(spec["name"])
    raise _named(ConfigError(
        f"a component spec must be a name or a mapping with a 'name' key, got {spec!r}"
    ))


def spec_kwargs(spec: Any) -> Dict[str, Any]:
    """The keyword arguments of a spec (everything but ``name``)."""
    if isinstance(spec, Mapping):
        return {k: v for k, v in spec.items() if k != "name"}
    return {}


def _named(error: ConfigError) -> ConfigError:
    """``error``, marked as naming its component: a registry that builds the
    component around it (a model around its encoder) adds no second prefix."""
    error.component = True
    return error


def _is_builtin(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` is one of pyrovae's own components. These refuse a
    bad option value with a ``ValueError`` or ``TypeError``, as the torch
    optimizers they wrap do, so :meth:`Registry.build` reports it as a
    :class:`~pyrovae.ConfigError` (the original chained as ``__cause__``)
    unless :func:`_through_user_code` says a user's code raised it."""
    return getattr(factory, "__module__", "").partition(".")[0] == __name__.partition(".")[0]


#: folders of the code that is not a user's: pyrovae, the standard library, installed packages
_LIBRARY_DIRS = tuple(
    os.path.join(os.path.realpath(d), "")
    for d in {os.path.dirname(__file__), sysconfig.get_paths()["stdlib"],
              sysconfig.get_paths()["platstdlib"], *site.getsitepackages(), site.getusersitepackages()}
)


def _through_user_code(error: BaseException) -> bool:
    """Whether ``error`` was raised in, or passed through, a user's code: a
    component the user registered (the registry marks its exceptions), or a
    frame of its traceback in a file outside pyrovae, the standard library
    and installed packages (a user's encoder that a built-in model runs)."""
    if getattr(error, "_pyrovae_users", False):
        return True
    tb = error.__traceback__
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if not path.startswith("<frozen") and not os.path.realpath(path).startswith(_LIBRARY_DIRS):
            return True
        tb = tb.tb_next
    return False


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
        ok = is_number(value)
        expected = "a number"
    elif isinstance(default, str):
        ok = isinstance(value, str)
        expected = "a string"
    else:
        return
    if not ok:
        raise _named(ConfigError(
            f"{kind} {name!r}: option {key!r} must be {expected} (default {default!r}), "
            f"got {value!r} ({type(value).__name__})"
        ))


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
        first to replace one deliberately. To refuse an option's value with a
        one-line message, raise :class:`~pyrovae.ConfigError` (the checks of
        ``pyrovae.validators`` do); any other exception the factory raises
        is taken for a bug and reaches the caller with its traceback.

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
            raise _named(ConfigError(
                f"unknown {self.kind} {name!r}.{_did_you_mean(name, self._factories)} "
                f"Valid choices: {', '.join(self.names())}"
            )) from None

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

        The spec's options are checked and bound to the factory's signature
        first (``inspect.Signature.bind``); then the factory runs, and an
        exception raised inside it reaches the caller unchanged, with its
        traceback: a bug in a user's component is not a config error. Three
        kinds are told apart: a :class:`~pyrovae.ConfigError` that the factory raises
        about its own options gains the component's name and options as a
        prefix (a user's component raises ``pyrovae.ConfigError`` to refuse
        a value in one line); a ``ValueError`` or ``TypeError`` of one of
        pyrovae's own components is such a refusal too; and running out of
        memory becomes ``pyrovae.errors.OutOfMemoryError``, which says
        what to reduce.

        :raises ConfigError: for an unknown name, an unknown keyword, a
            missing required keyword, an attempt to set a context argument,
            or a value the factory itself refuses with a ``ConfigError``
            (and ``OutOfMemoryError``, a sibling, when building runs out of memory).

        Example::

            >>> from pyrovae.components.priors import priors
            >>> priors.build({"name": "mog", "num_components": 3}, latent_dim=2).locs.shape
            torch.Size([3, 2])
            >>> priors.build({"name": "mog", "num_components": 0}, latent_dim=2)
            Traceback (most recent call last):
            ...
            pyrovae.errors.ConfigError: prior 'mog' with options {'num_components': 0}: num_components must be an integer >= 1, got 0
        """
        name = spec_name(spec)
        factory = self.get(name)
        kwargs = spec_kwargs(spec)
        options = self.options(name)
        for key in kwargs:
            if key in self.context:
                raise _named(ConfigError(
                    f"{self.kind} {name!r}: {key!r} is set by pyrovae itself and "
                    "cannot be given in the spec"
                ))
            if key not in options:
                raise _named(ConfigError(
                    f"{self.kind} {name!r} has no option {key!r}."
                    f"{_did_you_mean(key, options)} Valid options: "
                    f"{', '.join(options) or '(none)'}"
                ))
            _check_option_type(self.kind, name, key, kwargs[key], options[key])
        missing = [
            k for k, v in options.items() if v is inspect.Parameter.empty and k not in kwargs
        ]
        if missing:
            raise _named(ConfigError(f"{self.kind} {name!r} needs option(s) {', '.join(missing)}"))
        signature = inspect.signature(factory)
        ctx = {k: v for k, v in context.items() if k in signature.parameters}
        try:
            bound = signature.bind(**ctx, **kwargs)
        except TypeError as e:  # a context argument this builder does not supply
            raise _named(ConfigError(
                f"{self.kind} {name!r} cannot be built here: {e}; pyrovae supplies "
                f"{', '.join(context) or 'no arguments'} to a {self.kind}"
            )) from None
        given = f" with options {kwargs}" if kwargs else ""
        try:
            return factory(*bound.args, **bound.kwargs)
        except ConfigError as e:
            # the factory refused one of its options: say which component
            if getattr(e, "component", None) is None:
                e.component = (self.kind, name)
                if not str(e).startswith(f"{self.kind} {name!r}"):
                    e.args = (f"{self.kind} {name!r}{given}: {e}",) + e.args[1:]
            raise
        except PyrovaeError:
            raise  # a DataError or another error that says already what to fix
        except (TypeError, ValueError) as e:
            if not _is_builtin(factory) or _through_user_code(e):
                e._pyrovae_users = True  # a built-in around this component lets it through too
                raise  # a user's component: their exception, with their traceback
            raise _named(ConfigError(f"{self.kind} {name!r}{given}: {e}")) from e
        except (MemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            raise OutOfMemoryError(f"{self.kind} {name!r}{given}", e) from e


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
