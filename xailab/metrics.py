"""Metrics on saliency maps shared by several notebooks.

Maps here are PIXEL maps: ``(N, 1, H, W)``, ``(N, H, W)`` or tabular ``(N, D)``. Reducing an
attribution's channels is the caller's explicit choice (``xailab.attribution.reduce_channels``);
a multi-channel map is refused instead of being reduced silently.

- :func:`saliency_auc`: ROC-AUC of the map as a detector of the ground-truth mask;
- :func:`pointing_game`: is the map's maximum inside the mask (Zhang et al. 2016);
- :func:`insertion_deletion`: the score while pixels are inserted/deleted in saliency order
  (Petsiuk et al. 2018), with the AUC optionally divided by the full-image score;
- :func:`rank_correlation`: Spearman correlation between two maps;
- :func:`ssim`: structural similarity of two maps (for the sanity check);
- :func:`randomization_check`: Adebayo et al. (2018) cascading model-parameter randomisation.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.attribution import attribute, get_method
from xailab.attribution.maps import average_ranks, reduce_channels
from xailab.utils import as_targets, check_positive, require_eval
from xailab.utils import progress as _progress


def _pixels(maps: Tensor, what: str = "saliency") -> Tensor:
    """A pixel map as ``(N, P)``: ``(N, 1, H, W)``, ``(N, H, W)`` or ``(N, D)``."""
    if not isinstance(maps, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim == 4 and maps.shape[1] != 1:
        raise ValueError(f"{what} has {maps.shape[1]} channels; reduce them first with "
                         "xailab.attribution.reduce_channels (an explicit choice: abs-sum, sum, max-abs)")
    if maps.ndim not in (2, 3, 4):
        raise ValueError(f"{what} must be a pixel map (N, 1, H, W), (N, H, W) or (N, D); got {tuple(maps.shape)}")
    return maps.detach().flatten(1)


def _pair(a: Tensor, b: Tensor, names=("saliency", "mask")) -> tuple[Tensor, Tensor]:
    fa, fb = _pixels(a, names[0]), _pixels(b, names[1])
    if fa.shape != fb.shape:
        raise ValueError(f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} do not cover the same pixels")
    return fa, fb


def saliency_auc(saliency: Tensor, mask: Tensor) -> Tensor:
    """Per sample ROC-AUC of the saliency as a score for "pixel is in the mask" (``(N,)``).

    Computed as the Mann-Whitney statistic with ties given average ranks, so it equals
    ``sklearn.metrics.roc_auc_score`` (a tie between a mask and a background pixel counts 1/2).
    NaN for a sample whose mask is all 0 or all 1.
    """
    s, m = _pair(saliency, mask)
    m = m > 0.5
    ranks = average_ranks(s.double())
    pos = m.sum(1).double()
    neg = m.shape[1] - pos
    u = (ranks * m).sum(1) - pos * (pos + 1) / 2
    return (u / (pos * neg)).float()


def _disk(radius: int, device) -> Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()[None, None]


def pointing_game(saliency: Tensor, mask: Tensor, tolerance: int = 0) -> Tensor:
    """Per sample: does the map's maximum fall inside the mask (or within ``tolerance`` pixels of
    it, Euclidean distance)? ``(N,)`` bool. Ties at the maximum: a hit only if EVERY maximal
    pixel is inside, so a constant map does not score by luck."""
    s, m = _pair(saliency, mask)
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
    return (top & ~hit_zone).sum(1) == 0


def _blur(x: Tensor, sigma: float = 5.0) -> Tensor:
    """Gaussian blur (separable, reflect padding), the insertion baseline of Petsiuk et al."""
    radius = max(0, min(int(2 * sigma), x.shape[2] - 1, x.shape[3] - 1))
    if radius == 0:
        return x.clone()
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    rows = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)


def _start(baseline, x: Tensor) -> Tensor:
    if isinstance(baseline, str):
        if baseline == "blur":
            if x.ndim != 4:
                raise ValueError("baseline='blur' needs images (N, C, H, W)")
            return _blur(x)
        if baseline == "mean":
            return x.flatten(1).mean(1).view((-1,) + (1,) * (x.ndim - 1)).expand_as(x)
        raise ValueError(f"baseline must be a number, a tensor, 'blur' or 'mean'; got {baseline!r}")
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    return torch.broadcast_to(b, x.shape)


def insertion_deletion(model: nn.Module, x: Tensor, saliency: Tensor, target, *, steps: int = 32,
                       baseline=None, mode: str = "deletion", batch_size: int = 256,
                       score: str = "probability", normalize: bool = True) -> tuple[Tensor, Tensor]:
    """Insertion or deletion curves (Petsiuk et al. 2018) and their areas.

    Pixels are ordered by decreasing saliency (stable order for ties). ``deletion``: starting from
    ``x``, the top ``k/steps`` fraction of pixels (all channels) is replaced by ``baseline``
    (default 0); ``insertion``: starting from ``baseline`` (default ``"blur"``, a Gaussian blur of
    ``x``), they are copied in from ``x``. ``score``: the model's softmax ``"probability"`` of
    ``target`` (default) or its ``"logit"``. The ``N × (steps + 1)`` images go through the model
    ``batch_size`` at a time.

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
    s = _pixels(saliency)
    n, p = s.shape
    if p != (x[0, 0].numel() if x.ndim == 4 else x.shape[1]) or s.shape[0] != x.shape[0]:
        raise ValueError(f"saliency {tuple(saliency.shape)} does not match the pixels of x {tuple(x.shape)}")
    require_eval(model, "insertion_deletion")
    t = as_targets(target, n, device=x.device)
    if baseline is None:
        baseline = "blur" if mode == "insertion" and x.ndim == 4 else 0.0
    x = x.detach()
    other = _start(baseline, x)
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


