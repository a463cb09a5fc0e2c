"""Which class a map explains: the one helper every function that takes a ``target`` calls.

A target is an int (one class for every row), a sequence or tensor of N class indices, ``"label"``
(the true classes, passed as ``labels``) or ``"predicted"`` (the model's arg-max on each row).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xailab.utils import as_targets

__all__ = ["TARGETS", "resolve_target"]

#: The named targets: the true ``"label"`` (the caller passes the labels) or the model's ``"predicted"`` class.
TARGETS = ("label", "predicted")


def resolve_target(target, x: Tensor, *, model: nn.Module | None = None, labels=None,
                   num_classes: int | None = None) -> Tensor:
    """The class indices ``(N,)`` (long, on x's device) that ``target`` names for the rows of ``x``.

    ``"label"`` needs ``labels``; ``"predicted"`` needs ``model`` (one forward pass without
    gradients). Indices are checked against ``num_classes`` when given. Raises a ValueError naming
    ``target`` for anything else.
    """
    n = x.shape[0]
    if isinstance(target, str):
        if target == "label":
            if labels is None:
                raise ValueError("target='label' needs the true classes: pass labels=data.y")
            return as_targets(labels, n, num_classes, device=x.device)
        if target == "predicted":
            if model is None:
                raise ValueError("target='predicted' needs the model whose prediction is explained")
            with torch.no_grad():
                return model(x).argmax(1).to(x.device)
        raise ValueError(f"target must be class indices or one of {TARGETS}, got {target!r}")
    return as_targets(target, n, num_classes, device=x.device)
