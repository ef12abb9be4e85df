"""A class-balanced labelled subset of a training split, for semi-supervised training."""

from __future__ import annotations

import torch

from ..errors import DataError

__all__ = ["keep_labelled"]

#: the label that marks a point without one
MISSING = -1


def keep_labelled(labels: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """A copy of ``labels`` ``(N,)`` in which only ``count`` points keep
    their label, ``count / C`` from each of the C classes present, chosen
    uniformly at random within each class by a generator seeded with
    ``seed`` (``data.labelled_seed``); the others become -1 (missing).

    :raises DataError: when ``count`` exceeds the labelled points, is not a
        multiple of C, or a class has fewer than ``count / C`` points.

    Example::

        y = keep_labelled(train_labels, 100, seed=0)   # 10 labels per digit, the rest -1
    """
    known = labels[labels >= 0]
    if count > len(known):
        raise DataError(
            f"data.labelled={count} exceeds the {len(known)} labelled points of the training split "
            f"({len(labels)} points after data.val_size); lower data.labelled"
        )
    classes, sizes = torch.unique(known, return_counts=True)
    if count % len(classes):
        low, high = count // len(classes) * len(classes), -(-count // len(classes)) * len(classes)
        raise DataError(
            f"data.labelled={count} is not divisible by the {len(classes)} classes, so the labelled subset "
            f"cannot be class-balanced; use a multiple of {len(classes)}, e.g. {low or high} or {high}"
        )
    per_class = count // len(classes)
    generator = torch.Generator().manual_seed(seed)
    out = torch.full_like(labels, MISSING)
    for c, size in zip(classes.tolist(), sizes.tolist()):
        if size < per_class:
            raise DataError(
                f"data.labelled={count} needs {per_class} points of class {c}, but the training split has "
                f"only {size}; lower data.labelled"
            )
        members = (labels == c).nonzero().flatten()
        chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
        out[chosen] = c
    return out
