"""FullGrad saliency maps: ``fullgrad``, ``simple_fullgrad`` and ``smooth_fullgrad``.

All three return one channel, ``(N, 1, H, W)`` for images (``(N, D)`` for tabular inputs, where
only the input term has a place): the terms of :func:`~xailab.attribution.fullgrad.full_gradients`
aggregated as in :mod:`xailab.attribution.fullgrad.aggregation`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xailab.attribution._core import batch_rows, check_input
from xailab.attribution.ensembles import ensemble, noisy_copies, noise_scale
from xailab.attribution.fullgrad.aggregation import aggregate
from xailab.attribution.fullgrad.decomposition import full_gradients
from xailab.attribution.registry import register
from xailab.utils import as_targets, check_positive

__all__ = ["fullgrad", "simple_fullgrad", "smooth_fullgrad"]


@register("fullgrad", output="pixel")
def fullgrad(model: nn.Module, x: Tensor, target, *, post: str = "abs", normalise: str | None = None,
             include_input: bool = True, merge_batchnorm: bool = True) -> Tensor:
    """FullGrad saliency of the ``target`` logit: the aggregated full-gradient terms, ``(N, 1, H, W)``.

    ``post``: ``"abs"`` | ``"signed"`` | ``"positive"`` | ``"negative"``; ``normalise``: ``"min-max"``
    | ``"max-abs"`` | ``"none"`` (default: min-max, max-abs when signed); see
    :func:`~xailab.attribution.fullgrad.postprocess`.  ``merge_batchnorm``: one term per conv + BN
    pair (makes the map invariant to folding BN into the conv; False gives the authors' two terms).
    """
    fg = full_gradients(model, check_input(x), target, merge_batchnorm=merge_batchnorm)
    return aggregate(fg, x.shape, post=post, normalise=normalise, include_input=include_input)


@register("simple_fullgrad", output="pixel")
def simple_fullgrad(model: nn.Module, x: Tensor, target, *, post: str = "abs",
                    normalise: str | None = None, include_input: bool = True) -> Tensor:
    """The authors' simpler variant: aggregate the gradients ``grad_z f`` of every bias-carrying
    layer's output (before its activation) *without* multiplying by the bias, plus the input term.

    Cheaper to explain (no implicit biases needed), but it loses completeness: a unit with zero bias
    still contributes its gradient.  Options as in :func:`fullgrad`.
    """
    fg = full_gradients(model, check_input(x), target, keep_gradients=True)
    terms = ({"input": fg.input} if include_input else {}) | fg.gradients
    return aggregate(terms, x.shape, post=post, normalise=normalise)


@register("smooth_fullgrad", output="pixel", options=("sigma", "n_samples"))
def smooth_fullgrad(model: nn.Module, x: Tensor, target, *, sigma: float = 0.15, n_samples: int = 15,
                    batch_size: int | None = None, seed: int = 0, average: str = "maps",
                    post: str = "abs", normalise: str | None = None, include_input: bool = True,
                    merge_batchnorm: bool = True) -> Tensor:
    """SmoothGrad applied to FullGrad: average over ``n_samples`` noisy copies of ``x``.

    ``sigma``: noise std as a fraction of each sample's value range (SmoothGrad convention).
    ``average="maps"`` (default) averages the FullGrad saliency maps of the noisy copies: SmoothGrad
    with FullGrad as its base, computed by :func:`xailab.attribution.ensemble`.
    ``average="terms"`` averages the raw full-gradient terms over the same noisy copies and
    post-processes the averages once, as the authors' SmoothFullGrad does.  ``batch_size``: rows
    (noisy copies x samples) per forward/backward pass.  Seeded; the result does not depend on
    ``batch_size``.
    """
    check_input(x)
    opts = dict(post=post, normalise=normalise, include_input=include_input, merge_batchnorm=merge_batchnorm)
    if average == "maps":
        return ensemble(model, x, target, base=fullgrad, stats=("smoothgrad",), sigma=sigma,
                        n_samples=n_samples, batch_size=batch_size, seed=seed, **opts)["smoothgrad"]
    if average != "terms":
        raise ValueError(f"average must be 'maps' or 'terms', got {average!r}")
    sigma = check_positive("sigma", sigma)
    n_samples = int(check_positive("n_samples", n_samples, integer=True))
    x = x.detach()
    noisy = torch.cat(list(noisy_copies(x, noise_scale(x, sigma), n_samples, seed)))  # (S*N, ...), sample-major
    n = x.shape[0]
    t = as_targets(target, n, device=x.device).repeat(n_samples)
    owner = torch.arange(n, device=x.device).repeat(n_samples)        # which sample each row is
    rows = batch_rows(batch_size, x)
    acc: dict[str, Tensor] = {}
    for r0 in range(0, noisy.shape[0], rows):
        xs, idx = noisy[r0:r0 + rows], owner[r0:r0 + rows]
        fg = full_gradients(model, xs, t[r0:r0 + rows], merge_batchnorm=merge_batchnorm)
        for k, v in (({"input": fg.input} if include_input else {}) | fg.bias).items():
            if k not in acc:
                acc[k] = torch.zeros((n,) + tuple(v.shape[1:]), dtype=v.dtype, device=v.device)
            acc[k].index_add_(0, idx, v)
    return aggregate({k: v / n_samples for k, v in acc.items()}, x.shape, post=post, normalise=normalise)
