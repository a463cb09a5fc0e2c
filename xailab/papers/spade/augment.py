"""Augmented views of one image: the "batch" a SPADE trace is fitted on.

SPADE prunes a copy of the network so that every layer reproduces its outputs on many views of
the one input being explained. The views must look like that input (the trace is specific to
it) but vary enough that the layer Hessians are well conditioned: random resized crops,
horizontal flips and colour jitter, all in one vectorised ``grid_sample`` call, seeded with a
``torch.Generator`` (no global RNG).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from xailab.utils import check_fraction, check_positive


def as_single_image(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Return ``x`` as a ``(1, C, H, W)`` float tensor; refuse anything but one image."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor image, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"{name} must be a single image of shape (C, H, W) or (1, C, H, W), "
                         f"got shape {tuple(x.shape)}; trace images one at a time or use trace_batch")
    return x.float()


def augment(x: torch.Tensor, n_views: int = 64, *, seed: int = 0, scale=(0.5, 1.0),
            ratio=(3 / 4, 4 / 3), flip: bool = True, jitter: float = 0.2,
            include_original: bool = True) -> torch.Tensor:
    """``n_views`` augmented copies of each image in ``x`` ``(N, C, H, W)`` -> ``(N * n_views, C, H, W)``.

    Views are image-major (all views of image 0, then image 1 ...). Every image gets the same
    ``n_views`` random transforms (drawn from ``seed``), so an image's views — and hence its
    trace — do not depend on which other images are traced with it. View 0 of every image is the
    image itself when ``include_original`` (so the trace reproduces the input exactly, not only
    its perturbations). Crops cover a random ``scale`` fraction of the area with aspect ratio in
    ``ratio`` and are resized back to H×W (bilinear); ``jitter`` is the maximal relative change of
    brightness, contrast and saturation. Values are clamped to each image's own range.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    n_views = int(check_positive("n_views", n_views, integer=True))
    check_fraction("jitter", jitter)
    lo_s, hi_s = float(scale[0]), float(scale[1])
    if not 0 < lo_s <= hi_s <= 1:
        raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale!r}")
    n, c = x.shape[:2]
    m = n * n_views
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(n_views, 8, generator=g, dtype=torch.float64).repeat(n, 1)

    # Random resized crop as an affine map of normalised coordinates [-1, 1].
    area = lo_s + (hi_s - lo_s) * u[:, 0]
    log_r = torch.log(torch.tensor(ratio[0], dtype=torch.float64)) + u[:, 1] * (
        torch.log(torch.tensor(ratio[1], dtype=torch.float64)) - torch.log(torch.tensor(ratio[0], dtype=torch.float64)))
    r = torch.exp(log_r)
    sx = torch.sqrt(area * r).clamp(max=1.0)        # crop width as a fraction of the image
    sy = torch.sqrt(area / r).clamp(max=1.0)
    cx = (1 - sx) * (2 * u[:, 2] - 1)               # crop centre keeps the crop inside the image
    cy = (1 - sy) * (2 * u[:, 3] - 1)
    fx = torch.ones(m, dtype=torch.float64)
    if flip:
        fx[u[:, 4] < 0.5] = -1.0
    theta = torch.zeros(m, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = sx * fx, cx
    theta[:, 1, 1], theta[:, 1, 2] = sy, cy
    brightness = 1 + jitter * (2 * u[:, 5] - 1)
    contrast = 1 + jitter * (2 * u[:, 6] - 1)
    saturation = 1 + jitter * (2 * u[:, 7] - 1)
    if include_original:                            # view 0 of each image: the identity
        first = torch.arange(n) * n_views
        theta[first] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64)
        brightness[first] = contrast[first] = saturation[first] = 1.0

    dev, dt = x.device, x.dtype
    src = x.repeat_interleave(n_views, dim=0)
    grid = F.affine_grid(theta.to(dev, dt), list(src.shape), align_corners=False)
    views = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    shape = (m, 1, 1, 1)
    views = views * brightness.to(dev, dt).view(shape)
    mean = views.mean(dim=(1, 2, 3), keepdim=True)
    views = mean + (views - mean) * contrast.to(dev, dt).view(shape)
    if c > 1:
        grey = views.mean(dim=1, keepdim=True)
        views = grey + (views - grey) * saturation.to(dev, dt).view(shape)
    lo = x.amin(dim=(1, 2, 3), keepdim=True).repeat_interleave(n_views, dim=0)
    hi = x.amax(dim=(1, 2, 3), keepdim=True).repeat_interleave(n_views, dim=0)
    views = torch.minimum(torch.maximum(views, lo), hi)
    if include_original:
        views[first.to(dev)] = x                    # exact, not resampled or re-rounded
    return views
