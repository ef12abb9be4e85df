"""Checks of the whole numbers and numbers that configs and functions take.

Each check returns the value (a whole number as a Python ``int``) or raises
one clear error, a :class:`~pyrovae.ConfigError` unless ``error``
names another class, whose message says the name, the value and the range
expected, then the ``hint`` if one is given::

    num_samples must be an integer >= 1, got 0; use at least one importance sample

The rules, the same everywhere:

- a whole number is an ``int`` or a NumPy integer (``np.int64(3)``, as an
  array's element is); ``True`` is not one, although Python calls ``bool``
  a subclass of ``int``, because ``hidden: true`` in a YAML file is a typo,
  not a width of 1; nor is ``1.0`` or ``"3"``, which a config would then
  carry on as a float or a string;
- a number is an ``int``, a ``float`` or a NumPy number, again not a bool.

Example::

    >>> from pyrovae import validators
    >>> validators.positive_int(3, "num_particles")
    3
    >>> validators.int_at_least(True, 0, "train.epochs")
    Traceback (most recent call last):
    ...
    pyrovae.errors.ConfigError: train.epochs must be an integer >= 0, got True
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple, Type

import numpy as np

from .errors import ConfigError

__all__ = [
    "is_int",
    "is_number",
    "int_at_least",
    "positive_int",
    "non_negative_int",
    "int_in_range",
    "positive_ints",
    "positive_number",
]


def is_int(value: Any) -> bool:
    """Whether ``value`` is a whole number: an ``int`` or a NumPy integer, not a bool.

    Example::

        >>> import numpy as np
        >>> [is_int(v) for v in (3, np.int64(3), True, 3.0, "3")]
        [True, True, False, False, False]
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (``int``, ``float``, a NumPy number), not a bool.

    Example::

        >>> [is_number(v) for v in (2, 0.5, float("nan"), False, "0.5")]
        [True, True, True, False, False]
    """
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _fail(name: str, expected: str, value: Any, hint: Optional[str], error: Type[Exception]):
    raise error(f"{name} must be {expected}, got {value!r}" + (f"; {hint}" if hint else ""))


def int_at_least(value: Any, minimum: int, name: str, *, hint: Optional[str] = None,
                 error: Type[Exception] = ConfigError) -> int:
    """``value`` as an ``int`` if it is a whole number >= ``minimum``; else
    ``error`` saying ``name must be an integer >= minimum, got value``.

    Example::

        >>> int_at_least(2, 2, "model.options.num_classes")
        2
        >>> int_at_least(1, 2, "model.options.num_classes")
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: model.options.num_classes must be an integer >= 2, got 1
    """
    if not is_int(value) or value < minimum:
        _fail(name, f"an integer >= {minimum}", value, hint, error)
    return int(value)


def positive_int(value: Any, name: str, *, hint: Optional[str] = None, error: Type[Exception] = ConfigError) -> int:
    """``value`` as an ``int`` if it is a whole number >= 1; else ``error``
    saying ``name must be a positive integer, got value``.

    Example::

        >>> positive_int(0, "num_particles", hint="draw at least one sample per point")
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: num_particles must be a positive integer, got 0; draw at least one sample per point
    """
    if not is_int(value) or value < 1:
        _fail(name, "a positive integer", value, hint, error)
    return int(value)


def non_negative_int(value: Any, name: str, *, hint: Optional[str] = None,
                     error: Type[Exception] = ConfigError) -> int:
    """``value`` as an ``int`` if it is a whole number >= 0 (see :func:`int_at_least`).

    Example::

        >>> non_negative_int(0, "train.epochs")
        0
    """
    return int_at_least(value, 0, name, hint=hint, error=error)


def int_in_range(value: Any, low: int, high: int, name: str, *, hint: Optional[str] = None,
                 error: Type[Exception] = ConfigError) -> int:
    """``value`` as an ``int`` if it is a whole number with ``low <= value < high``;
    else ``error`` saying ``name must be an integer in [low, high), got value``.

    Example::

        >>> int_in_range(20, 0, 100, "burn_in", hint="it must be below steps=100")
        20
        >>> int_in_range(100, 0, 100, "burn_in", hint="it must be below steps=100")
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: burn_in must be an integer in [0, 100), got 100; it must be below steps=100
    """
    if not is_int(value) or not low <= value < high:
        _fail(name, f"an integer in [{low}, {high})", value, hint, error)
    return int(value)


def positive_ints(values: Any, name: str, *, hint: Optional[str] = None,
                  error: Type[Exception] = ConfigError) -> Tuple[int, ...]:
    """Layer sizes: one whole number >= 1, or a sequence of them (empty is
    allowed: no hidden layer), as a tuple of ``int``; else ``error`` saying
    ``name must be positive integers, got [values]``.

    Example::

        >>> positive_ints([64, 32], "hidden sizes"), positive_ints(8, "hidden sizes")
        ((64, 32), (8,))
        >>> positive_ints([64, 0], "hidden sizes")
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: hidden sizes must be positive integers, got [64, 0]
    """
    one = is_int(values) or isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray))
    items = [values] if one else list(values)
    if not all(is_int(v) and v >= 1 for v in items):
        _fail(name, "positive integers", items, hint, error)
    return tuple(int(v) for v in items)


def positive_number(value: Any, name: str, *, hint: Optional[str] = None,
                    error: Type[Exception] = ConfigError) -> float:
    """``value`` as a ``float`` if it is a finite number > 0 (NaN and inf fail);
    else ``error`` saying ``name must be a positive finite number, got value``.

    Example::

        >>> positive_number(1e-3, "lr")
        0.001
        >>> positive_number(float("nan"), "lr")
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: lr must be a positive finite number, got nan
    """
    if not is_number(value) or not 0 < value < math.inf:
        _fail(name, "a positive finite number", value, hint, error)
    return float(value)
