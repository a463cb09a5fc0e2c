"""Shared plumbing for attribution methods: input checks, the model guard, chunked gradients.

Every method runs inside :func:`explaining`, which refuses train-mode models, switches the
parameters' ``requires_grad`` off (only input gradients are wanted), turns grad mode on even
when the caller is in ``torch.no_grad()``, and restores modes and flags on every exit path.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from xailab.utils import as_targets, check_finite, check_positive, preserved_state, require_eval

#: Default chunk size, in input elements per forward/backward pass: rows per chunk are
#: ``max(1, DEFAULT_CHUNK_ELEMENTS // elements_per_row)``, i.e. 16 rows of a 224-px RGB image
#: (ResNet-18: about 25 MB per row, peak RSS ~1.2 GB for the whole process, and per-row time as
#: good as with bigger chunks on CPU; see bench/attribution.py) and ~800 rows of a 32-px image,
#: where per-call overhead dominates and big batches are fastest.
DEFAULT_CHUNK_ELEMENTS = 2_500_000


def check_input(x: Tensor, what: str = "x") -> Tensor:
    """``x`` must be a floating tensor shaped ``(N, C, H, W)`` or ``(N, D)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (2, 4):
        raise ValueError(f"{what} must be a batch shaped (N, C, H, W) or (N, D), got shape {tuple(x.shape)}"
                         " (add a batch dimension with x[None] for a single sample)")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {x.dtype}")
    return check_finite(what, x)


def check_image(x: Tensor, method: str) -> Tensor:
    check_input(x)
    if x.ndim != 4:
        raise ValueError(f"{method} needs images shaped (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def targets_for(target, x: Tensor) -> Tensor:
    """Targets as a long tensor of length N on x's device (range is checked after the forward)."""
    return as_targets(target, x.shape[0], device=x.device)


def check_outputs(out: Tensor, t: Tensor) -> None:
    """The model must return logits ``(N, K)``; targets must lie in ``[0, K)``."""
    if out.ndim != 2:
        raise ValueError(f"the model must return scores shaped (N, num_classes), got shape {tuple(out.shape)}")
    as_targets(t, t.shape[0], num_classes=out.shape[1])


def batch_rows(batch_size, x: Tensor) -> int:
    """Rows per forward/backward pass: ``batch_size`` if given, else a default from x's size."""
    if batch_size is None:
        per_row = max(1, x[0].numel())
        return max(1, DEFAULT_CHUNK_ELEMENTS // per_row)
    return int(check_positive("batch_size", batch_size, integer=True))


@contextlib.contextmanager
def explaining(model: nn.Module, what: str) -> Iterator[nn.Module]:
    """Guard a method's use of ``model``: eval mode required, state restored on every path."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    require_eval(model, what)
    with preserved_state(model), torch.enable_grad():
        for p in model.parameters():
            p.requires_grad_(False)
        yield model


def score_gradient(model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    """d model(x)[i, t_i] / d x_i for every row i, in one forward and one backward pass.

    On a CPU an image batch runs channels-last, which makes small convolutions about twice as fast
    (bench/attribution.py) and changes values only by float rounding; a model that cannot take that layout
    (a ``.view`` of its activations) runs in the ordinary one."""
    if x.ndim == 4 and x.device.type == "cpu":
        try:
            return _score_gradient(model, x.contiguous(memory_format=torch.channels_last), t).contiguous()
        except RuntimeError as err:
            if "view size is not compatible" not in str(err):
                raise
    return _score_gradient(model, x, t)


def _score_gradient(model: nn.Module, x: Tensor, t: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    out = model(x)
    check_outputs(out, t)
    score = out.gather(1, t[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x)
    return grad


def chunked(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, rows: int) -> Tensor:
    """Apply ``fn(x_chunk, t_chunk)`` over chunks of ``rows`` samples and concatenate."""
    if x.shape[0] <= rows:
        return fn(x, t)
    return torch.cat([fn(x[i:i + rows], t[i:i + rows]) for i in range(0, x.shape[0], rows)])
