"""Noise ensembles around any base method: SmoothGrad, SmoothGrad², VarGrad.

For ``n_samples`` noisy copies ``x + ε_s``, ``ε_s ~ N(0, σ_i²)``, of each input ``x_i`` the base
method's attributions ``a_s`` are summarised by their mean (SmoothGrad, Smilkov et al. 2017), the
mean of their squares (SmoothGrad², Hooker et al. 2019) or their variance (VarGrad, Adebayo et al.
2018; population variance, as Captum's NoiseTunnel). σ is a FRACTION of each input's value
range, ``σ_i = sigma · (max x_i − min x_i)``, the SmoothGrad paper's convention (Captum's
``stdevs`` is absolute instead).

All statistics asked for in one :func:`ensemble` call come from the SAME noisy samples, which
costs one set of passes instead of one per statistic. The ``n_samples × N`` noisy inputs are
generated lazily (sample-major: all inputs with ε_0, then ε_1 ...) and handed to the base method
``batch_size`` rows at a time.
"""
from __future__ import annotations

import inspect
from typing import Iterator

import torch
from torch import Tensor, nn

from xailab.attribution._core import batch_rows, check_input, targets_for
from xailab.attribution.registry import get_method, register
from xailab.utils import check_positive, seeded_generator

STATS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def noise_scale(x: Tensor, sigma: float) -> Tensor:
    """Per-sample noise std ``sigma * (max x_i - min x_i)``, shaped to broadcast over ``x``."""
    flat = x.flatten(1)
    return sigma * (flat.amax(1) - flat.amin(1)).view((-1,) + (1,) * (x.ndim - 1))


def noisy_copies(x: Tensor, scale: Tensor, n_samples: int, seed: int, draws: Tensor | None = None,
                 ) -> Iterator[Tensor]:
    """Yield one ``(N, ...)`` block of noisy inputs per noise sample, in order: ``x + scale * eps``
    with ``eps`` standard normal from a generator seeded with ``seed`` (or ``draws[s]``)."""
    g = seeded_generator(seed) if draws is None else None
    for s in range(n_samples):
        if draws is None:
            eps = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        else:
            eps = draws[s].to(device=x.device, dtype=x.dtype)
        yield x + scale * eps


def _chunks(blocks: Iterator[Tensor], rows: int) -> Iterator[Tensor]:
    """Re-cut a stream of row blocks into chunks of exactly ``rows`` rows (the last may be short)."""
    pending: list[Tensor] = []
    size = 0
    for block in blocks:
        pending.append(block)
        size += block.shape[0]
        while size >= rows:
            cat = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield cat[:rows]
            pending, size = ([cat[rows:]] if size > rows else []), size - rows
    if size:
        yield torch.cat(pending)


def _base_method(base):
    if callable(base):
        return base
    if base in STATS:
        raise ValueError(f"base must be a non-ensemble method, got {base!r}")
    return get_method(base)


