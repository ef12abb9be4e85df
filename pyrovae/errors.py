"""Exceptions that pyrovae raises for problems a user can fix.

Each message says what was wrong and how to fix it. The CLI prints them
without a traceback.
"""

__all__ = [
    "PyrovaeError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunDirError",
    "TrainingDiverged",
]


class PyrovaeError(Exception):
    """Base class of every error pyrovae raises on bad input."""


class ConfigError(PyrovaeError, ValueError):
    """An unknown key or component, a wrong type, or an unparsable file."""


class DataError(PyrovaeError, ValueError):
    """Data that is missing, non-finite, of the wrong shape, or outside a
    likelihood's support."""


class CheckpointError(PyrovaeError):
    """A missing, truncated or foreign checkpoint."""


class RunDirError(PyrovaeError):
    """A run directory that exists already, or that cannot be written."""


class TrainingDiverged(PyrovaeError):
    """The loss or a gradient became NaN or infinite."""

    def __init__(self, message, epoch=None, step=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
