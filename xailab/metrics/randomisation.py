"""Randomisation: does a map change when the model it claims to explain is destroyed?

Convention (:mod:`xailab.metrics`): ``metric(method, *, model, x, target, **options)``: it scores a
*method* rather than one batch of maps, running it again on altered copies of the model.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from xailab.attribution import attribute, get_method, reduce_channels
from xailab.hooks import parameter_layers
from xailab.metrics.consistency import rank_correlation, ssim
from xailab.utils import progress as progress_bar

__all__ = ["cascade", "randomisation_check"]


def _reinitialise(module: nn.Module, seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                p.normal_(0, 0.05)


def cascade(model: nn.Module, layers: Sequence[str] | None = None, seed: int = 0):
    """Adebayo et al.'s cascade on a deep copy of ``model``: yield ``(step, layer, copy)`` after re-initialising
    each layer of ``layers`` in turn (module names, output first; default :func:`xailab.hooks.parameter_layers`),
    layer ``step`` (1-based) with its ``reset_parameters()`` seeded by ``seed + step``. ``model`` is untouched."""
    names = list(parameter_layers(model) if layers is None else layers)
    known = dict(model.named_modules())
    missing = [n for n in names if n not in known or not n]
    if missing:
        raise ValueError(f"unknown layer(s) {missing}; layers with parameters: {', '.join(parameter_layers(model))}")
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    for step, name in enumerate(names, start=1):
        _reinitialise(modules[name], seed + step)
        yield step, name, randomised


def randomisation_check(method: str | Callable = "gradient", *, model: nn.Module, x: Tensor, target,
                        layers: Sequence[str] | None = None, seed: int = 0, progress: bool = True,
                        **options) -> list[dict]:
    """Adebayo et al. (2018) cascading model-parameter randomisation.

    On a deep copy of ``model``, re-initialise the layers one by one from the top (``layers``:
    module names in cascade order, default :func:`xailab.hooks.parameter_layers`, output first), each with
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

    def maps(m):
        a = attribute(m, x, target, method=fn, **options).detach()
        return reduce_channels(a, "abs-sum"), reduce_channels(a, "sum")

    abs0, signed0 = maps(model)
    image = abs0.ndim == 4
    results = []
    steps = cascade(model, names, seed)
    for step, name, randomised in progress_bar(steps, progress, desc="randomising", leave=False, total=len(names)):
        abs_k, signed_k = maps(randomised)
        row = {"layer": name, "step": step,
               "spearman_abs_per_sample": rank_correlation(abs0, other=abs_k),
               "spearman_per_sample": rank_correlation(signed0, other=signed_k),
               "ssim_per_sample": ssim(abs0, other=abs_k) if image else torch.full((x.shape[0],), float("nan"))}
        for key in ("spearman_abs", "spearman", "ssim"):
            row[key] = float(row[f"{key}_per_sample"].nanmean())
        results.append(row)
    return results
