"""The FullGrad paper's experiments (Srinivas & Fleuret, NeurIPS 2019), as notebook 03 runs them.

The method itself — the full-gradient decomposition, its aggregation and the registered
``fullgrad`` saliency — lives with the other attribution methods in
:mod:`xailab.attribution.fullgrad`; the metrics these experiments use are in :mod:`xailab.metrics`.
Here: the registered checks of the register's FG ids (completeness, the bias share, batch-norm folding,
the aggregation order), the layer-by-layer figure, pixel perturbation under several fills, digit
flipping, and what blank pixels cost on digits.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from xailab import viz
from xailab.attribution import attribute, method_maps, reduce_channels
from xailab.attribution.fullgrad import (aggregate, aggregate_per_channel, decomposition_gap, fold_batchnorm,
                                         full_gradients, layer_maps)
from xailab.metrics import evaluate, flip_test
from xailab.models import SmallCNN
from xailab.attribution.targets import resolve_target
from xailab.removal import BLUR_SIGMA, fill_removed
from xailab.utils import derive_seed, forked_rng

__all__ = ["FlipResult", "aggregation_order_gap", "bias_share", "blank_vs_ink", "completeness_rows", "digits_cnn",
           "flip_experiment", "folding_identity", "input_term_map", "layer_figure", "perturbation_figure",
           "perturbation_table", "ranking", "registered_gap", "signed_ranking", "smooth_networks", "smooth_share"]


def digits_cnn(seed: int, input_size: int = 16) -> nn.Module:
    """The CNN notebook 03 explains on digits: two conv–batch-norm–ReLU–max-pool blocks (width 16), a two-layer
    head, ten classes; untrained, initialised from ``seed``."""
    return SmallCNN(in_channels=1, num_classes=10, width=16, depth=2, input_size=input_size, batch_norm=True, seed=seed)


def smooth_networks(x: Tensor, seed: int, activations=(nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU),
                    classes: int = 10) -> dict[str, nn.Module]:
    """Small untrained networks with smooth activations for inputs like ``x``: conv, activation, max-pool, a
    two-layer head; one per activation, initialised from ``seed``, in eval mode on x's device."""
    nets = {}
    for act in activations:
        with forked_rng(seed):
            net = nn.Sequential(nn.Conv2d(x.shape[1], 8, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
                                nn.Linear(8 * (x.shape[-1] // 2) ** 2, 32), act(), nn.Linear(32, classes))
        nets[f"CNN with {act.__name__}"] = net.to(x.device).eval()
    return nets


def completeness_rows(models: Mapping[str, nn.Module], x: Tensor, target) -> dict[str, dict]:
    """For each model: FG-1's gap in float64 (largest over images), the plain relative gap
    ``|Σ terms − f| / |f|`` in float32 (median), what the input-gradient alone misses (median relative gap),
    the bias share of FG-4 (median) and the gap when the implicit-bias terms of smooth activations are left
    out (median)."""
    rows = {}
    for name, net in models.items():
        f = full_gradients(net, x, target)
        implicit = sum((v.flatten(1).sum(1) for k, v in f.bias.items() if k.endswith("(implicit)")),
                       torch.zeros_like(f.output))
        rows[name] = dict(gap64_max=registered_gap(net, x, target).max().item(),
                          gap32_median=decomposition_gap(net, x, target).median().item(),
                          input_gap_median=((f.input_share() - f.output).abs() / f.output.abs()).median().item(),
                          bias_share_median=bias_share(net, x, target),
                          without_implicit_median=((f.total() - implicit - f.output).abs() / f.output.abs())
                          .median().item())
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
                       fills: Sequence = ("image_mean", "blur"), *, blur_sigma: float = BLUR_SIGMA,
                       directions: Sequence[str] = ("least", "most")) -> dict[tuple, dict[str, Tensor]]:
    """Pixel perturbation of every map: ``{(fill, "least" | "most"): {label: change (fractions, images)}}``
    (the catalogue's ``least_salient`` and ``most_salient``, one fraction at a time, for each of
    ``directions``); per image, so that methods can be compared paired."""
    if not directions or any(d not in ("least", "most") for d in directions):
        raise ValueError(f"directions must be a non-empty sequence of 'least' and 'most', got {directions!r}")
    out = {}
    for fill in fills:
        for which in directions:
            metrics = {f: (f"{which}_salient", {"fractions": (f,), "fill": fill, "blur_sigma": blur_sigma})
                       for f in fractions}
            scores = evaluate(maps, metrics, model=model, x=x, target=target)
            out[(fill, which)] = {k: torch.stack([scores[str(f)][k] for f in fractions]).cpu() for k in maps}
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


@dataclass
class FlipResult:
    """Digit flipping (:func:`flip_experiment`): ``drops[mode][label]`` the drop of ``f_a − f_b`` per fraction and
    entry ``(F, N)``, ``mode`` ``"a - b"`` (ranked by ``S_a − S_b``) or ``"a only"``; an entry is one image of class
    ``a`` in one pair ``(a, b)``: ``image`` its index in ``x`` and ``margin`` its ``f_a − f_b`` before erasing;
    ``examples[label]``: ``S_a − S_b`` of the first image of the first pair."""
    drops: dict
    image: Tensor
    margin: Tensor
    examples: dict

    def per_image(self, label: str, mode: str = "a - b") -> tuple[Tensor, Tensor]:
        """``(drop, image)``: the drop averaged over the fractions and over the pairs an image is in, one value per
        image (the unit of FG-7), and the images' indices."""
        drop = self.drops[mode][label].mean(0)
        images, inverse = self.image.unique(return_inverse=True)
        total = torch.zeros(len(images), dtype=drop.dtype).index_add_(0, inverse, drop)
        count = torch.zeros(len(images), dtype=drop.dtype).index_add_(0, inverse, torch.ones_like(drop))
        return total / count, images


def flip_experiment(model: nn.Module, x: Tensor, y: Tensor, pairs: Sequence[tuple[int, int]],
                    methods: Mapping, fractions=(0.05, 0.1, 0.2), *, seed: int = 0) -> FlipResult:
    """Digit flipping for every ``(a, b)`` of ``pairs`` on the images of class ``a`` and every
    method of ``methods`` (a method table), ranked by ``S_a - S_b`` and by ``S_a`` alone.

    Methods that draw noise (the ``random`` control, SmoothGrad ...) draw ``S_a`` and ``S_b`` from
    different seeds: a random control must give a random difference, not ``S_a - S_a = 0`` (whose
    stable sort would erase the top rows of every image)."""
    drops = {"a - b": {k: [] for k in methods}, "a only": {k: [] for k in methods}}
    images, margins, examples = [], [], {}
    for a, b in pairs:
        idx = (y == a).nonzero().squeeze(1)
        if len(idx) == 0:
            continue
        xa = x[idx]
        sa = method_maps(model, xa, a, methods, seed=derive_seed(seed, "flip", a, b, "a"))
        sb = method_maps(model, xa, b, methods, seed=derive_seed(seed, "flip", a, b, "b"))
        with torch.no_grad():
            out = model(xa)
        margins.append((out[:, a] - out[:, b]).cpu())
        images.append(idx.cpu())
        for label in methods:
            for mode, other in (("a - b", sb[label]), ("a only", None)):
                drops[mode][label].append(torch.stack(
                    [flip_test(sa[label], model=model, x=xa, target=a, contrast=b, contrast_maps=other, fractions=(f,))
                     for f in fractions]).cpu())
            if (a, b) == tuple(pairs[0]):
                examples[label] = sa[label][:1] - sb[label][:1]
    return FlipResult({mode: {k: torch.cat(v, 1) for k, v in rows.items()} for mode, rows in drops.items()},
                      torch.cat(images), torch.cat(margins), examples)


def blank_vs_ink(model: nn.Module, x: Tensor, target, fraction: float = 0.2, *, fill=0.0, seed: int = 0,
                 blur_sigma: float = BLUR_SIGMA) -> dict[str, float]:
    """What removing pixels costs on images with a blank background (digits): the mean relative logit change
    ``|f(x') − f(x)| / |f(x)|`` when ``fraction`` of each image's pixels are replaced by ``fill`` (a value or a
    name of :data:`xailab.removal.FILLS`), drawn at random among the blank (exactly zero) pixels, and among the
    ink pixels; images with fewer such pixels than that are left out."""
    g = torch.Generator().manual_seed(int(seed))
    blank = (x.detach().abs().sum(1) == 0).flatten(1).cpu()
    k = int(fraction * blank.shape[1])
    t = resolve_target(target, x)
    out = {}
    with torch.no_grad():
        base = model(x).gather(1, t[:, None])[:, 0]
        for name, where in (("blank", blank), ("ink", ~blank)):
            draw = torch.rand(where.shape, generator=g) + where.float()          # the chosen kind first, at random
            mask = torch.zeros_like(where).scatter_(1, draw.argsort(1, descending=True)[:, :k], True)
            mask = mask.view(x.shape[0], 1, *x.shape[2:]).to(x.device)
            xk = fill_removed(x, mask, fill, blur_sigma=blur_sigma)
            change = ((model(xk).gather(1, t[:, None])[:, 0] - base).abs() / base.abs()).cpu()
            out[name] = float(change[where.sum(1) >= k].mean())
    return out


# ----------------------------------------------------------------------------------------------- registered checks
def registered_gap(model: nn.Module, x: Tensor, target) -> Tensor:
    """FG-1's completeness gap per image, in float64: ``|Σ terms − f(x)| / (|f(x)| + Σ_terms |term total|)``
    (relative to the sizes of the parts, so that a logit near 0 does not inflate it)."""
    net, x64 = copy.deepcopy(model).double().eval(), x.double()
    f = full_gradients(net, x64, target)
    totals = [f.input.flatten(1).sum(1)] + [t.flatten(1).sum(1) for t in f.bias.values()]
    return (f.total() - f.output).abs() / (f.output.abs() + torch.stack(totals).abs().sum(0))


def bias_share(model: nn.Module, x: Tensor, target) -> float:
    """FG-4's statistic: the median over images of ``|f − ∇f·x| / (|∇f·x| + |f − ∇f·x|)``, the share of the
    output the bias terms carry."""
    f = full_gradients(model, x, target)
    bias = (f.output - f.input_share()).abs()
    return float((bias / (f.input_share().abs() + bias)).median())


def folding_identity(model: nn.Module, x: Tensor, target, *, seed: int = 0, offset: float = 1e-4) -> dict[str, float]:
    """FG-5: the FullGrad map of ``model`` and of its copy with every batch-norm folded into the convolution
    before it, in float64, on inputs offset by one fixed Gaussian draw of std ``offset`` (no max-pool window
    holds an exact tie). Largest over images of ``max |S_folded − S| / max |S|``, abs and signed
    post-processing, with a convolution and its batch-norm as one term (``merged``) and as two (``separate``)."""
    g = torch.Generator().manual_seed(int(seed))
    x64 = (x.detach().cpu().double() + offset * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(x.device)
    net = copy.deepcopy(model).double().eval()
    folded = fold_batchnorm(net, x64[:64])
    out = {}
    for merge in (True, False):
        for post in ("abs", "signed"):
            a = attribute(net, x64, target, method="fullgrad", post=post, merge_batchnorm=merge)
            b = attribute(folded, x64, target, method="fullgrad", post=post, merge_batchnorm=merge)
            rel = (a - b).abs().flatten(1).amax(1) / a.abs().flatten(1).amax(1)
            out[f"{'merged' if merge else 'separate'}, {post}"] = float(rel.max())
    return out


def aggregation_order_gap(model: nn.Module, x: Tensor, target) -> float:
    """FG-6: the largest relative difference between FullGrad's channel-sum-then-upsample aggregation and
    upsampling every channel before summing (float32)."""
    f = full_gradients(model, x, target)
    ours, reference = aggregate(f, x.shape), aggregate_per_channel(f, x.shape)
    return float((ours - reference).abs().max() / reference.abs().max())


def smooth_share(maps: Tensor, x: Tensor, k: float = 0.2, window: int = 5) -> float:
    """The share of each map's ``k`` least salient pixels (Σ_c |map|) that lie in smooth regions of the image
    (local standard deviation over a ``window``-px square, channels averaged, below the image's median)."""
    gray = x.detach().float().mean(1, keepdim=True)
    pad = window // 2
    mean = torch.nn.functional.avg_pool2d(gray, window, stride=1, padding=pad, count_include_pad=False)
    sq = torch.nn.functional.avg_pool2d(gray ** 2, window, stride=1, padding=pad, count_include_pad=False)
    local = (sq - mean ** 2).clamp_min(0).sqrt().flatten(1)
    smooth = local < local.median(1, keepdim=True).values
    scores = reduce_channels(maps.detach().float(), "abs-sum").flatten(1) if maps.shape[1] > 1 else maps.abs().flatten(1)
    low = scores.argsort(dim=1, stable=True)[:, : int(k * scores.shape[1])]
    return float(smooth.cpu().gather(1, low.cpu()).float().mean())


def input_term_map(model: nn.Module, x: Tensor, target) -> Tensor:
    """FullGrad's input term alone, post-processed as in the full map: ``|∇f ⊙ x|``, per-image min-max, channels
    summed (the part of FullGrad that needs no bias)."""
    return aggregate({"input": full_gradients(model, x, target).input}, x.shape)
