"""Removing features from a batch: which features (a ranking), and what a removed feature becomes
(the fill). ROAR, pixel perturbation, insertion/deletion, digit flipping and SPADE's evaluation
all remove features through this module.

**Ranking.** A *feature* is a pixel (all channels of one spatial position) when
``rank_by="pixel"`` and a single tensor element when ``rank_by="element"`` (the ROAR reference
implementation ranks elements). For tabular inputs ``(N, D)`` both coincide: a feature is one
column. Pixel scores are the relevance reduced over channels with
:func:`xailab.attribution.reduce_channels` (``reduce`` = ``"abs-sum" | "sum" | "max-abs"``);
element scores read each value through the same rule (``"abs-sum"`` / ``"max-abs"`` rank by
``|r|``, ``"sum"`` by the signed value, so squaring a map then matters). Exactly
``floor(fraction * F)`` features are removed (``F`` features per sample); ties are broken by a
stable sort, so among equal scores the lower flat index ranks first.

**Fill.** What a removed feature becomes, by name (:data:`FILLS`):

- ``"dataset_mean"`` — the per-channel mean of a ``reference`` batch (ROAR passes the training
  set; without one, the batch itself);
- ``"image_mean"`` — each image's own per-channel mean;
- ``"zero"`` — 0 (black for images in [0, 1]; the digits' background);
- ``"blur"`` — a Gaussian blur of the image itself (std ``blur_sigma`` px): no sharp edges;
- ``"noisy_linear"`` — ROAD's *noisy linear imputation* (Rong et al., ICML 2022): every removed
  pixel becomes the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal, renormalised at
  the border), all removed pixels solved jointly as one sparse linear system per batch, plus
  Gaussian noise of std ``noise`` (absolute, seeded). The removed region blends into its
  surroundings, so its *shape* stops showing in the image;

or an explicit value: a number, one value per channel ``(C,)``, or a tensor shaped like one sample
or like the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from xailab.attribution.maps import REDUCTIONS, reduce_channels
from xailab.utils import check_finite, check_fraction, check_positive

RANK_BY = ("pixel", "element")
FILLS = ("dataset_mean", "image_mean", "zero", "blur", "noisy_linear")
#: Default std (pixels) of the ``"blur"`` fill.
BLUR_SIGMA = 5.0

#: Neighbour offsets (row, col) and weights of the noisy linear imputation (ROAD's).
NEIGHBOURS = (((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
              ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12))
#: Default noise std of the noisy linear imputation (ROAD's, for images in [0, 1]).
IMPUTATION_NOISE = 0.01

__all__ = ["RANK_BY", "FILLS", "BLUR_SIGMA", "NEIGHBOURS", "IMPUTATION_NOISE", "n_removed", "feature_scores",
           "feature_ranks", "removal_mask", "blur", "dataset_mean", "fill_value", "fill_removed", "noisy_linear_imputation",
           "replace_features", "remove", "keep"]


# --------------------------------------------------------------------------- which features
def n_removed(fraction: float, n_features: int) -> int:
    """``floor(fraction * n_features)`` computed robustly: ``0.3 * 10`` is 3, not 2."""
    fraction = check_fraction("fraction", fraction)
    # round first to absorb binary error (0.3 * 10 = 2.9999999999999996), then floor
    return min(n_features, math.floor(round(fraction * n_features, 9)))


def _check_pair(x: Tensor, maps: Tensor) -> None:
    if not isinstance(x, Tensor) or not isinstance(maps, Tensor):
        raise TypeError(f"x and maps must be tensors, got {type(x).__name__} and {type(maps).__name__}")
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be a batch (N, C, H, W) or (N, D), got shape {tuple(x.shape)}")
    ok = maps.shape == x.shape or (
        x.ndim == 4 and maps.ndim == 4 and maps.shape[1] == 1
        and maps.shape[0] == x.shape[0] and maps.shape[2:] == x.shape[2:])
    if not ok:
        raise ValueError(f"maps must have the shape of x {tuple(x.shape)} (or one channel), got {tuple(maps.shape)}")
    check_finite("x", x)
    check_finite("maps", maps)


def feature_scores(maps: Tensor, rank_by: str = "pixel", reduce: str = "abs-sum") -> Tensor:
    """Scores ``(N, F)`` that rank the features (higher = more relevant); see the module docstring."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}, got {rank_by!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    check_finite("maps", maps)
    r = maps.detach().float()
    if rank_by == "pixel" and r.ndim == 4:
        if r.shape[1] > 1:
            r = reduce_channels(r, reduce=reduce)
        elif reduce != "sum":
            r = r.abs()
    elif reduce != "sum":
        r = r.abs()
    return r.reshape(r.shape[0], -1)