def rank_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Spearman correlation of two maps, per sample (``(N,)``); ties get average ranks (as
    ``scipy.stats.spearmanr``). NaN when a map is constant."""
    fa, fb = _pair(a, b, ("a", "b"))
    ra, rb = average_ranks(fa.double()), average_ranks(fb.double())
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    corr = (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1))
    return corr.float()


def ssim(a: Tensor, b: Tensor, window: int = 7) -> Tensor:
    """Structural similarity of two image maps (``(N,)``), each min-max normalised to [0, 1]
    first; ``window × window`` uniform windows, constants of Wang et al. (2004) for range 1."""
    fa, fb = _pair(a, b, ("a", "b"))
    if a.ndim == 2:
        raise ValueError("ssim needs image maps (N, 1, H, W) or (N, H, W)")
    shape = (a.shape[0], 1) + tuple(a.shape[-2:])

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


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, from the output back to the input (the order
    of the cascade). Registration order is taken as forward order."""
    names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    return names[::-1]


def _reinitialise(module: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                p.normal_(0, 0.05)


def randomization_check(model: nn.Module, x: Tensor, target, method: str | Callable = "gradient", *,
                        layers: Sequence[str] | None = None, seed: int = 0, progress: bool = True,
                        **options) -> list[dict]:
    """Adebayo et al. (2018) cascading model-parameter randomisation.

    On a deep copy of ``model``, re-initialise the layers one by one from the top (``layers``:
    module names in cascade order, default :func:`parameter_layers`, output first), each with
    its ``reset_parameters()`` seeded by ``seed + step``, and after each step recompute the map
    with ``method`` (``options`` go to it). Each step's dict: ``layer``, ``step`` (1-based),
    ``spearman_abs`` and ``spearman`` (mean rank correlation with the original map, channels
    reduced by abs-sum resp. sum), ``ssim`` (of the abs maps; NaN for tabular inputs), and
    the per-sample values under ``..._per_sample``. ``progress=False`` hides the progress bar.
    A map that explains the model should decorrelate quickly; one that does not change (an edge
    detector) fails the sanity check.
    """
    fn = method if callable(method) else get_method(method)
    names = list(parameter_layers(model) if layers is None else layers)
    known = dict(model.named_modules())
    missing = [n for n in names if n not in known or not n]
    if missing:
        raise ValueError(f"unknown layer(s) {missing}; layers with parameters: {', '.join(parameter_layers(model))}")

    def maps(m):
        a = attribute(m, x, target, method=fn, **options).detach()
        return reduce_channels(a, "abs-sum"), reduce_channels(a, "sum")

    abs0, signed0 = maps(model)
    image = abs0.ndim == 4
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    results = []
    for step, name in enumerate(_progress(names, progress, desc="randomising", leave=False), start=1):
        _reinitialise(modules[name], seed + step)
        abs_k, signed_k = maps(randomised)
        row = {"layer": name, "step": step,
               "spearman_abs_per_sample": rank_correlation(abs0, abs_k),
               "spearman_per_sample": rank_correlation(signed0, signed_k),
               "ssim_per_sample": ssim(abs0, abs_k) if image else torch.full((x.shape[0],), float("nan"))}
        for key in ("spearman_abs", "spearman", "ssim"):
            row[key] = float(row[f"{key}_per_sample"].nanmean())
        results.append(row)
    return results
