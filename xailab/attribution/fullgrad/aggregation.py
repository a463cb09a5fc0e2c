"""From full-gradient terms to one pixel map: post-processing and aggregation (FullGrad's recipe).

1. post-process each term: absolute value (``post="abs"``, the paper), or keep the sign
   (``"signed"``), or keep one part (``"positive"`` / ``"negative"``);
2. normalise each layer's term per sample (min-max over all its channels and positions, as the
   authors' code does; max-abs for signed maps so that zero stays zero);
3. sum over channels, upsample bilinearly to the input's size, and sum over layers (plus the
   input term ``grad_x f * x``, processed the same way at full resolution).

The channel sum is done *before* upsampling.  The normalisation in step 2 is one affine map with
per-sample scalars (shared by all channels), and bilinear interpolation is linear and reproduces
constants, so summing channels then upsampling equals upsampling every channel then summing
(``bench/fullgrad.py`` measures both); the absolute value, being non-linear, is applied first, per
channel.  Terms of fully-connected layers have no spatial layout and are left out, as in the paper.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xailab.attribution.fullgrad.decomposition import FullGradients

__all__ = ["POSTS", "TERM_NORMALISATIONS", "postprocess", "layer_maps", "aggregate", "aggregate_per_channel"]

#: Post-processing of each term before aggregation (see :func:`postprocess`).
POSTS = ("abs", "signed", "positive", "negative")
#: Per-term normalisations (a subset of :data:`xailab.attribution.maps.NORMALISATIONS`' names).
TERM_NORMALISATIONS = ("min-max", "max-abs", "none")


def postprocess(term: Tensor, post: str = "abs", normalise: str | None = None) -> Tensor:
    """Post-process one term ``(N, C, ...)`` and sum it over channels: ``(N, 1, ...)``.

    ``post``: ``"abs"`` (the paper), ``"signed"``, ``"positive"`` (positive part) or ``"negative"``
    (magnitude of the negative part).  ``normalise``: ``"min-max"`` rescales the whole term of each
    sample (all channels and positions together, as the authors' code does) to [0, 1];
    ``"max-abs"`` divides by the largest magnitude, keeping zero and signs (the default for
    ``"signed"``, where min-max would move zero); ``"none"`` leaves it.  Default: ``"min-max"``
    except for ``"signed"``.  (The names are those of :func:`xailab.attribution.normalise`.)

    Both normalisations are one affine map ``a * t + c`` per sample, with scalars ``a, c`` taken
    over all channels, so it is applied to the channel sum as ``a * sum_c t + C * c``: identical to
    normalising every channel and then summing, without the per-channel tensor.
    """
    if post not in POSTS:
        raise ValueError(f"post must be one of {POSTS}, got {post!r}")
    normalise = normalise or ("max-abs" if post == "signed" else "min-max")
    if normalise not in TERM_NORMALISATIONS:
        raise ValueError(f"normalise must be one of {TERM_NORMALISATIONS}, got {normalise!r}")
    if term.ndim < 2:
        raise ValueError(f"term must be (N, C, ...), got shape {tuple(term.shape)}")
    p = {"abs": term.abs, "signed": lambda: term, "positive": lambda: term.clamp_min(0),
         "negative": lambda: (-term).clamp_min(0)}[post]()
    s = p.sum(1, keepdim=True)
    if normalise == "none":
        return s
    flat = p.flatten(1)
    view = [-1] + [1] * (s.ndim - 1)
    tiny = torch.finfo(p.dtype).tiny
    if normalise == "min-max":
        lo, hi = flat.amin(1), flat.amax(1)
        rng = hi - lo
        out = (s - p.shape[1] * lo.view(view)) / rng.clamp_min(tiny).view(view)
        return torch.where(rng.view(view) > 0, out, torch.zeros_like(out))
    m = flat.abs().amax(1).view(view)
    return s / m.clamp_min(tiny)


def _resize(m: Tensor, size) -> Tensor:
    """Bilinear upsampling of a (N, 1, h, w) map to ``size`` (a no-op when sizes agree)."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)


def layer_maps(terms: FullGradients | dict[str, Tensor], x_shape, *, post: str = "abs",
               normalise: str | None = None, include_input: bool = True) -> dict[str, Tensor]:
    """One post-processed pixel map per term, upsampled to the input's size: name -> (N, 1, H, W).

    ``terms``: a :class:`FullGradients` (its ``input`` term is called ``"input"``) or a plain dict
    name -> tensor (e.g. ``FullGradients.gradients`` for simple FullGrad).  Terms without the
    input's spatial layout (outputs of Linear layers, pooled vectors) have no place in the image
    and are skipped, as in the paper.  For tabular inputs ``(N, D)`` only the input term is mapped,
    element-wise, shape ``(N, D)``.
    """
    x_shape = tuple(x_shape)
    if isinstance(terms, FullGradients):
        named = ({"input": terms.input} if include_input else {}) | terms.bias
    else:
        named = dict(terms)
    maps = {}
    if len(x_shape) == 2:                               # tabular: element-wise input term only
        if "input" in named:
            p = postprocess(named["input"][:, None, :], post, normalise)
            maps["input"] = p[:, 0]
        return maps
    if len(x_shape) != 4:
        raise ValueError(f"x must be images (N, C, H, W) or tabular (N, D), got shape {x_shape}")
    for name, t in named.items():
        if t.ndim == 4:
            maps[name] = _resize(postprocess(t, post, normalise), x_shape[-2:])
    return maps


def aggregate(terms: FullGradients | dict[str, Tensor], x_shape, *, post: str = "abs",
              normalise: str | None = None, include_input: bool = True) -> Tensor:
    """The FullGrad saliency: the sum of :func:`layer_maps`, ``(N, 1, H, W)`` (``(N, D)`` tabular)."""
    maps = layer_maps(terms, x_shape, post=post, normalise=normalise, include_input=include_input)
    if not maps:
        raise ValueError("no term has the input's spatial layout; nothing to aggregate")
    return torch.stack(list(maps.values())).sum(0)


def aggregate_per_channel(terms: FullGradients, x_shape) -> Tensor:
    """The straightforward order of the same recipe (``post="abs"``, per-term min-max): upsample every
    channel of every post-processed term to the input's size, then sum channels and terms. Equal to
    :func:`aggregate` up to rounding (the reference it is checked and benchmarked against)."""
    total = 0
    for term in [terms.input] + list(terms.bias.values()):
        if term.ndim != 4:
            continue
        p = term.abs()
        flat = p.flatten(1)
        lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
        p = torch.where(hi > lo, (p - lo) / (hi - lo).clamp_min(torch.finfo(p.dtype).tiny), torch.zeros_like(p))
        total = total + _resize(p, tuple(x_shape)[-2:]).sum(1, keepdim=True)
    return total
