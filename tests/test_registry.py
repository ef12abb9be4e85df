import pytest
import torch

import pyrovae
from pyrovae.errors import ConfigError
from pyrovae.components.priors import Prior, priors
from pyrovae.registry import Registry

from helpers import build, tiny_config


def test_unknown_name_lists_choices():
    with pytest.raises(ConfigError) as e:
        build(prior={"name": "vampp"})
    msg = str(e.value)
    assert "unknown prior 'vampp'" in msg and "Did you mean 'vamp'" in msg
    for name in priors.names():
        assert name in msg


def test_misspelled_option_names_component_and_options():
    with pytest.raises(ConfigError) as e:
        build(prior={"name": "mog", "num_component": 3})
    msg = str(e.value)
    assert "prior 'mog' has no option 'num_component'" in msg
    assert "num_components" in msg


def test_context_arguments_cannot_be_set():
    with pytest.raises(ConfigError, match="set by pyrovae itself"):
        build(prior={"name": "standard_normal", "latent_dim": 7})


def test_bad_option_value_is_config_error():
    with pytest.raises(ConfigError, match="num_components"):
        build(prior={"name": "mog", "num_components": 0})


def test_factories_with_var_kwargs_are_refused():
    reg = Registry("thing")
    with pytest.raises(TypeError, match="kwargs"):
        reg.register("bad")(lambda **kwargs: None)


def test_duplicate_name_is_refused():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)


def test_external_prior_is_usable_by_name_and_trains():
    import pyro.distributions as dist

    @pyrovae.register_prior("test_wide_normal")
    class WideNormal(Prior):
        """N(0, width^2 I)."""

        def __init__(self, latent_dim, width=2.0):
            super().__init__(latent_dim)
            self.register_buffer("loc", torch.zeros(latent_dim))
            self.register_buffer("scale", torch.full((latent_dim,), width))

        def dist(self):
            return dist.Normal(self.loc, self.scale).to_event(1)

    try:
        cfg = tiny_config(model={**tiny_config()["model"], "prior": {"name": "test_wide_normal", "width": 3.0}})
        splits = pyrovae.load_data(pyrovae.load_config(cfg).data)
        vae = pyrovae.VAE.from_config(cfg, data_shape=splits.data_shape)
        assert isinstance(vae.prior_module, WideNormal)
        assert torch.allclose(vae.prior().base_dist.scale, torch.full((3,), 3.0))
        history = pyrovae.train(vae, splits, cfg)
        assert history[-1]["train_loss"] < history[0]["train_loss"]
        assert "test_wide_normal" in priors.describe()
    finally:
        priors.unregister("test_wide_normal")


# -- a user's component keeps its exceptions and their tracebacks ---------------------------

import traceback

import numpy as np
import pyro

from pyrovae.errors import OutOfMemoryError
from pyrovae.registry import all_registries

pyro.enable_validation(True)

#: placeholder context values: a component that ignores them is built with any
CONTEXT = {"latent_dim": 3, "data_shape": (4,), "posterior": None, "out_features": 2, "out_shape": (4,),
           "config": None, "root": None, "path": None, "download": False, "split_seed": 0,
           "optimizer": None, "epochs": 1}


def _context(registry):
    return {k: CONTEXT.get(k) for k in registry.context}


@pytest.fixture
def registered():
    """``register(registry, name, factory)``; unregisters everything at the end."""
    added = []

    def register(registry, name, factory):
        registry.register(name)(factory)
        added.append((registry, name))

    yield register
    for registry, name in added:
        registry.unregister(name)


def _frames(error):
    return [frame.name for frame in traceback.extract_tb(error.__traceback__)]


def users_buggy_component(width=1.0):
    """A user's component with a bug inside: not a config error."""
    return width / 0


@pytest.mark.parametrize("registry", all_registries(), ids=lambda r: r.kind)
def test_a_bug_inside_a_users_component_keeps_its_exception_and_traceback(registry, registered):
    registered(registry, "test_buggy", users_buggy_component)
    with pytest.raises(ZeroDivisionError) as e:
        registry.build({"name": "test_buggy", "width": 2.0}, **_context(registry))
    assert type(e.value) is ZeroDivisionError
    assert _frames(e.value)[-1] == "users_buggy_component"  # raised there, not re-raised by pyrovae
    assert e.value.__cause__ is None and not isinstance(e.value, pyrovae.PyrovaeError)


@pytest.mark.parametrize("error", [TypeError("bad operand"), ValueError("math domain"), RuntimeError("shape mismatch"),
                                   KeyError("k")], ids=lambda e: type(e).__name__)
def test_the_kinds_pyrovae_used_to_call_config_errors_pass_too(error, registered):
    def user_prior(latent_dim):
        raise error

    registered(priors, "test_raising", user_prior)
    with pytest.raises(type(error)) as e:
        build(prior={"name": "test_raising"})
    assert e.value is error and "user_prior" in _frames(e.value)


def test_a_bug_in_a_users_prior_reaches_the_caller_of_from_config(registered):
    class BuggyPrior(Prior):
        def __init__(self, latent_dim, width=2.0):
            super().__init__(latent_dim)
            self.scale = torch.ones(latent_dim + 1) * width
            self.scale = self.scale.view(latent_dim, 2)  # the bug: 4 values do not make 3 rows of 2

        def dist(self):
            raise AssertionError("never reached")

    registered(priors, "test_buggy_prior", BuggyPrior)
    with pytest.raises(RuntimeError, match="shape") as e:
        pyrovae.VAE.from_config({"latent_dim": 3, "prior": {"name": "test_buggy_prior"}}, data_shape=(4,))
    assert type(e.value) is RuntimeError and _frames(e.value)[-1] == "__init__"
    assert any(f.filename == __file__ and f.name == "__init__" for f in traceback.extract_tb(e.value.__traceback__))


