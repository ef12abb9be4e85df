"""Batch fields and control keywords from a model's signature
(:mod:`pyrovae.models.signatures`), and the checks of
:func:`~pyrovae.infer.fields.data_fields`.

The oracle is what each model's functions record receiving: the keyword
names and values as Python saw them, not pyrovae's own bookkeeping.
"""

import pytest
import torch

import pyro

import pyrovae
from pyrovae.infer.fields import data_fields
from pyrovae.models import models
from pyrovae.models.base import model_fields, pyro_callables, required_fields
from pyrovae.models.signatures import takes_keyword


@pytest.fixture(autouse=True)
def validation():
    with pyro.validation_enabled(True):
        yield


def recorder(signature: str, fields=None):
    """A model class whose ``model`` and ``guide`` have ``signature`` (the
    parameters after ``self``) and record their keyword arguments in ``calls``."""
    source = f"""
class Recorder:
    def __init__(self):
        self.calls = []

    def model(self, {signature}):
        self.calls.append(("model", dict(locals_())))

    def guide(self, {signature}):
        self.calls.append(("guide", dict(locals_())))
"""
    namespace = {}
    exec(source.replace("locals_()", "{k: v for k, v in locals().items() if k != 'self'}"), namespace)
    cls = namespace["Recorder"]
    if fields is not None:
        cls.fields = fields
    return cls()


X, Y, INDEX = torch.zeros(2, 3), torch.tensor([0, 1]), torch.tensor([4, 7])


@pytest.mark.parametrize("signature, fields, expected, required, received", [
    ("x", None, ("x",), ("x",), {"x": X}),
    ("xs, ys=None", None, ("x", "y"), ("x",), {"xs": X, "ys": Y}),
    ("data, y=None", None, ("x", "y"), ("x",), {"data": X, "y": Y}),
    ("x, index", None, ("x", "index"), ("x", "index"), {"x": X, "index": INDEX}),
    ("images, labels", {"images": "x", "labels": "y"}, ("x", "y"), ("x", "y"), {"images": X, "labels": Y}),
    ("x, y=None", ("x",), ("x",), ("x",), {"x": X, "y": None}),
    ("x, y=None, *, beta=1.0", None, ("x", "y"), ("x",), {"x": X, "y": Y, "beta": 0.5}),
])
def test_fields_follow_the_signature_and_arrive_under_the_parameter_names(signature, fields, expected, required,
                                                                           received):
    m = recorder(signature, fields)
    assert model_fields(m) == expected and required_fields(m) == required
    model_fn, guide_fn = pyro_callables(m)
    batch = {"y": Y, "index": INDEX}
    given = {k: v for k, v in batch.items() if k in expected}
    beta = received.get("beta", 1.0)
    model_fn(X, **given, beta=beta, num_data=None, obs_mask=None)  # as evaluation calls: x first
    guide_fn(x=X, **given, beta=beta)  # as training calls: every field by keyword
    assert [role for role, _ in m.calls] == ["model", "guide"]
    for _, got in m.calls:
        assert got.keys() == received.keys()
        assert all(v is received[k] if v is None or not torch.is_tensor(v) else torch.equal(v, received[k])
                   for k, v in got.items())


def test_canonical_signatures_get_the_bound_methods_themselves():
    m = recorder("x, y=None, *, num_data=None, beta=1.0, obs_mask=None")
    model_fn, guide_fn = pyro_callables(m)
    assert model_fn == m.model and guide_fn == m.guide


@pytest.mark.parametrize("name", ["vae", "cvae", "m2", "hvae"])
def test_built_in_families_are_called_without_a_wrapper(name):
    model = pyrovae.build_model(pyrovae.load_config({"model": {"name": name, "latent_dim": 2}}).model, (1, 8, 8))
    model_fn, guide_fn = pyro_callables(model)
    assert model_fn == model.model and guide_fn == model.guide
    assert takes_keyword(model, "beta") and takes_keyword(model, "obs_mask")


def test_control_keywords_are_dropped_only_where_that_changes_nothing():
    m = recorder("x")
    model_fn, guide_fn = pyro_callables(m)
    model_fn(X, beta=1.0, num_data=None, obs_mask=None)
    guide_fn(X, obs_mask=torch.ones(2, 3, dtype=torch.bool), num_data=10)  # the guide has no use for them
    assert [got for _, got in m.calls] == [{"x": X}, {"x": X}]
    with pytest.raises(pyrovae.ConfigError, match="takes no 'beta' keyword"):
        model_fn(X, beta=0.5)
    with pytest.raises(pyrovae.ConfigError, match="takes no 'num_data' keyword"):
        model_fn(X, num_data=10)
    with pytest.raises(pyrovae.ConfigError, match="takes no 'obs_mask' keyword"):
        model_fn(X, obs_mask=torch.ones(2, 3, dtype=torch.bool))


def test_beta_taken_by_the_model_alone_is_dropped_for_the_guide():
    class ModelBeta:
        def model(self, x, beta=1.0):
            self.beta = beta

        def guide(self, x):
            self.guide_called = True

    m = ModelBeta()
    model_fn, guide_fn = pyro_callables(m)
    model_fn(X, beta=0.25)
    guide_fn(X, beta=0.25)
    assert m.beta == 0.25 and m.guide_called and takes_keyword(m, "beta")


def test_a_guide_that_takes_any_arguments_gets_the_models():
    """An autoguide calls the model with its own arguments: it must get them
    under the model's parameter names, without keywords the model lacks."""
    class WithAutoguide:
        def model(self, xs, index):
            self.model_got = (xs, index)

        def guide(self, *args, **kwargs):
            self.model(*args, **kwargs)

    m = WithAutoguide()
    _, guide_fn = pyro_callables(m)
    guide_fn(X, index=INDEX, beta=1.0, num_data=None)
    assert m.model_got[0] is X and m.model_got[1] is INDEX


def test_scoring_a_model_with_a_local_guide_needs_index():
    class Local:
        def model(self, x, index):
            pass

        def guide(self, x, index):
            pass

    with pytest.raises(pyrovae.ConfigError, match="local to its training points") as error:
        data_fields(Local(), X, {}, "evaluate")
    assert "pass index=" in str(error.value) and "\n" not in str(error.value)


def test_a_fields_string_is_refused():
    m = recorder("x", fields="x")
    with pytest.raises(pyrovae.ConfigError, match="must be a tuple"):
        model_fields(m)


def test_a_registered_model_with_plural_fields_gets_labels_from_data_splits():
    """Through the registry and split_data: an ``(x, labels)`` pair gives ``ys``."""
    from pyrovae.infer.fields import split_data

    @pyrovae.register_model("test_plural_fields")
    def build(config, data_shape):
        return recorder("xs, ys=None")

    try:
        m = pyrovae.build_model(pyrovae.load_config({"model": {"name": "test_plural_fields"}}).model, (3,))
        fields = split_data(m, (X, Y), {}, "evaluate")
        assert set(fields) == {"x", "y"} and torch.equal(fields["y"], Y)
    finally:
        models.unregister("test_plural_fields")


def test_a_guide_replaced_after_first_use_is_read_again():
    m = recorder("x")
    pyro_callables(m)

    def guide(xs, beta=1.0):
        m.calls.append(("new guide", {"xs": xs, "beta": beta}))

    m.guide = guide
    _, guide_fn = pyro_callables(m)
    guide_fn(X, beta=0.5)
    assert m.calls == [("new guide", {"xs": X, "beta": 0.5})]
