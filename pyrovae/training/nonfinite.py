"""Non-finite losses, gradients and parameters during training.

The loss of every step is checked (it is read anyway). Gradients are
checked through their norm when ``train.grad_clip`` or
``train.skip_nonfinite`` is set (:func:`grad_norm_check`); otherwise a
non-finite gradient shows up as a non-finite loss one step later (the
message then says so), and the parameters are checked once per epoch
before a checkpoint is written (:func:`check_parameters`), so a checkpoint
never holds NaN weights.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, List, Optional, Sequence

import torch

from ..errors import TrainingDiverged

__all__ = ["grad_norm_check", "nonfinite_names", "diverged", "check_parameters"]


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


def diverged(trainer, what: str, value: float, i: int) -> Optional[TrainingDiverged]:
    """The error for a non-finite ``what`` (``loss`` or ``gradient norm``) at
    step ``i`` (0-based) of the trainer's current epoch, or None when the
    batch may be skipped (``train.skip_nonfinite``, weights still finite).
    Clears the gradients either way."""
    st, tc = trainer.state, trainer.cfg.train
    where = f"epoch {st.epoch + 1}, step {i + 1} (global step {st.step + 1})"
    detail = ""
    broken = nonfinite_names(trainer.vae)
    if broken:
        detail = (
            f" The parameters were already non-finite ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}): the gradient or update of the step before "
            f"(global step {st.step}) was not finite although its loss was."
        )
    elif what == "gradient norm":
        names = nonfinite_names(trainer.vae, grads=True)
        if names:
            detail = f" First non-finite gradient: {names[0]}."
    trainer.optimizer.zero_grad(set_to_none=True)
    if tc.skip_nonfinite and not broken:
        warnings.warn(f"non-finite {what} at {where}; skipped that batch")
        return None
    kept = "The last good checkpoint is kept. " if trainer.run_path is not None else ""
    return TrainingDiverged(
        f"the {what} became {value} at {where}.{detail} {kept}"
        "Lower train.optimizer.lr, set train.grad_clip, or set train.skip_nonfinite: true.",
        epoch=st.epoch + 1,
        step=i + 1,
    )


def check_parameters(trainer) -> None:
    """Once per epoch, before a checkpoint: the weights must be finite
    (they are not when the last step's gradient was not)."""
    if not trainer.params or bool(torch.stack([torch.isfinite(p).all() for p in trainer.params]).all()):
        return
    st = trainer.state
    raise TrainingDiverged(
        f"the parameters ({', '.join(nonfinite_names(trainer.vae)[:3])}) became non-finite at the last step of "
        f"epoch {st.epoch} (global step {st.step}): its loss was finite but its gradient or update was not. "
        + ("The last good checkpoint is kept. " if trainer.run_path is not None else "")
        + "Lower train.optimizer.lr or set train.grad_clip (which checks every step's gradient).",
        epoch=st.epoch,
        step=None,
    )
