"""Faithfulness: does changing the pixels a map ranks highest (or lowest) change the model's output
the way the map says it should?

Convention: ``metric(model, x, target, maps, **options)``; ``maps`` are pixel maps ``(N, 1, H, W)``
or attributions shaped like ``x`` (reduced over channels as each function says). Removed pixels
are filled through :mod:`xailab.removal` (``fill=`` takes its names or a value).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xailab.attribution.maps import reduce_channels
from xailab.metrics._maps import pixels
from xailab.removal import fill_value, replace_features
from xailab.utils import as_targets, check_finite, check_positive, require_eval

__all__ = ["insertion_deletion", "pixel_perturbation", "flip_test"]


def pixel_scores(maps: Tensor, x: Tensor, reduce: str) -> Tensor:
    """Pixel maps ``(N, 1, H, W)`` from maps shaped like ``x`` (reduced with ``reduce``) or with one channel."""
    if maps.ndim == 3:
        maps = maps[:, None]
    if maps.shape[0] != x.shape[0] or maps.shape[2:] != x.shape[2:]:
        raise ValueError(f"maps must be shaped like x {tuple(x.shape)} or (N, 1, H, W), got {tuple(maps.shape)}")
    check_finite("maps", maps)
    return reduce_channels(maps, how=reduce) if maps.shape[1] > 1 else maps


def insertion_deletion(model: nn.Module, x: Tensor, target, maps: Tensor, *, steps: int = 32,
                       fill=None, mode: str = "deletion", batch_size: int = 256,
                       score: str = "probability", normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Insertion or deletion curves (Petsiuk et al. 2018) and their areas.

    Pixels are ordered by decreasing ``maps`` (pixel maps; stable order for ties). ``deletion``:
    starting from ``x``, the top ``k/steps`` fraction of pixels (all channels) is replaced by the
    ``fill`` (default ``"zero"``); ``insertion``: starting from the ``fill`` (default ``"blur"``,
    a Gaussian blur of ``x``), they are copied in from ``x``. ``score``: the model's softmax
    ``"probability"`` of ``target`` (default) or its ``"logit"``. The ``N × (steps + 1)`` images go
    through the model ``batch_size`` at a time.

    Returns ``curves (N, steps + 1)`` and ``auc (N,)`` (trapezoid rule over the fraction in [0, 1]).
    ``normalize=True`` (default) divides both by the score of the full image ``x``, as in the SPADE
    rebuttal, so models that are more or less confident compare; ``False`` gives raw scores.
    Good maps give high insertion AUC and low deletion AUC.
    """
    if mode not in ("insertion", "deletion"):
        raise ValueError(f"mode must be 'insertion' or 'deletion', got {mode!r}")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    steps = int(check_positive("steps", steps, integer=True))
    batch_size = int(check_positive("batch_size", batch_size, integer=True))
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be (N, C, H, W) or (N, D), got {tuple(x.shape)}")
    check_finite("x", x)
    s = pixels(maps)
    n, p = s.shape
    if p != (x[0, 0].numel() if x.ndim == 4 else x.shape[1]) or s.shape[0] != x.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)} do not match the pixels of x {tuple(x.shape)}")
    require_eval(model, "insertion_deletion")
    t = as_targets(target, n, device=x.device)
    if fill is None:
        fill = "blur" if mode == "insertion" and x.ndim == 4 else "zero"
    x = x.detach()
    other = torch.broadcast_to(fill_value(x, fill), x.shape)
    s = s.to(x.device)
    order = torch.sort(s, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(p, device=x.device).expand(n, p))
    counts = torch.round(torch.linspace(0, p, steps + 1, device=x.device)).long()
    # row r of the virtual batch: sample r // (steps+1) with the top counts[r % (steps+1)] pixels changed
    total = n * (steps + 1)
    scores = torch.empty(total, dtype=torch.float64, device=x.device)
    shape = (-1, 1) + tuple(x.shape[2:]) if x.ndim == 4 else (-1, p)
    with torch.no_grad():
        for start in range(0, total, batch_size):
            r = torch.arange(start, min(start + batch_size, total), device=x.device)
            i, k = r // (steps + 1), r % (steps + 1)
            changed = (rank[i] < counts[k][:, None]).view(shape)
            src, dst = (x[i], other[i]) if mode == "insertion" else (other[i], x[i])
            out = model(torch.where(changed, src, dst))
            if out.ndim != 2:
                raise ValueError(f"the model must return scores (N, num_classes), got {tuple(out.shape)}")
            if start == 0:
                as_targets(t, n, num_classes=out.shape[1])
            vals = out.softmax(1) if score == "probability" else out
            scores[start:start + len(r)] = vals.gather(1, t[i][:, None])[:, 0].double()
        curves = scores.view(n, steps + 1)
        if normalize:
            full = model(x)
            full = (full.softmax(1) if score == "probability" else full).gather(1, t[:, None]).double()
            curves = curves / full
    frac = counts.double() / p
    auc = torch.trapezoid(curves, frac, dim=1)
    return curves.float(), auc.float()


