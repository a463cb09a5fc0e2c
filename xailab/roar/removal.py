"""Remove or keep the most relevant features of a batch: the data modification behind ROAR / KAR.

A *feature* is a pixel (all channels of one spatial position) when ``rank_by="pixel"`` and a
single tensor element when ``rank_by="element"`` (the reference implementation ranks elements).
For tabular inputs ``(N, D)`` both coincide: a feature is one column.

Scores used for ranking:
- ``rank_by="pixel"``: the relevance reduced over channels with
  :func:`xailab.attribution.reduce_channels` (``reduce`` = ``"abs-sum" | "sum" | "max-abs"``).
- ``rank_by="element"``: each element on its own, read through the same ``reduce`` rule applied to a
  single value: ``"abs-sum"`` / ``"max-abs"`` rank by ``|r|``, ``"sum"`` ranks by the signed value
  (what the paper's code does; squaring a map then matters).

Exactly ``floor(fraction * F)`` features are replaced (``F`` features per sample).  Ties are broken
deterministically: a stable sort on the score, so among equal scores the lower flat index ranks
first.  Removed features are filled with an uninformative value, by default the per-channel mean;
pass the *training set's* mean as ``fill_value`` (``roar`` does) - without it the mean of ``x``
itself is used.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from xailab.utils import check_fraction

RANK_BY = ("pixel", "element")
REDUCE = ("abs-sum", "sum", "max-abs")
FILLS = ("channel_mean", "zero")

__all__ = ["remove", "keep", "replace_features", "removal_mask", "n_removed", "channel_mean", "feature_scores"]


def n_removed(fraction: float, n_features: int) -> int:
    """``floor(fraction * n_features)`` computed robustly: ``0.3 * 10`` is 3, not 2."""
    fraction = check_fraction("fraction", fraction)
    # round first to absorb binary error (0.3 * 10 = 2.9999999999999996), then floor
    return min(n_features, math.floor(round(fraction * n_features, 9)))


def channel_mean(x: Tensor) -> Tensor:
    """Per-channel mean of a batch: shape ``(C,)`` for images ``(N, C, H, W)``, ``(D,)`` for ``(N, D)``."""
    dims = [0] + list(range(2, x.ndim))
    return x.float().mean(dim=dims)


def _check_pair(x: Tensor, relevance: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(relevance, Tensor):
        raise TypeError(f"x and relevance must be tensors, got {type(x).__name__} and {type(relevance).__name__}")
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be a batch (N, C, H, W) or (N, D), got shape {tuple(x.shape)}")
    ok = relevance.shape == x.shape or (
        x.ndim == 4 and relevance.ndim == 4 and relevance.shape[1] == 1
        and relevance.shape[0] == x.shape[0] and relevance.shape[2:] == x.shape[2:])
    if not ok:
        raise ValueError(f"relevance must have the shape of x {tuple(x.shape)} (or one channel), "
                         f"got {tuple(relevance.shape)}")
    if not torch.isfinite(relevance).all():
        raise ValueError("relevance contains NaN or infinite values; cannot rank features")


def feature_scores(relevance: Tensor, rank_by: str = "pixel", reduce: str = "abs-sum") -> Tensor:
    """Scores ``(N, F)`` that rank the features (higher = more relevant); see the module docstring."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    if reduce not in REDUCE:
        raise ValueError(f"reduce must be one of {REDUCE}, got {reduce!r}")
    r = relevance.detach().float()
    if rank_by == "pixel" and r.ndim == 4:
        if r.shape[1] > 1:
            from xailab.attribution import reduce_channels

            r = reduce_channels(r, how=reduce)
        elif reduce != "sum":
            r = r.abs()
    elif reduce != "sum":
        r = r.abs()
    return r.reshape(r.shape[0], -1)


