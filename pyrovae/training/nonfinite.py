"""Non-finite losses, gradients and parameters during training.

The loss of every step is checked (it is read anyway). Gradients are
checked through their norm when ``train.grad_clip`` or
``train.skip_nonfinite`` is set (:func:`grad_norm_check`); otherwise a
non-finite gradient shows up as a non-finite loss one step later (the
message then says so), and the parameters are checked once per epoch
before a checkpoint is written (:meth:`NonfiniteGuard.check_parameters`),
so a checkpoint never holds NaN weights. The trainer hands the checks what
they need (:class:`NonfiniteGuard`).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, List, Optional, Sequence

import torch

from ..errors import TrainingDiverged

__all__ = ["grad_norm_check", "nonfinite_names", "NonfiniteGuard"]


def _total_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all ``grads`` together (a 0-dim tensor; 0 for none)."""
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def grad_norm_check(train_cfg, params: Sequence[torch.Tensor]) -> Callable[[], float]:
    """The per-step gradient check, chosen once: clip to ``train.grad_clip``
    and return the norm; or, with ``skip_nonfinite``, only the norm (to skip
    a batch whose gradient is not finite); otherwise a constant 0 (a
    non-finite gradient then shows up as a non-finite loss one step later)."""
    clip = train_cfg.grad_clip
    params = list(params)
    if clip is not None:

        def clip_norm() -> float:
            grads = [p.grad for p in params if p.grad is not None]
            norm = float(_total_norm(grads))
            if norm > clip and math.isfinite(norm):  # non-finite: left as is, to name the culprit
                torch._foreach_mul_(grads, clip / (norm + 1e-6))
            return norm

        return clip_norm
    if train_cfg.skip_nonfinite:
        return lambda: float(_total_norm([p.grad for p in params if p.grad is not None]))
    return lambda: 0.0


def nonfinite_names(model, grads: bool = False) -> List[str]:
    """Names of ``model``'s parameters (or of their gradients) that hold
    NaN/inf. Only called once something went wrong."""
    bad = []
    for name, p in model.named_parameters():
        t = p.grad if grads else p
        if t is not None and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


class NonfiniteGuard:
    """What the non-finite checks need of a run, handed over by the trainer.

    :param model: the model (its parameters are named in messages).
    :param params: the trained parameters, checked once per epoch.
    :param optimizer: its gradients are cleared after a non-finite step.
    :param bool skip: ``train.skip_nonfinite``: skip such a batch while
        the weights are finite.
    :param bool keeps_checkpoint: whether a run directory keeps the last
        good checkpoint (the messages say so).

    Example::

        guard = NonfiniteGuard(vae, params, optimizer, skip=False, keeps_checkpoint=True)
        error = guard.diverged("loss", float("nan"), epoch=0, step=10, i=10)
    """

    def __init__(self, model, params: Sequence[torch.Tensor], optimizer, skip: bool, keeps_checkpoint: bool):
        self.model, self.params, self.optimizer = model, list(params), optimizer
        self.skip, self.keeps_checkpoint = bool(skip), bool(keeps_checkpoint)

    def _kept(self) -> str:
        return "The last good checkpoint is kept. " if self.keeps_checkpoint else ""

    def diverged(self, what: str, value: float, epoch: int, step: int, i: int) -> Optional[TrainingDiverged]:
        """The error for a non-finite ``what`` (``loss`` or ``gradient norm``)
        at step ``i`` (0-based) of the epoch after ``epoch`` completed ones,
        ``step`` optimizer steps into the run; or None when the batch may be
        skipped (``skip``, weights still finite). Clears the gradients either way."""
        where = f"epoch {epoch + 1}, step {i + 1} (global step {step + 1})"
        detail = ""
        broken = nonfinite_names(self.model)
        if broken:
            detail = (
                f" The parameters were already non-finite ({', '.join(broken[:3])}"
                f"{', ...' if len(broken) > 3 else ''}): the gradient or update of the step before "
                f"(global step {step}) was not finite although its loss was."
            )
        elif what == "gradient norm":
            names = nonfinite_names(self.model, grads=True)
            if names:
                detail = f" First non-finite gradient: {names[0]}."
        self.optimizer.zero_grad(set_to_none=True)
        if self.skip and not broken:
            warnings.warn(f"non-finite {what} at {where}; skipped that batch")
            return None
        return TrainingDiverged(
            f"the {what} became {value} at {where}.{detail} {self._kept()}"
            "Lower train.optimizer.lr, set train.grad_clip, or set train.skip_nonfinite: true.",
            epoch=epoch + 1,
            step=i + 1,
        )

    def check_parameters(self, epoch: int, step: int) -> None:
        """Once per epoch, before a checkpoint, after ``epoch`` completed
        epochs and ``step`` steps: the weights must be finite (they are not
        when the last step's gradient was not).

        :raises TrainingDiverged: naming the first non-finite parameters.
        """
        if not self.params or bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            return
        raise TrainingDiverged(
            f"the parameters ({', '.join(nonfinite_names(self.model)[:3])}) became non-finite at the last step of "
            f"epoch {epoch} (global step {step}): its loss was finite but its gradient or update was not. "
            + self._kept()
            + "Lower train.optimizer.lr or set train.grad_clip (which checks every step's gradient).",
            epoch=epoch,
            step=None,
        )