def feature_ranks(maps: Tensor, rank_by: str = "pixel", reduce: str = "abs-sum") -> Tensor:
    """The rank of every feature ``(N, F)``: 0 for the most relevant; among equal scores the lower
    flat index ranks first (a stable sort). Every removal in xailab is ``rank < k`` (or ``>= F - k``)."""
    scores = feature_scores(maps, rank_by, reduce)
    n, f = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return torch.empty_like(order).scatter_(1, order, torch.arange(f, device=order.device).expand(n, f))


def removal_mask(maps: Tensor, fraction: float, *, rank_by: str = "pixel", reduce: str = "abs-sum",
                 top: bool = True) -> Tensor:
    """Boolean mask of the features to replace, shaped like one feature map.

    ``top=True`` marks the ``floor(fraction * F)`` highest-ranked features (ROAR); ``top=False``
    the same number of lowest-ranked ones, in the same ranking (ties included), so
    ``removal_mask(m, f, top=False)`` equals ``~removal_mask(m, 1 - f)`` up to rounding of the
    count. The mask has shape ``(N, 1, H, W)`` for pixel ranking of images and the shape of
    ``maps`` otherwise.
    """
    ranks = feature_ranks(maps, rank_by, reduce)
    n, f = ranks.shape
    k = n_removed(fraction, f)
    flat = ranks < k if top else ranks >= f - k
    if rank_by == "pixel" and maps.ndim == 4:
        return flat.reshape(n, 1, *maps.shape[2:])
    return flat.reshape(maps.shape)


# --------------------------------------------------------------------------- what they become
def blur(x: Tensor, sigma: float = BLUR_SIGMA) -> Tensor:
    """Gaussian blur of images ``(N, C, H, W)`` with std ``sigma`` px: separable, reflect padding,
    kernel truncated at ``±int(2 sigma)`` px (and at the image size)."""
    if x.ndim != 4:
        raise ValueError(f"blur needs images (N, C, H, W), got shape {tuple(x.shape)}")
    sigma = check_positive("blur_sigma", sigma)
    radius = max(0, min(int(2 * sigma), x.shape[2] - 1, x.shape[3] - 1))
    if radius == 0:
        return x.clone()
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    rows = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1),
                    groups=c)
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1),
                    groups=c)


def dataset_mean(x: Tensor) -> Tensor:
    """Per-channel mean of a batch (float32): ``(C,)`` for images ``(N, C, H, W)``, ``(D,)`` for ``(N, D)``."""
    dims = [0] + list(range(2, x.ndim))
    return x.float().mean(dim=dims)


