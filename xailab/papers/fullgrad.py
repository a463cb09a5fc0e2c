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
from xailab.attribution import attribute, method_maps, reduce_channels
from xailab.attribution.fullgrad import decomposition_gap, full_gradients, layer_maps
from xailab.metrics import evaluate, flip_test
from xailab.models import SmallCNN
from xailab.removal import BLUR_SIGMA
from xailab.utils import forked_rng

__all__ = ["blank_share", "completeness_table", "digits_cnn", "flip_difference", "flip_experiment",
           "folding_comparison", "layer_figure", "perturbation_figure", "perturbation_table", "ranking", "signed_ranking",
           "smooth_activation_table"]


def digits_cnn(seed: int, input_size: int = 16) -> nn.Module:
    """The CNN notebook 03 explains on digits: two conv–batch-norm–ReLU–max-pool blocks (width 16), a two-layer
    head, ten classes; untrained, initialised from ``seed``."""
    return SmallCNN(in_channels=1, num_classes=10, width=16, depth=2, input_size=input_size, batch_norm=True, seed=seed)


def completeness_table(models: Mapping[str, nn.Module], x: Tensor, target) -> dict[str, dict]:
    """For each model: the relative completeness gap of the full-gradient terms in float64 (max) and
    float32 (median, max), the input-gradient's own gap (median) and the bias share
    ``|f - grad.x| / (|grad.x| + |f - grad.x|)`` (median)."""
    rows = {}
    for name, net in models.items():
        gap32 = decomposition_gap(net, x, target)
        gap64 = decomposition_gap(copy.deepcopy(net).double(), x.double(), target)
        f = full_gradients(net, x, target)
        inp_gap = (f.input_share() - f.output).abs() / f.output.abs()
        bias = (f.output - f.input_share()).abs()
        share = bias / (f.input_share().abs() + bias)
        rows[name] = dict(gap64_max=gap64.max().item(), gap32_median=gap32.median().item(),
                          gap32_max=gap32.max().item(), input_gap_median=inp_gap.median().item(),
                          bias_share_median=share.median().item())
    return rows


def smooth_activation_table(x: Tensor, target, seed: int, activations=(nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU)
                            ) -> list[list]:
    """Completeness on small untrained networks with smooth activations (conv, activation, max-pool, a
    two-layer head; initialised from ``seed``): per activation, ``[name, largest gap in float64 (text),
    median gap in float32 (text), median gap without the implicit-bias terms]``."""
    rows = []
    for act in activations:
        with forked_rng(seed):
            net = nn.Sequential(nn.Conv2d(x.shape[1], 8, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
                                nn.Linear(8 * (x.shape[-1] // 2) ** 2, 32), act(), nn.Linear(32, 10))
        net = net.to(x.device).eval()
        terms = full_gradients(net, x, target)
        implicit = sum(v.flatten(1).sum(1) for k, v in terms.bias.items() if k.endswith("(implicit)"))
        without = ((terms.total() - implicit - terms.output).abs() / terms.output.abs()).median().item()
        rows.append([act.__name__, f"{decomposition_gap(net.double(), x.double(), target).max().item():.0e}",
                     f"{decomposition_gap(net.float(), x, target).median().item():.0e}", without])
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
                       ) -> dict[tuple, dict[str, Tensor]]:
    """Pixel perturbation of every map: ``{(fill, "least" | "most"): {label: change (fractions, images)}}``
    (the catalogue's ``least_salient`` and ``most_salient``, one fraction at a time); per image, so
    that methods can be compared paired."""
    out = {}
    for fill in fills:
        for which in ("least", "most"):
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


def blank_share(maps: Tensor, x: Tensor, k: float = 0.2) -> float:
    """The share of blank (exactly zero) pixels of ``x`` among each image's ``k`` least salient pixels of
    ``maps`` (abs-sum over channels), over all images: where a least-salient removal changes nothing."""
    pix = reduce_channels(maps, "abs-sum").flatten(1) if maps.shape[1] > 1 else maps.abs().flatten(1)
    low = pix.argsort(dim=1, stable=True)[:, : int(k * pix.shape[1])]
    return float((x.flatten(1).cpu().gather(1, low) == 0).float().mean())


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
            per_fraction = {mode: [flip_test(sa[label], model=model, x=xa, target=a, contrast=b, contrast_maps=other,
                                             fractions=(f,)) for f in fractions]
                            for mode, other in (("a - b", sb[label]), ("a only", None))}
            for mode, drops in per_fraction.items():
                flip[mode][label].append(torch.stack(drops))
            if (a, b) == tuple(pairs[0]):
                examples[label] = sa[label][:1] - sb[label][:1]
    return {mode: {k: torch.cat(v, 1).cpu() for k, v in rows.items()} for mode, rows in flip.items()}, examples


def flip_difference(flips: Mapping, a: str, b: str, mode: str = "a - b") -> tuple[Tensor, Tensor]:
    """Per fraction of :func:`flip_experiment`: the mean over images of the drop of ``a`` minus the drop of
    ``b``, and two standard errors of it."""
    d = flips[mode][a] - flips[mode][b]
    return d.mean(1), 2 * d.std(1) / d.shape[1] ** 0.5


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