@torch.no_grad()
def pixel_perturbation(model: nn.Module, x: Tensor, target, maps: Tensor, fractions=(0.1, 0.3, 0.5), *,
                       most_salient: bool = False, fill="image_mean", blur_sigma: float = 2.0,
                       reduce: str = "abs-sum") -> Tensor:
    """FullGrad's pixel-perturbation test: replace the k % *least* salient pixels of each image
    (``most_salient=True``: the most salient) and measure ``|f(x') - f(x)| / |f(x)|``, the relative
    change of the ``target`` logit. Removing unimportant pixels should change little: lower is
    better for least-salient removal, higher for most-salient removal.

    ``maps``: ``(N, 1, H, W)`` pixel maps, or shaped like ``x`` (reduced over channels with
    ``reduce``; the choice is the caller's). ``fill``: a name of :data:`xailab.removal.FILLS`
    (default ``"image_mean"``, each image's channel means; ``"blur"`` with std ``blur_sigma`` px
    has no sharp edges) or a value. Pixels are ranked with :func:`xailab.removal.removal_mask`
    (exact counts, deterministic ties). Returns ``(len(fractions), N)``.
    """
    require_eval(model, "pixel_perturbation")
    scores = pixel_scores(maps, x, reduce)
    t = as_targets(target, x.shape[0], device=x.device)
    base = model(x).gather(1, t[:, None]).squeeze(1)
    rows = []
    for k in fractions:
        xk = replace_features(x, scores, k, top=most_salient, fill=fill, blur_sigma=blur_sigma)
        out = model(xk).gather(1, t[:, None]).squeeze(1)
        rows.append((out - base).abs() / base.abs().clamp_min(torch.finfo(base.dtype).tiny))
    return torch.stack(rows)


@torch.no_grad()
def flip_test(model: nn.Module, x: Tensor, target, maps: Tensor, *, contrast, contrast_maps: Tensor | None = None,
              fractions=(0.05, 0.1, 0.2), fill=0.0) -> Tensor:
    """Digit-flipping test (Shrikumar et al. 2017): erase the pixels that most support class
    ``target`` (a) over class ``contrast`` (b) and measure how far the logit difference
    ``f_a - f_b`` falls.

    Pixels are ranked by ``maps - contrast_maps`` (``contrast_maps=None``: by ``maps`` alone), both
    ``(N, 1, H, W)`` or shaped like ``x`` (channels summed, signs kept); the top k % are set to
    ``fill`` (default 0, the digits' background). Returns the drop ``(f_a - f_b)(x) - (f_a - f_b)(x')``
    per fraction and image, ``(len(fractions), N)``: larger means the map told which pixels make an
    ``a`` rather than a ``b``.
    """
    require_eval(model, "flip_test")
    score = pixel_scores(maps, x, "sum") - (0 if contrast_maps is None else pixel_scores(contrast_maps, x, "sum"))
    ta = as_targets(target, x.shape[0], device=x.device)
    tb = as_targets(contrast, x.shape[0], device=x.device)

    def margin(z):
        out = model(z)
        return out.gather(1, ta[:, None]).squeeze(1) - out.gather(1, tb[:, None]).squeeze(1)

    m0 = margin(x)
    return torch.stack([m0 - margin(replace_features(x, score, k, top=True, reduce="sum", fill=fill))
                        for k in fractions])
