"""Localisation: does a map put its mass where the evidence is known to be (a ground-truth mask)?

Convention (:mod:`xailab.metrics`): ``metric(maps, *, mask, **options) -> (N,)``; maps and masks
are pixel maps ``(N, 1, H, W)``, ``(N, H, W)`` or ``(N, D)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xailab.attribution.maps import average_ranks
from xailab.metrics._maps import pair

__all__ = ["saliency_auc", "pointing_game"]


def saliency_auc(maps: Tensor, *, mask: Tensor) -> Tensor:
    """Per sample ROC-AUC of the map as a score for "pixel is in the mask" (``(N,)``).

    Computed as the Mann-Whitney statistic with ties given average ranks, so it equals
    ``sklearn.metrics.roc_auc_score`` (a tie between a mask and a background pixel counts 1/2).
    NaN for a sample whose mask is all 0 or all 1.
    """
    s, m = pair(maps, mask)
    m = m > 0.5
    ranks = average_ranks(s.double())
    pos = m.sum(1).double()
    neg = m.shape[1] - pos
    u = (ranks * m).sum(1) - pos * (pos + 1) / 2
    return (u / (pos * neg)).float()


def _disk(radius: int, device) -> Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()[None, None]


def pointing_game(maps: Tensor, *, mask: Tensor, tolerance: int = 0) -> Tensor:
    """Per sample: does the map's maximum fall inside the mask (or within ``tolerance`` pixels of
    it, Euclidean distance)? ``(N,)`` float, 1 for a hit. Ties at the maximum: a hit only if EVERY
    maximal pixel is inside, so a constant map does not score by luck (Zhang et al. 2016)."""
    s, m = pair(maps, mask)
    tolerance = int(tolerance)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
    hit_zone = m > 0.5
    if tolerance:
        if mask.ndim == 2:
            raise ValueError("tolerance needs image masks (N, 1, H, W) or (N, H, W)")
        img = (mask if mask.ndim == 4 else mask[:, None]).float()
        grown = F.conv2d(img, _disk(tolerance, img.device), padding=tolerance)
        hit_zone = grown.flatten(1) > 0.5
    top = s == s.amax(1, keepdim=True)
    return ((top & ~hit_zone).sum(1) == 0).float()