def ensemble(model: nn.Module, x: Tensor, target, base="gradient", stats=STATS, *,
             sigma: float = 0.15, n_samples: int = 15, batch_size: int | None = None, seed: int = 0,
             draws: Tensor | None = None, **base_options) -> dict[str, Tensor]:
    """Several noise-ensemble statistics of ``base`` from ONE set of noisy samples.

    ``base``: a registered method name or a method function; ``base_options`` go to it (and so
    does ``batch_size``, which also caps the rows per base call). ``stats``: any of
    ``"smoothgrad", "smoothgrad_sq", "vargrad"``. ``draws``: optional standard-normal tensor
    ``(n_samples, *x.shape)`` used instead of drawing from ``seed`` (tests feed Captum the same).
    Returns ``{stat: tensor shaped like base's output}``.
    """
    check_input(x)
    stats = (stats,) if isinstance(stats, str) else tuple(stats)
    unknown = [s for s in stats if s not in STATS]
    if unknown or not stats:
        raise ValueError(f"stats must be a non-empty subset of {', '.join(STATS)}; got {stats!r}")
    sigma = check_positive("sigma", sigma)
    n_samples = int(check_positive("n_samples", n_samples, integer=True))
    if draws is not None and tuple(draws.shape) != (n_samples, *x.shape):
        raise ValueError(f"draws must be shaped (n_samples, *x.shape) = {(n_samples, *x.shape)}, "
                         f"got {tuple(draws.shape)}")
    method = _base_method(base)
    t = targets_for(target, x)
    n, rows = x.shape[0], batch_rows(batch_size, x)
    if "batch_size" in inspect.signature(method).parameters:
        base_options = {**base_options, "batch_size": rows}

    x = x.detach()
    scale = noise_scale(x, sigma)
    # Sums around a per-input shift (its first sample's attribution) keep the variance accurate
    # when it is small next to the mean, and exactly 0 when every sample agrees.
    shift = sum_d = sum_d2 = sum_a2 = None
    start = 0
    for chunk in _chunks(noisy_copies(x, scale, n_samples, seed, draws), rows):
        idx = torch.arange(start, start + chunk.shape[0], device=x.device)
        i = idx % n
        a = method(model, chunk, t[i], **base_options).detach()
        if shift is None:
            shift, sum_d, sum_d2 = (torch.zeros((n, *a.shape[1:]), dtype=a.dtype, device=a.device)
                                    for _ in range(3))
            sum_a2 = torch.zeros_like(shift) if "smoothgrad_sq" in stats else None
        first = idx < n
        if first.any():
            shift[i[first]] = a[first]
        d = a - shift[i]
        sum_d.index_add_(0, i, d)
        sum_d2.index_add_(0, i, d * d)
        if sum_a2 is not None:
            sum_a2.index_add_(0, i, a * a)
        start += chunk.shape[0]

    mean_d = sum_d / n_samples
    out = {}
    if "smoothgrad" in stats:
        out["smoothgrad"] = shift + mean_d
    if "smoothgrad_sq" in stats:
        out["smoothgrad_sq"] = sum_a2 / n_samples
    if "vargrad" in stats:
        out["vargrad"] = (sum_d2 / n_samples - mean_d * mean_d).clamp_min(0)
    return out


@register("smoothgrad", options=("base", "sigma", "n_samples"))
def smoothgrad(model: nn.Module, x: Tensor, target, *, base="gradient", sigma: float = 0.15,
               n_samples: int = 15, batch_size: int | None = None, seed: int = 0, **options) -> Tensor:
    """SmoothGrad: mean of ``base`` over noisy copies of ``x`` (see :func:`ensemble`)."""
    return ensemble(model, x, target, base, ("smoothgrad",), sigma=sigma, n_samples=n_samples,
                    batch_size=batch_size, seed=seed, **options)["smoothgrad"]


@register("smoothgrad_sq", options=("base", "sigma", "n_samples"))
def smoothgrad_sq(model: nn.Module, x: Tensor, target, *, base="gradient", sigma: float = 0.15,
                  n_samples: int = 15, batch_size: int | None = None, seed: int = 0, **options) -> Tensor:
    """SmoothGrad²: mean of the squared ``base`` attributions over noisy copies of ``x``."""
    return ensemble(model, x, target, base, ("smoothgrad_sq",), sigma=sigma, n_samples=n_samples,
                    batch_size=batch_size, seed=seed, **options)["smoothgrad_sq"]


@register("vargrad", options=("base", "sigma", "n_samples"))
def vargrad(model: nn.Module, x: Tensor, target, *, base="gradient", sigma: float = 0.15,
            n_samples: int = 15, batch_size: int | None = None, seed: int = 0, **options) -> Tensor:
    """VarGrad: variance of ``base`` over noisy copies of ``x``."""
    return ensemble(model, x, target, base, ("vargrad",), sigma=sigma, n_samples=n_samples,
                    batch_size=batch_size, seed=seed, **options)["vargrad"]