def _as_value(x: Tensor, value) -> Tensor:
    """An explicit fill value as a tensor broadcastable to ``x``."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    channels = x.shape[1]
    if v.ndim == 1 and v.shape[0] == channels:
        return v.view(1, channels, 1, 1) if x.ndim == 4 else v.view(1, channels)
    if v.ndim == 0 or v.shape == x.shape[1:] or v.shape == x.shape:
        return v
    raise ValueError(f"fill must be a name in {FILLS}, a number, one value per channel ({channels},) or a "
                     f"tensor shaped like one sample {tuple(x.shape[1:])} or the batch, got shape {tuple(v.shape)}")


def fill_value(x: Tensor, fill="dataset_mean", *, reference: Tensor | None = None,
               blur_sigma: float = BLUR_SIGMA) -> Tensor:
    """What the removed features of ``x`` become, as a tensor broadcastable to ``x`` (see the
    module docstring for the names). ``"noisy_linear"`` depends on which pixels are removed: use
    :func:`fill_removed`."""
    if isinstance(fill, str):
        if fill == "noisy_linear":
            raise ValueError("fill='noisy_linear' depends on which pixels are removed; use fill_removed(x, removed, "
                             "'noisy_linear') or noisy_linear_imputation")
        if fill == "dataset_mean":
            return _as_value(x, dataset_mean(x if reference is None else reference))
        if fill == "image_mean":
            return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True) if x.ndim == 4 else x.mean(1, keepdim=True)
        if fill == "zero":
            return torch.zeros((), dtype=x.dtype, device=x.device)
        if fill == "blur":
            return blur(x, blur_sigma)
        raise ValueError(f"fill must be one of {FILLS}, a number or a tensor, got {fill!r}")
    if isinstance(fill, bool):
        raise ValueError(f"fill must be one of {FILLS}, a number or a tensor, got {fill!r}")
    return _as_value(x, fill)


def fill_removed(x: Tensor, removed: Tensor, fill="dataset_mean", *, noise: float = IMPUTATION_NOISE,
                 seed: int = 0, **options) -> Tensor:
    """``x`` with the features marked in ``removed`` (a boolean mask broadcastable to ``x``)
    replaced by :func:`fill_value` (or by :func:`noisy_linear_imputation`, with its ``noise`` and
    ``seed``); the others are left bit-identical."""
    if isinstance(fill, str) and fill == "noisy_linear":
        return noisy_linear_imputation(x, removed, noise=noise, seed=seed)
    return torch.where(removed.to(x.device), fill_value(x, fill, **options), x)


def _pixel_mask(x: Tensor, removed: Tensor) -> Tensor:
    """A removal mask as ``(N, H, W)`` bool: one channel, or the same for every channel."""
    if not isinstance(removed, Tensor) or removed.dtype != torch.bool:
        raise TypeError(f"removed must be a boolean tensor, got {getattr(removed, 'dtype', type(removed).__name__)}")
    m = removed.to(x.device)
    if m.ndim == 4 and m.shape[1] > 1:
        if not bool((m == m[:, :1]).all()):
            raise ValueError("noisy_linear imputes whole pixels: removed must be the same for every channel")
        m = m[:, :1]
    if m.ndim == 4:
        m = m[:, 0]
    if m.ndim != 3 or m.shape[0] not in (1, x.shape[0]) or m.shape[1:] != x.shape[2:]:
        raise ValueError(f"removed must be a pixel mask (N, 1, H, W) or (N, H, W) for x {tuple(x.shape)}, "
                         f"got {tuple(removed.shape)}")
    return m.expand(x.shape[0], -1, -1)


def noisy_linear_imputation(x: Tensor, removed: Tensor, *, noise: float = IMPUTATION_NOISE, seed: int = 0) -> Tensor:
    """ROAD's noisy linear imputation of the ``removed`` pixels of images ``x (N, C, H, W)``.

    Each removed pixel ``p`` satisfies ``sum_q w_q (v_p - v_q) = 0`` over its in-image neighbours
    ``q`` (:data:`NEIGHBOURS`), where ``v_q`` is the image value of a kept neighbour and the unknown
    value of a removed one: a discrete Laplace infill with the kept pixels as boundary values. All
    removed pixels of the batch form one sparse symmetric positive-definite system (block diagonal,
    one block per image, one right-hand side per channel). With the unknowns in row-major order its
    bandwidth is at most ``W + 1``, so it is solved in float64 as one banded Cholesky system
    (LAPACK ``pbsv`` through ``scipy.linalg.solveh_banded``). Gaussian noise of std ``noise``
    (absolute, from a generator seeded with ``seed``) is then added to the imputed pixels only;
    kept pixels are returned bit-identical. An image with every pixel removed has no boundary
    values: its pixels get the per-channel mean of the batch's kept pixels.
    """
    import numpy as np
    from scipy.linalg import solveh_banded

    if not isinstance(x, Tensor) or x.ndim != 4:
        raise ValueError(f"noisy_linear_imputation needs images (N, C, H, W), got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")
    check_finite("x", x)
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    n, c, h, w = x.shape
    m = _pixel_mask(x, removed).cpu().numpy().copy()
    all_removed = m.reshape(n, -1).all(1)
    solvable = m & ~all_removed[:, None, None]                # images with a boundary to impute from
    out = x.detach().clone()
    if not m.any():
        return out
    xs = x.detach().to("cpu", torch.float64).numpy()
    unknown = solvable.reshape(-1)                            # image-major, row-major
    var = np.full(unknown.shape, -1, dtype=np.int64)
    n_var = int(unknown.sum())
    var[unknown] = np.arange(n_var)
    img, row, col = np.nonzero(solvable)                      # every unknown, in variable order
    band = np.zeros((w + 2, n_var))                           # lower band: band[i - j, j] = A[i, j]
    rhs = np.zeros((n_var, c))
    for (dr, dc), wt in NEIGHBOURS:
        r2, c2 = row + dr, col + dc
        inside = (r2 >= 0) & (r2 < h) & (c2 >= 0) & (c2 < w)
        k = np.flatnonzero(inside)
        band[0, k] += wt                                       # diagonal: in-image neighbour weights
        flat = (img[k] * h + r2[k]) * w + c2[k]
        other = var[flat]
        below = other >= 0
        lower = k[below][other[below] < k[below]]              # each symmetric pair once, from its lower end
        lower_other = var[(img[lower] * h + r2[lower]) * w + c2[lower]]
        band[lower - lower_other, lower_other] -= wt
        known = k[~below]
        rhs[known] += wt * xs[img[known], :, r2[known], c2[known]]
    values = np.zeros((c, int(m.sum())))
    if n_var:
        solved = solveh_banded(band[: int(np.flatnonzero(band.any(1)).max()) + 1], rhs, lower=True,
                               check_finite=False)
    removed_flat = m.reshape(-1)
    order = var[np.flatnonzero(removed_flat)]                  # -1 for pixels of fully removed images
    if n_var:
        values[:, order >= 0] = solved[order[order >= 0]].T
    if all_removed.any():                                     # nothing to impute from: the batch's kept mean
        kept = ~m
        mean = xs.transpose(1, 0, 2, 3)[:, kept].mean(1) if kept.any() else np.zeros(c)
        values[:, order < 0] = mean[:, None]
    values = torch.from_numpy(values)                         # (C, removed pixels): channel-major, as ROAD draws noise
    if noise > 0:
        g = torch.Generator().manual_seed(int(seed))
        values = values + noise * torch.randn(values.shape, generator=g, dtype=torch.float64)
    flat_out = out.permute(1, 0, 2, 3).reshape(c, -1)        # a copy, (C, N*H*W)
    flat_out[:, torch.from_numpy(np.flatnonzero(removed_flat))] = values.to(out.dtype).to(out.device)
    return flat_out.reshape(c, n, h, w).permute(1, 0, 2, 3).contiguous()


# --------------------------------------------------------------------------- both
def replace_features(x: Tensor, maps: Tensor, fraction: float, *, top: bool = True, fill="dataset_mean",
                     rank_by: str = "pixel", reduce: str = "abs-sum", **fill_options) -> Tensor:
    """Replace the top (``top=True``, ROAR) or bottom ``floor(fraction * F)`` features of each sample.

    ROAR uses ``top=False`` for its ``kar`` variant, so that every variant is indexed by the
    fraction *removed*: keeping the top 10 % is ``top=False`` at 0.9.
    """
    _check_pair(x, maps)
    mask = removal_mask(maps, fraction, rank_by=rank_by, reduce=reduce, top=top)
    return fill_removed(x, mask, fill, **fill_options)


def remove(x: Tensor, maps: Tensor, fraction: float, fill="dataset_mean", rank_by: str = "pixel",
           reduce: str = "abs-sum", **fill_options) -> Tensor:
    """Replace the top ``floor(fraction * F)`` features of each sample (ROAR).

    ``x``: ``(N, C, H, W)`` or ``(N, D)``; ``maps``: same shape (or one channel for images).
    ``fill``: a name in :data:`FILLS` or a value (default: the per-channel mean of ``reference``,
    pass the *training set* there as ROAR does, else of ``x`` itself). ``remove(x, r, 0)`` returns
    ``x`` unchanged (a copy).
    """
    return replace_features(x, maps, fraction, top=True, fill=fill, rank_by=rank_by, reduce=reduce,
                            **fill_options)


def keep(x: Tensor, maps: Tensor, fraction: float, fill="dataset_mean", rank_by: str = "pixel",
         reduce: str = "abs-sum", **fill_options) -> Tensor:
    """Keep the top ``floor(fraction * F)`` features and replace all others (KAR).

    The complement of :func:`remove` with the same arguments: every feature is replaced by exactly
    one of ``remove(x, r, f)`` and ``keep(x, r, f)``.
    """
    _check_pair(x, maps)
    mask = removal_mask(maps, fraction, rank_by=rank_by, reduce=reduce, top=True)
    return fill_removed(x, ~mask, fill, **fill_options)