def removal_mask(relevance: Tensor, fraction: float, *, rank_by: str = "pixel", reduce: str = "abs-sum",
                 top: bool = True) -> Tensor:
    """Boolean mask of the features to replace, shaped like one feature map.

    ``top=True`` marks the ``floor(fraction * F)`` highest-ranked features (ROAR);
    ``top=False`` the same number of lowest-ranked ones, in the same ranking (ties included), so
    ``removal_mask(r, f, top=False)`` equals ``~removal_mask(r, 1 - f)`` up to rounding of the count.  The mask has shape ``(N, 1, H, W)`` for
    pixel ranking of images and the shape of ``relevance`` otherwise.
    """
    scores = feature_scores(relevance, rank_by, reduce)
    n, f = scores.shape
    k = n_removed(fraction, f)
    flat = torch.zeros(n, f, dtype=torch.bool, device=scores.device)
    if k:
        # stable sort: equal scores keep index order, so ties rank the lower index first
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        flat.scatter_(1, order[:, :k] if top else order[:, f - k:], True)
    if rank_by == "pixel" and relevance.ndim == 4:
        return flat.reshape(n, 1, *relevance.shape[2:])
    return flat.reshape(relevance.shape)


def _fill_tensor(x: Tensor, fill, fill_value) -> Tensor:
    """The replacement value broadcastable to ``x``."""
    if fill_value is not None:
        v = torch.as_tensor(fill_value, dtype=x.dtype, device=x.device)
    elif isinstance(fill, (int, float)) and not isinstance(fill, bool):
        v = torch.tensor(float(fill), dtype=x.dtype, device=x.device)
    elif fill == "zero":
        v = torch.zeros((), dtype=x.dtype, device=x.device)
    elif fill == "channel_mean":
        v = channel_mean(x).to(x.dtype)
    else:
        raise ValueError(f"fill must be one of {FILLS} or a number, got {fill!r}")
    channels = x.shape[1]
    if v.ndim == 1 and v.shape[0] == channels and x.ndim == 4:
        v = v.view(1, channels, 1, 1)
    elif v.ndim == 1 and v.shape[0] == channels:  # (N, D): one value per column
        v = v.view(1, channels)
    elif v.ndim not in (0,) and v.shape != x.shape[1:] and v.shape != x.shape:
        raise ValueError(f"fill_value must be a scalar, one value per channel ({channels},) or shaped like "
                         f"one sample {tuple(x.shape[1:])}, got {tuple(v.shape)}")
    return v


def replace_features(x: Tensor, relevance: Tensor, fraction: float, *, top: bool = True, fill="channel_mean",
                     rank_by: str = "pixel", reduce: str = "abs-sum", fill_value=None) -> Tensor:
    """Replace the top (``top=True``, ROAR) or bottom ``floor(fraction * F)`` features of each sample.

    The sweep uses ``top=False`` for its ``keep`` variant, so that every variant is indexed by the
    fraction *removed*: keeping the top 10 % is ``top=False`` at 0.9.
    """
    _check_pair(x, relevance)
    mask = removal_mask(relevance, fraction, rank_by=rank_by, reduce=reduce, top=top).to(x.device)
    value = _fill_tensor(x, fill, fill_value)
    return torch.where(mask, value, x)


def remove(x: Tensor, relevance: Tensor, fraction: float, fill="channel_mean", rank_by: str = "pixel",
           reduce: str = "abs-sum", fill_value=None) -> Tensor:
    """Replace the top ``floor(fraction * F)`` features of each sample by an uninformative value (ROAR).

    ``x``: ``(N, C, H, W)`` or ``(N, D)``; ``relevance``: same shape (or one channel for images).
    ``fill``: ``"channel_mean"`` (default, the paper's choice), ``"zero"`` or a number;
    ``fill_value`` (a scalar, ``(C,)`` or one sample's shape) overrides it - pass the training set's
    per-channel mean here, otherwise the mean of ``x`` itself is used.
    ``remove(x, r, 0)`` returns ``x`` unchanged (a copy).
    """
    return replace_features(x, relevance, fraction, top=True, fill=fill, rank_by=rank_by, reduce=reduce,
                    fill_value=fill_value)


def keep(x: Tensor, relevance: Tensor, fraction: float, fill="channel_mean", rank_by: str = "pixel",
         reduce: str = "abs-sum", fill_value=None) -> Tensor:
    """Keep the top ``floor(fraction * F)`` features and replace all others (KAR).

    The complement of :func:`remove` with the same arguments: every feature is replaced by exactly
    one of ``remove(x, r, f)`` and ``keep(x, r, f)``.
    """
    _check_pair(x, relevance)
    mask = removal_mask(relevance, fraction, rank_by=rank_by, reduce=reduce, top=True).to(x.device)
    return torch.where(mask, x, _fill_tensor(x, fill, fill_value))
