"""Random state that a checkpoint saves and restores: torch's global
generators (the CPU's and every visible GPU's) and explicit
``torch.Generator`` objects, whose states only fit a generator of the same
device type (a CPU generator's state is 5,056 bytes; a CUDA generator's
is a seed and an offset).

Example::

    >>> import torch
    >>> saved = GlobalRNG().state_dict()
    >>> a = torch.rand(2)
    >>> GlobalRNG().load_state_dict(saved)
    >>> torch.equal(torch.rand(2), a)
    True
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional

import torch

__all__ = ["GlobalRNG", "restore_generator", "fresh_generator_state"]


class GlobalRNG:
    """torch's global generators, as a part that a checkpoint holds: the
    CPU's (latent noise drawn without an explicit generator) and every
    visible GPU's.

    ``state_dict()`` is ``{"torch": ByteTensor, "cuda": [ByteTensor, ...]}``
    (``cuda`` empty without a GPU).
    """

    def state_dict(self) -> Dict[str, Any]:
        """The generators' states now."""
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Set the generators to ``state``. With fewer GPUs visible than were
        saved, those there are set and the rest warned about; GPU states
        saved where there is no GPU now are ignored."""
        torch.set_rng_state(state["torch"])
        states = state["cuda"] if torch.cuda.is_available() else []
        count = torch.cuda.device_count() if states else 0
        for index, saved in enumerate(states[:count]):
            torch.cuda.set_rng_state(saved, index)
        if len(states) > count:
            warnings.warn(f"the checkpoint holds the random state of {len(states)} GPUs and {count} are visible: "
                          f"GPUs {count} to {len(states) - 1} are not restored")

    @staticmethod
    def seed(seed: int) -> None:
        """Seed every global generator with ``seed`` (a fresh stream)."""
        torch.manual_seed(seed)


def _same_kind(saved_device: Optional[str], generator: torch.Generator) -> bool:
    """Whether a generator state saved on ``saved_device`` fits ``generator``
    (a state saved without its device came from a generator on the data's
    device of that run, taken as matching)."""
    return saved_device is None or torch.device(saved_device).type == generator.device.type


def restore_generator(generator: torch.Generator, state: torch.Tensor, saved_device: Optional[str], seed: int,
                      what: str) -> bool:
    """Set ``generator`` to ``state``, saved on ``saved_device``. A state
    from another device type (a run resumed on the CPU after a GPU, or the
    other way round) cannot be set: the generator is seeded with ``seed``
    instead, with a warning that names it as the ``what`` generator, and
    False says so.

    Example::

        restore_generator(batches.generator, saved["generator"], saved.get("generator_device"), 0, "shuffling")
    """
    if _same_kind(saved_device, generator):
        generator.set_state(state)
        return True
    generator.manual_seed(seed)
    warnings.warn(f"the {what} generator was saved on {saved_device} and runs on {generator.device.type} now: "
                  "it starts afresh, so the run is not bitwise identical to an uninterrupted one")
    return False


def fresh_generator_state(device: str, seed: int) -> torch.Tensor:
    """The state of a generator on ``device`` seeded with ``seed``: what a
    part's ``load_state_dict`` takes to start a stream afresh.

    Example::

        >>> g = torch.Generator().manual_seed(7)
        >>> torch.equal(fresh_generator_state("cpu", 7), g.get_state())
        True
    """
    return torch.Generator(device=device).manual_seed(seed).get_state()
