"""Small configs and models shared by the tests."""

import pyrovae

SHAPE = (1, 8, 8)


def tiny_config(**sections):
    """A fast config on the synthetic source: 8x8 images, latent 3, one hidden layer."""
    cfg = {
        "data": {"name": "synthetic", "val_size": 200, "binarize": "static"},
        "model": {
            "latent_dim": 3,
            "encoder": {"name": "mlp", "hidden": [32]},
            "decoder": {"name": "mlp", "hidden": [32]},
        },
        "train": {"epochs": 2, "batch_size": 50, "progress": False, "device": "cpu"},
    }
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


def tiny_model_config(**model):
    """The ``model`` section of :func:`tiny_config` with ``model`` overrides."""
    return {**tiny_config()["model"], **model}


def component_options(registry_kind, name):
    """Options that keep a component small in tests."""
    small = {("prior", "vamp"): {"num_components": 5}, ("prior", "mog"): {"num_components": 3}, ("prior", "flow"): {"hidden": [8]}}
    return small.get((registry_kind, name), {})


def build(shape=SHAPE, **model):
    return pyrovae.VAE.from_config(tiny_model_config(**model), data_shape=shape)


def data_config_for(likelihood):
    """A ``data`` section whose values lie in ``likelihood``'s support,
    derived from the support itself (so user likelihoods work too)."""
    from torch.distributions import constraints

    support = likelihood.support
    if support is constraints.boolean:
        return {"binarize": "static"}
    if isinstance(support, constraints.integer_interval):
        return {"binarize": "none", "quantize": True}
    return {"binarize": "none"}
