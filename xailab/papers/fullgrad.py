"""The FullGrad paper's experiments (Srinivas & Fleuret, NeurIPS 2019), as notebook 03 runs them.

The method itself — the full-gradient decomposition, its aggregation and the registered
``fullgrad`` saliency — lives with the other attribution methods in
:mod:`xailab.attribution.fullgrad`; the metrics these experiments use are in :mod:`xailab.metrics`.
Here: completeness across architectures, the layer-by-layer figure, pixel perturbation under
several fills, digit flipping, and batch-norm folding with merged or separate terms.
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from xailab import viz
from xailab.attribution import attribute, method_maps
from xailab.attribution.fullgrad import completeness_gap, full_gradients, layer_maps
from xailab.metrics import flip_test, pixel_perturbation

__all__ = ["completeness_table", "layer_figure", "perturbation_table", "perturbation_figure", "ranking",
           "signed_ranking", "flip_experiment", "folding_comparison"]


def completeness_table(models: Mapping[str, nn.Module], x: Tensor, target) -> dict[str, dict]:
    """For each model: the relative completeness gap of the full-gradient terms in float64 (max) and
    float32 (median, max), the input-gradient's own gap (median) and the bias share
    ``|f - grad.x| / (|grad.x| + |f - grad.x|)`` (median)."""
    rows = {}
    for name, net in models.items():
        gap32 = completeness_gap(net, x, target)
        gap64 = completeness_gap(copy.deepcopy(net).double(), x.double(), target)
        f = full_gradients(net, x, target)
        inp_gap = (f.input_share() - f.output).abs() / f.output.abs()
        bias = (f.output - f.input_share()).abs()
        share = bias / (f.input_share().abs() + bias)
        rows[name] = dict(gap64_max=gap64.max().item(), gap32_median=gap32.median().item(),
                          gap32_max=gap32.max().item(), input_gap_median=inp_gap.median().item(),
                          bias_share_median=share.median().item())
    return rows


def layer_figure(model: nn.Module, x: Tensor, target, n: int = 3) -> Figure:
    """For ``n`` images: each spatial term of the decomposition, signed at its own resolution (top
    row), and after FullGrad's post-processing and upsampling (bottom row), with their sum."""
    target = target[:n] if isinstance(target, Tensor) and target.ndim else target
    fg = full_gradients(model, x[:n], target)
    spatial = {"input": fg.input} | {k: v for k, v in fg.bias.items() if v.ndim == 4}
    up = layer_maps(fg, x[:n].shape)
    total = sum(up.values())
    cols = 2 + len(spatial)
    fig = Figure(figsize=(1.6 * cols, 3.2 * n), layout="constrained")
    axes = np.asarray(fig.subplots(2 * n, cols, squeeze=False))
    for i in range(n):
        top, bottom = axes[2 * i], axes[2 * i + 1]
        viz.show_image(top[0], x[i].cpu(), title="image" if i == 0 else None)
        bottom[0].axis("off")
        for j, (name, t) in enumerate(spatial.items(), start=1):
            viz.heatmap(top[j], t[i].sum(0).cpu(), signed=True,
                        title=f"{name}\n{tuple(t.shape[-2:])}" if i == 0 else None)
            viz.heatmap(bottom[j], up[name][i].cpu(), signed=False)
        viz.heatmap(bottom[-1], total[i].cpu(), signed=False, title="FullGrad" if i == 0 else None)
        top[-1].axis("off")
        top[1].set_ylabel("signed, native", fontsize=8)
        bottom[1].set_ylabel("|.| min-max, up", fontsize=8)
    return fig


def perturbation_table(model: nn.Module, x: Tensor, target, maps: Mapping[str, Tensor], fractions,
                       fills: Sequence = ("image_mean", "blur")) -> dict[tuple, dict[str, Tensor]]:
    """Pixel perturbation of every map: ``{(fill, "least" | "most"): {label: change (fractions, images)}}``
    (see :func:`xailab.metrics.pixel_perturbation`); per image, so that methods can be compared paired."""
    out = {}
    for fill in fills:
        for most in (False, True):
            out[(fill, "most" if most else "least")] = {
                k: pixel_perturbation(model, x, target, s, fractions, most_salient=most, fill=fill).cpu()
                for k, s in maps.items()}
    return out


