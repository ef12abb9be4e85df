"""pyrovae.validators, against the rules written out here independently:
a whole number is a Python ``int`` or a NumPy integer, never a bool, a float
or a string; and the places in pyrovae that take whole numbers follow them."""

import math
import pathlib
import re

import numpy as np
import pyro
import pytest

import pyrovae
from pyrovae import validators
from pyrovae.components.nets import encoders
from pyrovae.errors import ConfigError, DataError
from pyrovae.infer.impute import MetropolisWithinGibbs
from pyrovae.infer.iwae import IWAE
from pyrovae.infer.loglik import check_num_samples

pyro.enable_validation(True)

#: values of every kind a config or a caller may pass
VALUES = [3, 1, 0, -1, 2, 7, True, False, 1.0, 3.0, 2.5, np.int64(3), np.int32(0), np.uint8(5), np.bool_(True),
          np.float64(3.0), "3", None, [3], math.nan, math.inf]


def whole(v):
    """The rule, by exact type: ``int`` itself (bool is a different type) or a NumPy integer type."""
    return type(v) is int or type(v) in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


#: (validator call, the rule it must follow, words its message must hold)
INT_VALIDATORS = {
    "positive_int": (lambda v: validators.positive_int(v, "num_particles"),
                     lambda v: whole(v) and v >= 1, "must be a positive integer"),
    "non_negative_int": (lambda v: validators.non_negative_int(v, "num_particles"),
                         lambda v: whole(v) and v >= 0, "must be an integer >= 0"),
    "int_at_least_2": (lambda v: validators.int_at_least(v, 2, "num_particles"),
                       lambda v: whole(v) and v >= 2, "must be an integer >= 2"),
    "int_in_range_0_3": (lambda v: validators.int_in_range(v, 0, 3, "num_particles"),
                         lambda v: whole(v) and 0 <= v < 3, "must be an integer in [0, 3)"),
}


@pytest.mark.parametrize("value", VALUES, ids=repr)
@pytest.mark.parametrize("which", sorted(INT_VALIDATORS))
def test_whole_number_validators_follow_the_rule(which, value):
    check, rule, words = INT_VALIDATORS[which]
    if rule(value):
        result = check(value)
        assert type(result) is int and result == int(value)
    else:
        with pytest.raises(ConfigError) as e:
            check(value)
        message = str(e.value)
        assert message.startswith("num_particles " + words) and message.endswith(f"got {value!r}")
        assert "\n" not in message


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_positive_number_follows_the_rule(value):
    number = type(value) in (int, float, np.int64, np.int32, np.uint8, np.float64)
    if number and 0 < float(value) < math.inf:
        assert validators.positive_number(value, "lr") == float(value)
    else:
        with pytest.raises(ConfigError, match=r"^lr must be a positive finite number, got "):
            validators.positive_number(value, "lr")


@pytest.mark.parametrize("values, expected", [
    ([64, 32], (64, 32)), ((8,), (8,)), (8, (8,)), ([], ()), ([np.int64(4)], (4,)), (np.array([3, 2]), (3, 2)),
    ([64, 0], None), ([True], None), (True, None), ([1.0], None), (-1, None), ("64", None), ([[4]], None), (None, None),
], ids=repr)
def test_positive_ints_takes_one_size_or_a_sequence_of_them(values, expected):
    if expected is not None:
        result = validators.positive_ints(values, "hidden sizes")
        assert result == expected and all(type(v) is int for v in result)
    else:
        with pytest.raises(ConfigError, match=r"^hidden sizes must be positive integers, got \["):
            validators.positive_ints(values, "hidden sizes")


def test_the_hint_and_the_error_class_are_the_callers():
    with pytest.raises(DataError) as e:
        validators.positive_int(0, "the number of samples", hint="ask for one or more", error=DataError)
    assert str(e.value) == "the number of samples must be a positive integer, got 0; ask for one or more"


# -- the places that take whole numbers: bool refused, NumPy integers taken ----------------


def _impute_gibbs(steps, burn_in=0):
    return MetropolisWithinGibbs(steps=steps, burn_in=burn_in).steps


def _mlp_parameters(width):
    net = encoders.build({"name": "mlp", "hidden": [width]}, data_shape=(4,), out_features=2)
    return sum(p.numel() for p in net.parameters())


def _samples(n):
    vae = pyrovae.VAE.from_config({"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [4]},
                                   "decoder": {"name": "mlp", "hidden": [4]}}, data_shape=(4,))
    return len(pyrovae.draw_samples(vae, n))


#: (a call that takes a whole number, the words of its refusal, the error class)
SITES = {
    "config model.latent_dim": (lambda v: pyrovae.load_config({"model": {"latent_dim": v}}).model.latent_dim,
                                "model.latent_dim must be", ConfigError),
    "IWAE num_particles": (lambda v: IWAE(num_particles=v).num_particles,
                           "num_particles must be a positive integer", ConfigError),
    "gibbs steps": (_impute_gibbs, "steps must be a positive integer", ConfigError),
    "log-likelihood num_samples": (check_num_samples,
                                   "num_samples must be an integer >= 1", ConfigError),
    "mlp hidden": (_mlp_parameters, "hidden sizes must be positive integers", ConfigError),
    "draw_samples n": (_samples, "the number of samples must be a positive integer", DataError),
}


@pytest.mark.parametrize("site", sorted(SITES))
@pytest.mark.parametrize("value", [True, 0, -1, 1.0, "3"], ids=repr)
def test_pyrovae_refuses_what_is_not_a_whole_number(site, value):
    call, words, error = SITES[site]
    with pytest.raises(error) as e:
        call(value)
    assert words in str(e.value) and repr(value) in str(e.value)


@pytest.mark.parametrize("site", sorted(SITES))
def test_pyrovae_takes_numpy_integers(site):
    call, _, _ = SITES[site]
    assert call(np.int64(3)) == call(3)


def test_no_hand_written_bool_and_int_check_is_left():
    """The checks live in validators.py: no module tests ``isinstance(x, bool)``
    next to ``isinstance(x, int)`` itself."""
    package = pathlib.Path(pyrovae.__file__).parent
    pattern = re.compile(r"isinstance\((\w+), bool\)[^\n]*isinstance\(\1, int\)|isinstance\((\w+), int\)[^\n]*isinstance\(\2, bool\)")
    found = [f"{path.relative_to(package)}:{text.count(chr(10), 0, m.start()) + 1}"
             for path in sorted(package.rglob("*.py")) if path.name != "validators.py"
             for text in [path.read_text()] for m in pattern.finditer(text)]
    assert found == []
