"""FullGrad saliency maps: ``fullgrad``, ``simple_fullgrad`` and ``smooth_fullgrad``.

All three return one channel, ``(N, 1, H, W)`` for images (``(N, D)`` for tabular inputs, where
only the input term has a place).  The decomposition lives in :mod:`xailab.fullgrad`; here it is
aggregated as in the paper:

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
from torch import Tensor, nn

from xailab import fullgrad as _fg
from xailab.utils import as_targets, check_positive, seeded_generator

__all__ = ["fullgrad", "simple_fullgrad", "smooth_fullgrad"]

#: Input elements per forward/backward pass of the noisy copies (a few 224-px images, hundreds of
#: 32-px ones).
_CHUNK_ELEMENTS = 2 ** 21


def _check_x(x) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (2, 4):
        raise ValueError(f"x must be a batch shaped (N, C, H, W) or (N, D), got shape {tuple(x.shape)}")
    return x


def fullgrad(model: nn.Module, x: Tensor, target, *, post: str = "abs", normalize: str | None = None,
             include_input: bool = True, merge_batchnorm: bool = True) -> Tensor:
    """FullGrad saliency of the ``target`` logit: the aggregated full-gradient terms, ``(N, 1, H, W)``.

    ``post``: ``"abs"`` | ``"signed"`` | ``"positive"`` | ``"negative"``; ``normalize``: ``"minmax"``
    | ``"maxabs"`` | ``"none"`` (default: min-max, max-abs when signed); see
    :func:`xailab.fullgrad.postprocess`.  ``merge_batchnorm``: one term per conv + BN pair (makes
    the map invariant to folding BN into the conv; False gives the authors' two terms).
    """
    fg = _fg.full_gradients(model, _check_x(x), target, merge_batchnorm=merge_batchnorm)
    return _fg.aggregate(fg, x.shape, post=post, normalize=normalize, include_input=include_input)


def simple_fullgrad(model: nn.Module, x: Tensor, target, *, post: str = "abs",
                    normalize: str | None = None, include_input: bool = True) -> Tensor:
    """The authors' simpler variant: aggregate the gradients ``grad_z f`` of every bias-carrying
    layer's output (before its activation) *without* multiplying by the bias, plus the input term.

    Cheaper to explain (no implicit biases needed), but it loses completeness: a unit with zero bias
    still contributes its gradient.  Options as in :func:`fullgrad`.
    """
    fg = _fg.full_gradients(model, _check_x(x), target, keep_gradients=True)
    terms = ({"input": fg.input} if include_input else {}) | fg.gradients
    return _fg.aggregate(terms, x.shape, post=post, normalize=normalize)


def _noisy(x: Tensor, sigma: float, n_samples: int, seed: int) -> Tensor:
    """``(n_samples, N, ...)`` noisy copies of x, std ``sigma * (max - min)`` of each sample (the
    SmoothGrad convention), drawn block by block exactly as :func:`xailab.attribution.ensemble`
    draws them, so both averages below see the same noisy inputs."""
    scale = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view([-1] + [1] * (x.ndim - 1))
    g = seeded_generator(seed)
    return torch.stack([x + scale * torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
                        for _ in range(n_samples)])


def smooth_fullgrad(model: nn.Module, x: Tensor, target, *, sigma: float = 0.15, n_samples: int = 15,
                    batch_size: int | None = None, seed: int = 0, average: str = "maps",
                    post: str = "abs", normalize: str | None = None, include_input: bool = True,
                    merge_batchnorm: bool = True) -> Tensor:
    """SmoothGrad applied to FullGrad: average over ``n_samples`` noisy copies of ``x``.

    ``sigma``: noise std as a fraction of each sample's value range (SmoothGrad convention).
    ``average="maps"`` (default) averages the FullGrad saliency maps of the noisy copies: SmoothGrad
    with FullGrad as its base, computed by :func:`xailab.attribution.ensemble`.
    ``average="terms"`` averages the raw full-gradient terms and post-processes the averages once,
    as the authors' SmoothFullGrad does.  ``batch_size``: rows (noisy copies x samples) per
    forward/backward pass (default: about 2M input elements).  Seeded; the result does not depend
    on ``batch_size``.
    """
    _check_x(x)
    opts = dict(post=post, normalize=normalize, include_input=include_input, merge_batchnorm=merge_batchnorm)
    if average == "maps":
        from xailab.attribution.ensembles import ensemble

        return ensemble(model, x, target, base=fullgrad, stats=("smoothgrad",), sigma=sigma,
                        n_samples=n_samples, batch_size=batch_size, seed=seed, **opts)["smoothgrad"]
    if average != "terms":
        raise ValueError(f"average must be 'maps' or 'terms', got {average!r}")
    sigma = check_positive("sigma", sigma)
    n_samples = int(check_positive("n_samples", n_samples, integer=True))
    noisy = _noisy(x.detach(), sigma, n_samples, seed).flatten(0, 1)   # (S*N, ...), sample-major
    n = x.shape[0]
    t = as_targets(target, n, device=x.device).repeat(n_samples)
    owner = torch.arange(n, device=x.device).repeat(n_samples)        # which sample each row is
    rows = (int(check_positive("batch_size", batch_size, integer=True)) if batch_size
            else max(1, _CHUNK_ELEMENTS // max(1, x[0].numel())))
    acc: dict[str, Tensor] = {}
    for r0 in range(0, noisy.shape[0], rows):
        xs, idx = noisy[r0:r0 + rows], owner[r0:r0 + rows]
        fg = _fg.full_gradients(model, xs, t[r0:r0 + rows], merge_batchnorm=merge_batchnorm)
        for k, v in (({"input": fg.input} if include_input else {}) | fg.bias).items():
            if k not in acc:
                acc[k] = torch.zeros((n,) + tuple(v.shape[1:]), dtype=v.dtype, device=v.device)
            acc[k].index_add_(0, idx, v)
    return _fg.aggregate({k: v / n_samples for k, v in acc.items()}, x.shape, post=post, normalize=normalize)
