"""Sub-commands of the ``pyrovae`` CLI, one module each (see :mod:`pyrovae.cli`)."""
