"""Exceptions that pyrovae raises for problems a user can fix.

Each message says what was wrong and how to fix it. The CLI prints them
as one line without a traceback (``pyrovae --debug`` prints the traceback).
An exception raised by a user's own code (a prior, a likelihood, a model)
is none of these: it reaches the user unchanged, with its traceback.
"""

from typing import Optional

__all__ = [
    "PyrovaeError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunDirError",
    "TrainingDiverged",
    "OutOfMemoryError",
    "is_out_of_memory",
]


class PyrovaeError(Exception):
    """Base class of every error pyrovae raises on bad input.

    Catch it to handle any of them; each message says what was wrong and how
    to fix it.

    Example::

        >>> import pyrovae
        >>> try:
        ...     pyrovae.load_config({"model": {"latent_dim": 0}})
        ... except pyrovae.PyrovaeError as error:
        ...     print(type(error).__name__, "-", error)
        ConfigError - model.latent_dim must be an integer >= 1, got 0
    """


class ConfigError(PyrovaeError, ValueError):
    """An unknown key or component, a wrong type, or an unparsable file.
    Also a ``ValueError``.

    Example::

        >>> import pyrovae
        >>> pyrovae.VAE.from_config({"prior": "gaussian"}, data_shape=(784,))
        Traceback (most recent call last):
        ...
        pyrovae.errors.ConfigError: unknown prior 'gaussian'. Valid choices: flow, laplace, mog, normal, ...
    """


class DataError(PyrovaeError, ValueError):
    """Data that is missing, non-finite, of the wrong shape, or outside a
    likelihood's support. Also a ``ValueError``.

    Example::

        >>> import torch, pyrovae
        >>> vae = pyrovae.VAE.from_config({"latent_dim": 2}, data_shape=(1, 8, 8))   # Bernoulli pixels
        >>> pyrovae.log_likelihood(vae, torch.full((3, 1, 8, 8), 0.5))   # grey values, not 0/1
        Traceback (most recent call last):
        ...
        pyrovae.errors.DataError: 192 of 192 data values lie outside the support of the 'bernoulli' likelihood ...
    """


class CheckpointError(PyrovaeError):
    """A missing, truncated or foreign checkpoint.

    Example::

        >>> import pathlib, tempfile, pyrovae
        >>> run_dir = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (run_dir / "config.yaml").write_text(pyrovae.load_config().to_yaml())
        >>> _ = (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
        >>> pyrovae.load_run(run_dir)
        Traceback (most recent call last):
        ...
        pyrovae.errors.CheckpointError: .../checkpoint.pt is not a readable pyrovae checkpoint ...
    """


class RunDirError(PyrovaeError):
    """A run directory that exists already, that cannot be written, or
    that is not a run directory.

    Example::

        >>> import tempfile, pyrovae
        >>> pyrovae.load_run(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        pyrovae.errors.RunDirError: ... is not a pyrovae run directory (no config.yaml)
    """


class TrainingDiverged(PyrovaeError):
    """The loss or a gradient became NaN or infinite; ``epoch`` and ``step``
    say when. The last good checkpoint is kept (``train.skip_nonfinite: true``
    skips such batches instead).

    Example::

        >>> import pyrovae
        >>> cfg = pyrovae.load_config({
        ...     "data": {"name": "synthetic", "val_size": 100, "options": {"num_points": 300}},
        ...     "model": {"latent_dim": 2},
        ...     "train": {"epochs": 1, "progress": False, "device": "cpu",
        ...               "optimizer": {"name": "sgd", "lr": 1.0e+30}}})   # far too large
        >>> splits = pyrovae.load_data(cfg.data)
        >>> try:
        ...     pyrovae.train(pyrovae.VAE.from_config(cfg, splits.data_shape), splits, cfg)
        ... except pyrovae.TrainingDiverged as error:
        ...     print(error.epoch, str(error).split(".")[0])
        1 the loss became ... at epoch 1, step ...
    """

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class OutOfMemoryError(PyrovaeError):
    """A model or a batch too large for the memory of the device. The message
    says what was being built or run and what to reduce: the model's sizes
    (``latent_dim``, hidden sizes, ``num_components``), ``train.batch_size``,
    or the evaluation batch size. The exception that torch or Python raised
    is chained as ``__cause__``.

    Example::

        >>> import pyrovae
        >>> pyrovae.VAE.from_config({"encoder": {"name": "mlp", "hidden": [10**6, 10**6]}}, data_shape=(784,))
        Traceback (most recent call last):
        ...
        pyrovae.errors.OutOfMemoryError: encoder 'mlp' with options {'hidden': [1000000, 1000000]} ... is too large to build here (...); reduce the model's sizes (model.latent_dim, hidden sizes, num_components), train.batch_size, ...
    """

    #: what to reduce, the end of every message of this class
    HINT = ("reduce the model's sizes (model.latent_dim, hidden sizes, num_components), "
            "train.batch_size, or the evaluation batch size (pyrovae evaluate --batch-size)")

    def __init__(self, what: str, cause: Optional[BaseException] = None, hint: Optional[str] = None):
        first = ""
        if cause is not None:
            lines = str(cause).strip().splitlines()
            first = f" ({lines[0] if lines else type(cause).__name__})"
        super().__init__(f"{what} is too large to build here{first}; {hint or self.HINT}")
        self.what = what


#: the words of torch's CPU allocator when an allocation fails: it raises a
#: plain RuntimeError there, where CUDA raises torch.OutOfMemoryError
_CPU_ALLOCATOR_FAILED = "DefaultCPUAllocator: can't allocate memory"


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that memory ran out: Python's ``MemoryError``,
    ``torch.OutOfMemoryError`` (CUDA), or the ``RuntimeError`` of torch's CPU
    allocator.

    Example::

        >>> import torch
        >>> try:
        ...     torch.empty(10**15)
        ... except RuntimeError as error:
        ...     is_out_of_memory(error)
        True
        >>> is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
        False
    """
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and _CPU_ALLOCATOR_FAILED in str(error)