@pytest.mark.parametrize("registry", all_registries(), ids=lambda r: r.kind)
def test_a_misspelled_option_is_still_one_clear_line(registry, registered):
    registered(registry, "test_with_width", users_buggy_component)
    with pytest.raises(ConfigError) as e:
        registry.build({"name": "test_with_width", "widht": 2.0}, **_context(registry))
    assert str(e.value) == (f"{registry.kind} 'test_with_width' has no option 'widht'. "
                            "Did you mean 'width'? Valid options: width")


def test_a_missing_option_and_a_context_argument_not_supplied_are_config_errors(registered):
    def needs_depth(latent_dim, depth):
        return depth

    def needs_a_posterior(latent_dim, posterior, width=1.0):
        return posterior

    registered(priors, "test_needs_depth", needs_depth)
    registered(priors, "test_needs_posterior", needs_a_posterior)
    with pytest.raises(ConfigError, match=r"^prior 'test_needs_depth' needs option\(s\) depth$"):
        priors.build({"name": "test_needs_depth"}, latent_dim=2)
    with pytest.raises(ConfigError, match="prior 'test_needs_posterior' cannot be built here: .*posterior"):
        priors.build({"name": "test_needs_posterior"}, latent_dim=2)  # no posterior in this context


def test_a_users_config_error_names_the_component(registered):
    def picky(latent_dim, width=1.0):
        if width > 10:
            raise ConfigError(f"width must be at most 10, got {width}")
        return width

    registered(priors, "test_picky", picky)
    with pytest.raises(ConfigError) as e:
        priors.build({"name": "test_picky", "width": 11.0}, latent_dim=2)
    assert str(e.value) == "prior 'test_picky' with options {'width': 11.0}: width must be at most 10, got 11.0"


def test_a_value_torch_refuses_in_a_builtin_is_a_config_error_with_torchs_cause():
    from pyrovae.training.optim import optimizers

    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="optimizer 'adam' with options .*'betas'.*beta") as e:
        optimizers.build({"name": "adam", "betas": [2.0, 0.5]}, params=params)
    assert type(e.value.__cause__) is ValueError  # torch's own message, kept as the cause


# -- out of memory ---------------------------------------------------------------------------


@pytest.mark.parametrize("raised", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                                    MemoryError(),
                                    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: "
                                                 "can't allocate memory: you tried to allocate 4000000 bytes")],
                         ids=["cuda", "python", "cpu"])
def test_running_out_of_memory_says_what_to_reduce(raised, registered):
    def huge(latent_dim, width=10**9):
        raise raised

    registered(priors, "test_huge", huge)
    with pytest.raises(OutOfMemoryError) as e:
        priors.build({"name": "test_huge"}, latent_dim=2)
    message = str(e.value)
    assert message.startswith("prior 'test_huge' is too large to build here")
    for words in ("model.latent_dim", "hidden sizes", "train.batch_size", "evaluation batch size"):
        assert words in message
    assert e.value.__cause__ is raised and "\n" not in message


def test_an_allocation_beyond_memory_in_a_builtin_is_out_of_memory():
    from pyrovae.components.nets import encoders

    with pytest.raises(OutOfMemoryError, match=r"encoder 'mlp' with options \{'hidden': \[1000000, 1000000\]\}") as e:
        encoders.build({"name": "mlp", "hidden": [10**6, 10**6]}, data_shape=(4,), out_features=2)
    assert isinstance(e.value.__cause__, RuntimeError)


def test_a_runtime_error_about_something_else_is_not_out_of_memory(registered):
    def allocates_slots(latent_dim):
        raise RuntimeError("could not allocate a slot in the user's pool")  # names allocation, is no OOM

    registered(priors, "test_slots", allocates_slots)
    with pytest.raises(RuntimeError) as e:
        priors.build({"name": "test_slots"}, latent_dim=2)
    assert type(e.value) is RuntimeError


def test_numpy_integers_are_options_like_ints():
    prior = priors.build({"name": "mog", "num_components": np.int64(3)}, latent_dim=2)
    assert prior.locs.shape == (3, 2)


class _EncoderWithABug(torch.nn.Module):
    """A user's encoder whose forward has a bug that only running it shows."""

    def __init__(self, data_shape, out_features):
        super().__init__()
        self.out_features = out_features

    def forward(self, x):
        return x.reshape(len(x), -1)[:, : self.out_features].clamp(min="0")  # the bug: a string bound


@pytest.mark.parametrize("where", ["prior", "encoder"])
def test_a_users_type_error_passes_through_a_builtin_model(where, registered):
    """Built through the ``models`` registry (the built-in ``vae`` factory), a
    user's TypeError is still theirs: the prior's raised while building it,
    the encoder's while the model checks its shapes."""
    def prior_with_a_bug(latent_dim):
        return len(latent_dim)  # the bug: an int has no len

    if where == "prior":
        registered(priors, "test_prior_with_a_bug", prior_with_a_bug)
        section, culprit = {"prior": "test_prior_with_a_bug"}, "prior_with_a_bug"
    else:
        from pyrovae.components.nets import encoders

        registered(encoders, "test_encoder_with_a_bug", _EncoderWithABug)
        section, culprit = {"encoder": "test_encoder_with_a_bug"}, "forward"
    cfg = pyrovae.load_config({"model": tiny_config()["model"] | section})
    with pytest.raises(TypeError) as e:
        pyrovae.build_model(cfg.model, data_shape=(1, 8, 8))
    assert type(e.value) is TypeError and culprit in _frames(e.value)
