"""Figures of a ROAR sweep: accuracy against the fraction removed, estimators against controls.

Like :mod:`xailab.viz`, figures are plain :class:`matplotlib.figure.Figure` objects (not registered
with pyplot): display them as a cell's last expression or with ``display(fig)``.
"""
from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

from xailab.papers.roar.estimators import CONTROLS
from xailab.papers.roar.result import RoarResult
from xailab.viz import curves

_TITLES = {"roar": "ROAR: remove top, retrain", "kar": "KAR: keep top, retrain",
           "morf": "MoRF: remove top, original model", "lerf": "LeRF: keep top, original model"}


def _draw(ax, result: RoarResult, names: Sequence[str], variant: str, title=None, chance=True):
    ys, xs = {}, {}
    for name in names:
        fr, runs = result.curve(name, variant)
        if fr:
            xs[name], ys[name] = fr, runs
    curves(ax, xs, ys, xlabel="fraction of features removed", ylabel="test accuracy",
           title=title if title is not None else _TITLES[variant])
    for line in ax.get_lines():  # controls dashed and grey-ish, so the estimators stand out
        if line.get_label() in CONTROLS:
            line.set_linestyle("--")
    if chance and "chance" in result.meta:
        ax.axhline(result.meta["chance"], color="k", lw=0.8, ls=":", label="_chance")
    ax.set_ylim(0, 1.02)
    return ax


def plot(result: RoarResult, estimators: Sequence[str] | None = None, *, controls: Sequence[str] = CONTROLS,
         variant: str = "roar", ax=None, title=None):
    """Accuracy vs fraction removed for ``estimators`` (default: all) with the ``controls`` dashed;
    mean over seeds with ±1 std shaded; the dotted line is chance.  Returns the Figure."""
    names = list(estimators) if estimators is not None else [e for e in result.estimators if e not in controls]
    names += [c for c in controls if c in result.estimators and c not in names]
    if ax is None:
        ax = Figure(figsize=(5, 3.6), layout="constrained").add_subplot()
    _draw(ax, result, names, variant, title)
    return ax.figure


def plot_variants(result: RoarResult, estimators: Sequence[str] | None = None, *,
                  variants: Sequence[str] = ("roar", "morf"), controls: Sequence[str] = CONTROLS,
                  figsize=None):
    """One panel per variant, same estimators, shared y axis: ROAR next to MoRF (and KAR, LeRF)."""
    variants = [v for v in variants if v in result.variants]
    fig = Figure(figsize=figsize or (4.6 * len(variants), 3.6), layout="constrained")
    axes = fig.subplots(1, len(variants), sharey=True, squeeze=False)
    for ax, v in zip(axes[0], variants):
        plot(result, estimators, controls=controls, variant=v, ax=ax)
    return fig


def plot_families(result: RoarResult, bases: Sequence[str] = ("gradient", "guided_backprop",
                                                             "integrated_gradients"), *,
                  variant: str = "roar", controls: Sequence[str] = CONTROLS, figsize=None):
    """The paper's layout: one panel per base method with its plain, squared and ensemble variants."""
    present = [b for b in bases if any(b in e for e in result.estimators)]
    fig = Figure(figsize=figsize or (4.6 * len(present), 3.8), layout="constrained")
    axes = fig.subplots(1, len(present), sharey=True, squeeze=False)
    for ax, base in zip(axes[0], present):
        names = [e for e in result.estimators if e not in controls and (e == base or f"({base})" in e
                                                                         or e.startswith(base + "²"))]
        plot(result, names, controls=controls, variant=variant, ax=ax, title=f"{base} ({variant})")
    return fig
