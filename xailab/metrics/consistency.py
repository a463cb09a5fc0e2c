"""Consistency: how much two maps of the same images agree (two methods, two networks, a network
before and after a change), and how much two networks' predictions agree.

Convention (:mod:`xailab.metrics`): ``metric(maps, *, other, **options) -> (N,)``: ``other`` is the
second batch of maps of the same images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xailab.metrics._maps import pair, pixel_values, rank_pearson

__all__ = ["CONSISTENCY", "rank_correlation", "ssim", "consistency", "prediction_agreement"]

#: The measures :func:`consistency` offers.
CONSISTENCY = ("spearman", "l2", "cosine", "topk", "distance")


def rank_correlation(maps: Tensor, *, other: Tensor) -> Tensor:
    """Spearman correlation of two pixel maps, per sample (``(N,)``); ties get average ranks (as
    ``scipy.stats.spearmanr``). NaN when a map is constant."""
    fa, fb = pair(maps, other, ("maps", "other"))
    return rank_pearson(fa, fb).float()


def ssim(maps: Tensor, *, other: Tensor, window: int = 7) -> Tensor:
    """Structural similarity of two image maps (``(N,)``), each min-max normalised to [0, 1]
    first; ``window × window`` uniform windows, constants of Wang et al. (2004) for range 1."""
    fa, fb = pair(maps, other, ("maps", "other"))
    if maps.ndim == 2:
        raise ValueError("ssim needs image maps (N, 1, H, W) or (N, H, W)")
    shape = (maps.shape[0], 1) + tuple(maps.shape[-2:])

    def unit(f):
        lo, hi = f.amin(1, keepdim=True), f.amax(1, keepdim=True)
        return ((f - lo) / (hi - lo).clamp_min(1e-12)).view(shape).double()

    x, y = unit(fa), unit(fb)
    w = min(window, *shape[2:])
    mean = lambda z: F.avg_pool2d(z, w, stride=1)  # noqa: E731 - a local shorthand
    mx, my = mean(x), mean(y)
    vx, vy, cxy = mean(x * x) - mx ** 2, mean(y * y) - my ** 2, mean(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def consistency(maps, *, other, measure: str = "spearman", reduce: str | None = "abs-sum",
                k: float = 0.1) -> Tensor:
    """Per-image consistency of two batches of maps of the same shape; returns a tensor ``(N,)``.

    Maps are first turned into pixel relevance: with ``reduce="abs-sum"`` (default) a ``(N, C, H, W)``
    map becomes ``sum_c |m_c|`` per pixel, other shapes (``(N, H, W)``, ``(N, D)``) become ``|m|``;
    ``reduce=None`` compares the raw signed maps.  Measures (``k`` only for ``"topk"``):

    * ``"spearman"`` — **normalised Spearman rank correlation** ``(1 + rho) / 2`` in ``[0, 1]``, where
      ``rho`` is Spearman's correlation over the pixels of the two relevance maps (ties get their
      average rank).  1: same pixel ranking; 0.5: unrelated rankings; 0: reversed ranking.  A
      constant map has no ranking and scores 0.5.
    * ``"l2"`` — **normalised L2 distance** ``|| a/||a|| - b/||b|| ||_2``: each map is scaled to unit
      L2 norm per image, so the distance ignores overall scale; it lies in ``[0, 2]`` (``[0, sqrt 2]``
      for non-negative maps).  *Lower* is more consistent.  A zero map is left at zero.
    * ``"cosine"`` — cosine similarity of the two maps in ``[-1, 1]`` (``[0, 1]`` for non-negative
      maps); equals ``1 - l2**2 / 2``.
    * ``"topk"`` — intersection over union of the top-``k`` fraction of pixels of each map.
    * ``"distance"`` — the plain Euclidean distance ``||a - b||_2`` of the two maps, in the maps'
      own units (the follow-up paper's stability and fidelity errors); *lower* is more consistent.
    """
    a, b = torch.as_tensor(maps), torch.as_tensor(other)
    if a.shape != b.shape:
        raise ValueError(f"maps and other must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = pixel_values(a, reduce), pixel_values(b, reduce)
    if measure == "spearman":
        rho = rank_pearson(a, b)
        # a constant map carries no ranking: correlation 0 (neither agreement nor disagreement)
        return (1.0 + torch.nan_to_num(rho, nan=0.0)) / 2.0
    if measure in ("l2", "cosine"):
        ua = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        ub = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        return (ua - ub).norm(dim=-1) if measure == "l2" else (ua * ub).sum(-1)
    if measure == "distance":
        return (a - b).norm(dim=-1)
    if measure == "topk":
        if not 0 < k <= 1:
            raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
        m = max(1, int(round(k * a.shape[1])))
        ta = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(m, dim=1).indices, True)
        tb = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(m, dim=1).indices, True)
        return (ta & tb).sum(1).double() / (ta | tb).sum(1).double()
    raise ValueError(f"measure must be one of {CONSISTENCY}, got {measure!r}")


def prediction_agreement(logits_a: Tensor, logits_b: Tensor, *, chance_corrected: bool = False) -> float:
    """Fraction of samples on which two networks predict the same class (argmax of the logits).

    This is the x-axis of the generalization paper's Figure 1b (the rebuttal calls it a correlation
    of the argmax predictions and defines it as this fraction).  ``chance_corrected=True`` returns
    Cohen's kappa ``(p_o - p_e) / (1 - p_e)``, with ``p_e`` the agreement expected from the two
    networks' class frequencies alone: 0 at chance, 1 for identical predictions."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits_a and logits_b must have the same shape, got {tuple(logits_a.shape)} "
                         f"and {tuple(logits_b.shape)}")
    pa, pb = logits_a.argmax(-1), logits_b.argmax(-1)
    observed = float((pa == pb).double().mean())
    if not chance_corrected:
        return observed
    k = logits_a.shape[-1]
    fa = torch.bincount(pa, minlength=k).double() / pa.numel()
    fb = torch.bincount(pb, minlength=k).double() / pb.numel()
    expected = float((fa * fb).sum())
    return 1.0 if expected >= 1.0 else (observed - expected) / (1.0 - expected)
