"""Turn maps into pixel maps: reduce channels, normalise per sample.

Both are explicit choices (ROAR ranks pixels by a reduced map; displays need a common scale), so
they are separate functions with named options instead of being hidden inside the methods.
"""
from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("abs-sum", "sum", "max-abs")
NORMALISATIONS = ("max-abs", "min-max", "sum-abs", "rank", "none")


def reduce_channels(maps: Tensor, reduce: str = "abs-sum") -> Tensor:
    """``(N, C, H, W)`` -> ``(N, 1, H, W)``.

    ``abs-sum``: Σ_c |a_c| (magnitude, the usual choice); ``sum``: Σ_c a_c (keeps the sign);
    ``max-abs``: max_c |a_c| (as in Simonyan et al.'s saliency maps). Tabular ``(N, D)``
    maps have no channels: ``sum`` returns them unchanged, the other two return ``|m|``.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)}; got {reduce!r}")
    if maps.ndim == 2:
        return maps if reduce == "sum" else maps.abs()
    if maps.ndim != 4:
        raise ValueError(f"maps must be shaped (N, C, H, W) or (N, D), got {tuple(maps.shape)}")
    if reduce == "abs-sum":
        return maps.abs().sum(1, keepdim=True)
    if reduce == "sum":
        return maps.sum(1, keepdim=True)
    return maps.abs().amax(1, keepdim=True)


def normalise(maps: Tensor, scheme: str = "max-abs", eps: float = 1e-12) -> Tensor:
    """Normalise each sample's map on its own (any shape ``(N, ...)``).

    ``max-abs``: divide by max |m| -> [-1, 1], sign and zero kept (signed display);
    ``min-max``: -> [0, 1]; ``sum-abs``: divide by Σ|m| (maps comparable as distributions);
    ``rank``: average ranks scaled to [0, 1] (monotone-invariant comparison); ``none``: unchanged.
    Constant maps become zeros (``min-max``/``rank``) instead of NaN.
    """
    if scheme not in NORMALISATIONS:
        raise ValueError(f"scheme must be one of {', '.join(NORMALISATIONS)}; got {scheme!r}")
    if scheme == "none":
        return maps
    flat = maps.flatten(1)
    if scheme == "max-abs":
        out = flat / flat.abs().amax(1, keepdim=True).clamp_min(eps)
    elif scheme == "sum-abs":
        out = flat / flat.abs().sum(1, keepdim=True).clamp_min(eps)
    elif scheme == "min-max":
        lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
        out = (flat - lo) / (hi - lo).clamp_min(eps)
    else:
        ranks = average_ranks(flat).to(flat.dtype)
        out = (ranks - 1) / max(flat.shape[1] - 1, 1)
        out = torch.where(flat.amax(1, keepdim=True) == flat.amin(1, keepdim=True), torch.zeros_like(out), out)
    return out.view_as(maps)


def average_ranks(flat: Tensor) -> Tensor:
    """Ranks 1..D (float64) of each row of ``(N, D)``, ties given their average rank (as
    ``scipy.stats.rankdata``)."""
    n, d = flat.shape
    values, order = flat.sort(dim=1, stable=True)
    # Group equal values: a new group starts wherever the sorted value changes.
    new = torch.ones_like(values, dtype=torch.bool)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new.long().cumsum(1) - 1                                  # group id per sorted position
    pos = torch.arange(1, d + 1, device=flat.device, dtype=torch.float64).expand(n, d)
    sums = torch.zeros(n, d, dtype=torch.float64, device=flat.device).scatter_add_(1, group, pos)
    counts = torch.zeros(n, d, dtype=torch.float64, device=flat.device).scatter_add_(
        1, group, torch.ones_like(pos))
    sorted_ranks = sums.gather(1, group) / counts.gather(1, group)
    ranks = torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)
    return ranks
