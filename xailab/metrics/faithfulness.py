"""Faithfulness: does changing the pixels a map ranks highest (or lowest) change the model's output
the way the map says it should?

Convention (:mod:`xailab.metrics`): ``metric(maps, *, model, x, target, **options) -> (N,)``;
``maps`` are pixel maps ``(N, 1, H, W)`` or maps shaped like ``x`` (reduced over channels as each
function says). Pixels are ranked and replaced through :mod:`xailab.removal` (exact counts,
deterministic ties; ``fill=`` takes its names or a value).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xailab.attribution.gradients import as_baseline
from xailab.attribution.maps import reduce_channels
from xailab.attribution.targets import resolve_target
from xailab.metrics._maps import pixels
from xailab.removal import BLUR_SIGMA, feature_ranks, fill_value, n_removed, replace_features
from xailab.utils import check_finite, check_positive, require_eval

__all__ = ["completeness_gap", "deletion", "flip_test", "insertion", "perturbation_curves", "pixel_perturbation"]

MODES = ("insertion", "deletion")
SCORES = ("probability", "logit")


def pixel_scores(maps: Tensor, x: Tensor, reduce: str) -> Tensor:
    """Pixel maps ``(N, 1, H, W)`` from maps shaped like ``x`` (reduced with ``reduce``) or with one channel."""
    if maps.ndim == 3:
        maps = maps[:, None]
    if maps.shape[0] != x.shape[0] or maps.shape[2:] != x.shape[2:]:
        raise ValueError(f"maps must be shaped like x {tuple(x.shape)} or (N, 1, H, W), got {tuple(maps.shape)}")
    check_finite("maps", maps)
    return reduce_channels(maps, reduce=reduce) if maps.shape[1] > 1 else maps


def perturbation_curves(maps: Tensor, *, model: nn.Module, x: Tensor, target, mode: str = "deletion",
                        steps: int = 32, fill=None, score: str = "probability", relative: bool = True,
                        batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Insertion or deletion curves (Petsiuk et al. 2018) and their areas: ``(curves (N, steps + 1), auc (N,))``.

    Pixels are taken in the order of :func:`xailab.removal.feature_ranks` on the pixel ``maps``
    (decreasing value; ties by index); after step ``k`` the top ``floor(k/steps · P)`` pixels are
    changed. ``deletion``: starting from ``x``, they are replaced by the ``fill`` (default
    ``"zero"``); ``insertion``: starting from the ``fill`` (default ``"blur"``), they are copied in
    from ``x``. ``score``: the model's softmax ``"probability"`` of ``target`` or its ``"logit"``.
    ``relative=True`` divides both by the score of the full image (as in the SPADE rebuttal), so
    models that are more or less confident compare. The area is the trapezoid rule over the fraction.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    steps = int(check_positive("steps", steps, integer=True))
    batch_size = int(check_positive("batch_size", batch_size, integer=True))
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be (N, C, H, W) or (N, D), got {tuple(x.shape)}")
    check_finite("x", x)
    s = pixels(maps)
    n, p = s.shape
    if p != (x[0, 0].numel() if x.ndim == 4 else x.shape[1]) or s.shape[0] != x.shape[0]:
        raise ValueError(f"maps {tuple(maps.shape)} do not match the pixels of x {tuple(x.shape)}")
    require_eval(model, "perturbation_curves")
    t = resolve_target(target, x)
    if fill is None:
        fill = "blur" if mode == "insertion" and x.ndim == 4 else "zero"
    x = x.detach()
    other = torch.broadcast_to(fill_value(x, fill), x.shape)
    rank = feature_ranks(s.to(x.device), reduce="sum")
    counts = torch.tensor([n_removed(k / steps, p) for k in range(steps + 1)], device=x.device)
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
                resolve_target(t, x, num_classes=out.shape[1])
            vals = out.softmax(1) if score == "probability" else out
            scores[start:start + len(r)] = vals.gather(1, t[i][:, None])[:, 0].double()
        curves = scores.view(n, steps + 1)
        if relative:
            full = model(x)
            full = (full.softmax(1) if score == "probability" else full).gather(1, t[:, None]).double()
            curves = curves / full
    frac = counts.double() / p
    auc = torch.trapezoid(curves, frac, dim=1)
    return curves.float(), auc.float()


def insertion(maps: Tensor, *, model: nn.Module, x: Tensor, target, steps: int = 32, fill="blur", **options) -> Tensor:
    """Area under the insertion curve per image (higher is better); see :func:`perturbation_curves`."""
    return perturbation_curves(maps, model=model, x=x, target=target, mode="insertion", steps=steps, fill=fill,
                               **options)[1]


def deletion(maps: Tensor, *, model: nn.Module, x: Tensor, target, steps: int = 32, fill="zero", **options) -> Tensor:
    """Area under the deletion curve per image (lower is better); see :func:`perturbation_curves`."""
    return perturbation_curves(maps, model=model, x=x, target=target, mode="deletion", steps=steps, fill=fill,
                               **options)[1]


@torch.no_grad()
def pixel_perturbation(maps: Tensor, *, model: nn.Module, x: Tensor, target, fractions=(0.1, 0.3, 0.5),
                       most_salient: bool = False, fill="image_mean", blur_sigma: float = BLUR_SIGMA,
                       reduce: str = "abs-sum") -> Tensor:
    """FullGrad's pixel-perturbation test: replace the k % *least* salient pixels of each image
    (``most_salient=True``: the most salient) and measure ``|f(x') - f(x)| / |f(x)|``, the relative
    change of the ``target`` logit, averaged over ``fractions``: ``(N,)``. Removing unimportant
    pixels should change little: lower is better for least-salient removal, higher for most-salient.

    ``maps``: ``(N, 1, H, W)`` pixel maps, or shaped like ``x`` (reduced over channels with
    ``reduce``). ``fill``: a name of :data:`xailab.removal.FILLS` (default ``"image_mean"``, each
    image's channel means; ``"blur"`` with std ``blur_sigma`` px has no sharp edges) or a value.
    """
    require_eval(model, "pixel_perturbation")
    scores = pixel_scores(maps, x, reduce)
    t = resolve_target(target, x)
    base = model(x).gather(1, t[:, None]).squeeze(1)
    rows = []
    for k in fractions:
        xk = replace_features(x, scores, k, top=most_salient, fill=fill, blur_sigma=blur_sigma)
        out = model(xk).gather(1, t[:, None]).squeeze(1)
        rows.append((out - base).abs() / base.abs().clamp_min(torch.finfo(base.dtype).tiny))
    return torch.stack(rows).mean(0)


@torch.no_grad()
def flip_test(maps: Tensor, *, model: nn.Module, x: Tensor, target, contrast, contrast_maps: Tensor | None = None,
              fractions=(0.05, 0.1, 0.2), fill=0.0) -> Tensor:
    """Digit-flipping test (Shrikumar et al. 2017): erase the pixels that most support class
    ``target`` (a) over class ``contrast`` (b) and measure how far the logit difference
    ``f_a - f_b`` falls, averaged over ``fractions``: ``(N,)``.

    Pixels are ranked by ``maps - contrast_maps`` (``contrast_maps=None``: by ``maps`` alone), both
    ``(N, 1, H, W)`` or shaped like ``x`` (channels summed, signs kept); the top k % are set to
    ``fill`` (default 0, the digits' background). Larger means the map told which pixels make an
    ``a`` rather than a ``b``.
    """
    require_eval(model, "flip_test")
    score = pixel_scores(maps, x, "sum") - (0 if contrast_maps is None else pixel_scores(contrast_maps, x, "sum"))
    ta, tb = resolve_target(target, x), resolve_target(contrast, x)

    def margin(z):
        out = model(z)
        return out.gather(1, ta[:, None]).squeeze(1) - out.gather(1, tb[:, None]).squeeze(1)

    m0 = margin(x)
    return torch.stack([m0 - margin(replace_features(x, score, k, top=True, reduce="sum", fill=fill))
                        for k in fractions]).mean(0)


@torch.no_grad()
def completeness_gap(maps: Tensor, *, model: nn.Module, x: Tensor, target, baseline=0.0) -> Tensor:
    """Per sample ``|Σ maps − (f(x) − f(b))| / |f(x) − f(b)|`` (lower is better): how far a map that
    claims completeness (Integrated Gradients from the baseline ``b``) is from summing to the change
    in the target logit."""
    t = resolve_target(target, x)
    base = as_baseline(baseline, x)
    out_x, out_b = model(x), model(base)
    resolve_target(t, x, num_classes=out_x.shape[1])
    delta = out_x.gather(1, t[:, None])[:, 0] - out_b.gather(1, t[:, None])[:, 0]
    total = maps.flatten(1).sum(1)
    return (total - delta).abs() / delta.abs().clamp_min(torch.finfo(delta.dtype).tiny)
