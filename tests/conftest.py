"""Shared fixtures: every test starts with a clean param store, Pyro's
validation on, and fixed seeds."""

import pytest
import pyro
import torch

# tiny test models run fastest on one thread (and 2 threads thrash on a loaded machine)
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def pyro_clean_state():
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
