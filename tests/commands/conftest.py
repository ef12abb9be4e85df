"""The trained run the command tests read."""

import pyro
import pytest

from tiny_run import one_thread, train_tiny_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run trained for one epoch, one per test module; the module's tests
    run on one thread with Pyro's validation on."""
    pyro.enable_validation(True)
    path = tmp_path_factory.mktemp("run") / "run"
    train_tiny_run(path, epochs=1)
    with one_thread():
        yield path