def perturbation_figure(table: Mapping[tuple, Mapping[str, Tensor]], fractions, title: str) -> Figure:
    """One panel per (fill, direction) of :func:`perturbation_table`; Random dashed."""
    fig = Figure(figsize=(4 * len(table), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(table)))
    for ax, ((fill, which), rows) in zip(axes, table.items()):
        viz.curves(ax, [100 * f for f in fractions], {k: v.mean(1).numpy() for k, v in rows.items()},
                   xlabel=f"% {which} salient pixels removed", ylabel="relative logit change",
                   title=f"{title}: {which} salient, fill={fill}")
        for line in ax.get_lines():
            if line.get_label() == "Random":
                line.set_linestyle("--")
    return fig


def ranking(scores: Mapping[str, float], lower_is_better: bool = True) -> str:
    """``"A 0.1 < B 0.2 < ..."`` (or ``>`` when higher is better), best first."""
    order = sorted(scores, key=scores.get, reverse=not lower_is_better)
    sep = " < " if lower_is_better else " > "
    return sep.join(f"{k} {scores[k]:.3f}" for k in order)


def signed_ranking(maps: Tensor) -> Tensor:
    """Signed pixel maps shifted to be non-negative per image: ranking their magnitude is ranking
    the signed value (most positive first)."""
    return maps - maps.flatten(1).amin(1).view(-1, *[1] * (maps.ndim - 1))


def flip_experiment(model: nn.Module, x: Tensor, y: Tensor, pairs: Sequence[tuple[int, int]],
                    methods: Mapping, fractions=(0.05, 0.1, 0.2), *, seed: int = 0) -> tuple[dict, dict]:
    """Digit flipping for every ``(a, b)`` of ``pairs`` on the images of class ``a`` and every
    method of ``methods`` (a method table), ranked by ``S_a - S_b`` and by ``S_a`` alone.

    Stochastic methods (the ``random`` control, SmoothGrad ...) draw ``S_a`` and ``S_b`` from
    different seeds (``seed`` and ``seed + 1``): a random control must give a random difference,
    not ``S_a - S_a = 0`` (whose stable sort would erase the top rows of every image).

    Returns ``({"a - b" | "a only": {label: drop per fraction and image, (F, N)}}, {label: S_a - S_b
    of the first image of the first pair})``, images of all pairs side by side."""
    flip = {"a - b": {k: [] for k in methods}, "a only": {k: [] for k in methods}}
    examples = {}
    for a, b in pairs:
        xa = x[y == a]
        if len(xa) == 0:
            continue
        sa = method_maps(model, xa, a, methods, seed=seed)
        sb = method_maps(model, xa, b, methods, seed=seed + 1)
        for label in methods:
            flip["a - b"][label].append(flip_test(model, xa, a, sa[label], contrast=b, contrast_maps=sb[label],
                                                  fractions=fractions))
            flip["a only"][label].append(flip_test(model, xa, a, sa[label], contrast=b, fractions=fractions))
            if (a, b) == tuple(pairs[0]):
                examples[label] = sa[label][:1] - sb[label][:1]
    return {mode: {k: torch.cat(v, 1).cpu() for k, v in rows.items()} for mode, rows in flip.items()}, examples


def folding_comparison(model: nn.Module, folded: nn.Module, x: Tensor, target) -> dict[tuple, dict]:
    """How much the FullGrad map changes when batch-norm is folded into the convolution, with merged
    (``merge_batchnorm=True``) or separate terms, ``abs`` and ``signed``: ``{(merge, post): {"max32",
    "max64", "per_image" (float32 max per image), "scale" (largest map value)}}``."""
    m64, f64, x64 = copy.deepcopy(model).double(), copy.deepcopy(folded).double(), x.double()
    rows = {}
    for merge in (True, False):
        for post in ("abs", "signed"):
            opts = dict(method="fullgrad", post=post, merge_batchnorm=merge)
            a = attribute(model, x, target, **opts)
            b = attribute(folded, x, target, **opts)
            d64 = (attribute(m64, x64, target, **opts) - attribute(f64, x64, target, **opts)).abs().max().item()
            per_image = (a - b).abs().flatten(1).amax(1)
            rows[(merge, post)] = dict(max32=per_image.max().item(), max64=d64, per_image=per_image,
                                       scale=a.abs().max().item())
    return rows
