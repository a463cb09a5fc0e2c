"""Shapes shared by the metrics: a batch of pixel maps as ``(N, P)``."""
from __future__ import annotations

import torch
from torch import Tensor

from xailab.attribution.maps import average_ranks
from xailab.utils import check_finite


def pixels(maps: Tensor, what: str = "maps") -> Tensor:
    """A pixel map as ``(N, P)``: ``(N, 1, H, W)``, ``(N, H, W)`` or ``(N, D)``; multi-channel maps
    are refused (reducing channels is the caller's explicit choice)."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] != 1:
        raise ValueError(f"{what} has {maps.shape[1]} channels; reduce them first with "
                         "xailab.attribution.reduce_channels (an explicit choice: abs-sum, sum, max-abs)")
    if maps.ndim not in (2, 3, 4):
        raise ValueError(f"{what} must be a pixel map (N, 1, H, W), (N, H, W) or (N, D); got {tuple(maps.shape)}")
    return check_finite(what, maps.detach()).flatten(1)


def pair(a: Tensor, b: Tensor, names=("maps", "mask")) -> tuple[Tensor, Tensor]:
    """Two batches of pixel maps covering the same pixels, as ``(N, P)`` each."""
    fa, fb = pixels(a, names[0]), pixels(b, names[1])
    if fa.shape != fb.shape:
        raise ValueError(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} do not cover the same pixels")
    return fa, fb


def pixel_values(maps, reduce: str | None) -> Tensor:
    """Maps of any shape ``(N, ...)`` as pixel values ``(N, P)`` in float64: ``"abs-sum"`` sums
    ``|m|`` over the channel axis of ``(N, C, H, W)`` maps (other shapes: ``|m|``), ``"abs"`` takes
    ``|m|`` element-wise, ``None`` keeps the signed values."""
    maps = torch.as_tensor(maps).detach()
    if maps.ndim < 2:
        raise ValueError(f"maps must be batched (N, ...), got shape {tuple(maps.shape)}")
    check_finite("maps", maps)
    if reduce == "abs-sum":
        maps = maps.abs().sum(1) if maps.ndim == 4 else maps.abs()
    elif reduce == "abs":
        maps = maps.abs()
    elif reduce is not None:
        raise ValueError(f"reduce must be 'abs-sum', 'abs' or None, got {reduce!r}")
    return maps.reshape(maps.shape[0], -1).double()


def rank_pearson(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rho of each row pair of ``(N, P)`` tensors (float64; ties share their average
    rank, as ``scipy.stats.spearmanr``); NaN where a row is constant."""
    ra, rb = average_ranks(a.double()), average_ranks(b.double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denom = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(denom > 0, (ra * rb).sum(1) / denom.clamp_min(1e-300), torch.full_like(denom, float("nan")))
