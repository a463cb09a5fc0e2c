"""Interactive explorers for saliency maps (ipywidgets).

The widget only wires controls to three plain functions that tests call headless:

- :class:`ExplorerState` — every choice the reader can make (method, base, sample, σ, ...);
- :func:`options_for` — which controls matter for a method (the others are greyed out);
- :func:`compute` — the maps for a state; :func:`render` — the figure for a state and its maps.

:func:`explorer` builds the controls, and on every change updates the state, recomputes and puts
the new figure (a PNG) into an ``Output`` widget. Setting ``Output.outputs`` directly instead of
capturing ``display()`` keeps it working without a kernel (tests) and in any frontend.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from xailab import viz
from xailab.attribution import OPTION_RANGES, STATS, TARGETS, attribute, ensemble, method_info, resolve_target
from xailab.utils import check_positive, resolve_device

ENSEMBLES = STATS
#: The ensemble bases the explorer offers.
ENSEMBLE_BASES = ("gradient", "input_x_gradient", "integrated_gradients", "guided_backprop")
#: The methods the explorer offers by default.
EXPLORER_METHODS = ("gradient", "input_x_gradient", "integrated_gradients", "guided_backprop",
                    *ENSEMBLES, "grad_cam", "guided_grad_cam", "fullgrad", "deeplift", "random", "sobel")
VIEWS = ("heatmap", "overlay")
#: The tunable options the explorer has a control for (their ranges: the registry's OPTION_RANGES).
TUNABLE = ("base", "sigma", "n_samples", "steps")


@dataclass(frozen=True)
class ExplorerState:
    """What the explorer shows. ``sigma`` is a fraction of the input's value range (SmoothGrad's
    convention); ``steps`` is the number of Integrated Gradients steps; ``target`` says whether
    the true label or the model's predicted class is explained."""

    method: str = "gradient"
    base: str = "gradient"
    index: int = 0
    sigma: float = 0.15
    n_samples: int = 15
    steps: int = 32
    target: str = "label"
    view: str = "heatmap"
    signed: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.base not in ENSEMBLE_BASES:
            raise ValueError(f"base must be one of {ENSEMBLE_BASES}, got {self.base!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, got {self.view!r}")
        if int(self.index) != self.index or self.index < 0:
            raise ValueError(f"index must be a sample index >= 0, got {self.index!r}")
        check_positive("sigma", self.sigma)
        check_positive("n_samples", self.n_samples, integer=True)
        check_positive("steps", self.steps, integer=True)


def options_for(method: str, base: str = "gradient") -> dict[str, bool]:
    """Which controls are enabled for ``method`` (with ensemble ``base``): name -> bool, read from the
    registry: the method's tunable options, and for a method that takes a base, the base's too (IG's
    ``steps`` matters for an ensemble built on it)."""
    info = method_info(method)
    used = set(info.options)
    if info.takes_base:
        used |= set(method_info(base).options)
    return {name: name in used for name in TUNABLE}


def method_options(state: ExplorerState) -> dict:
    """The keyword options passed to the attribution method for ``state`` (only those it reads)."""
    enabled = options_for(state.method, state.base)
    opts = {name: getattr(state, name) for name in ("sigma", "n_samples", "steps") if enabled[name]}
    if enabled["base"]:
        opts["base"] = state.base
    if method_info(state.method).seeded:
        opts["seed"] = state.seed
    return opts


def compute(state: ExplorerState, model, data, *, device="auto") -> dict[str, torch.Tensor]:
    """The maps to draw for ``state``: ``{name: (1, C, H, W) tensor}`` (CPU).

    An ensemble returns its base map and all three statistics from one set of noisy samples,
    so the reader sees what averaging (SmoothGrad), squaring (SmoothGrad²) and the variance
    (VarGrad) each do to the same gradients. Any other method returns its single map.
    """
    if state.index >= len(data):
        raise ValueError(f"index must be < {len(data)} (the number of samples), got {state.index}")
    dev = resolve_device(device)
    x = data.x[state.index:state.index + 1].to(dev)
    target = resolve_target(state.target, x, model=model, labels=data.y[state.index:state.index + 1])
    opts = method_options(state)
    if state.method in ENSEMBLES:
        base_opts = {"steps": opts.pop("steps")} if "steps" in opts else {}
        stats = ensemble(model, x, target, stats=ENSEMBLES, **opts, **base_opts)
        maps = {f"{state.base} (base)": attribute(model, x, target, method=state.base, **base_opts)}
        maps.update({name: stats[name] for name in ENSEMBLES})
    else:
        maps = {state.method: attribute(model, x, target, method=state.method, **opts)}
    return {name: m.detach().cpu() for name, m in maps.items()}


def render(state: ExplorerState, maps: dict[str, torch.Tensor], data, *, figsize=None) -> Figure:
    """The explorer's figure: the input (ground-truth mask outlined when known), then each map.

    The selected method's column title is marked with ``▸``.
    """
    x = data.x[state.index]
    names = list(maps)
    fig = Figure(figsize=figsize or (2.3 * (1 + len(names)) + 0.6, 2.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, 1 + len(names)))
    label = int(data.y[state.index])
    cls = data.classes[label] if label < len(getattr(data, "classes", ())) else str(label)
    viz.show_image(axes[0], x, title=f"#{state.index}: {cls}")
    if getattr(data, "mask", None) is not None and data.mask.ndim == 4 and data.mask[state.index].max() > 0:
        axes[0].contour(data.mask[state.index, 0].cpu().numpy(), levels=[0.5], colors="cyan", linewidths=1.0)
    for ax, name in zip(axes[1:], names):
        title = ("▸ " if name == state.method else "") + name
        if state.view == "overlay":
            viz.overlay(ax, x, maps[name][0], title=title)
        else:
            viz.heatmap(ax, maps[name][0], signed=state.signed, title=title, colorbar=True)
    knobs = ", ".join(f"{k}={v}" for k, v in method_options(state).items() if k != "seed")
    fig.suptitle(f"{state.method}({knobs}) explaining the {state.target}", fontsize=10)
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """PNG bytes of ``fig`` (what the explorer puts in its Output)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _display_png(png: bytes) -> dict:
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": "<explorer figure>"}}


def _display_text(text: str) -> dict:
    return {"output_type": "stream", "name": "stderr", "text": text + "\n"}


def explorer(model, data, methods: Sequence[str] = EXPLORER_METHODS, *, bases: Sequence[str] = ENSEMBLE_BASES,
             state: ExplorerState | None = None, device="auto", figsize=None):
    """An ipywidgets explorer: pick a method (and the base of an ensemble), a sample, σ, the
    number of noisy samples and IG steps; the figure below redraws on every change.

    Returns a ``VBox`` with extra attributes for scripting and tests: ``.state`` (the current
    :class:`ExplorerState`), ``.controls`` (name -> widget), ``.output`` and ``.redraws``.
    """
    import ipywidgets as W

    methods = tuple(methods)
    for m in methods:
        method_info(m)                  # a clear error naming an unknown method, before any widget
    unknown = [b for b in bases if b not in ENSEMBLE_BASES]
    if not methods or unknown:
        raise ValueError(f"explorer: methods must be non-empty and bases among {ENSEMBLE_BASES}; got "
                         f"methods={methods}, unknown bases={unknown}")
    state = state or ExplorerState(method=methods[0], base=bases[0])
    if state.method not in methods:
        raise ValueError(f"explorer: state.method {state.method!r} is not among methods {methods}")
    style = {"description_width": "88px"}
    controls = {
        "method": W.Dropdown(options=methods, value=state.method, description="method", style=style),
        "base": W.Dropdown(options=tuple(bases), value=state.base, description="base", style=style),
        "index": W.IntSlider(value=state.index, min=0, max=len(data) - 1, description="sample",
                             style=style, continuous_update=False),
        "sigma": W.FloatSlider(value=state.sigma, min=OPTION_RANGES["sigma"][0], max=OPTION_RANGES["sigma"][1],
                               step=0.01, description="σ (of range)", style=style, continuous_update=False),
        "n_samples": W.IntSlider(value=state.n_samples, min=OPTION_RANGES["n_samples"][0],
                                 max=OPTION_RANGES["n_samples"][1], description="n_samples", style=style,
                                 continuous_update=False),
        "steps": W.IntSlider(value=state.steps, min=OPTION_RANGES["steps"][0], max=OPTION_RANGES["steps"][1],
                             description="IG steps", style=style, continuous_update=False),
        "target": W.ToggleButtons(options=TARGETS, value=state.target, description="explain",
                                  style=style),
        "view": W.ToggleButtons(options=VIEWS, value=state.view, description="view", style=style),
        "signed": W.Checkbox(value=state.signed, description="keep sign", indent=False),
    }
    output = W.Output(layout=W.Layout(min_height="240px"))
    box = W.VBox([W.HBox([controls["method"], controls["base"], controls["index"]]),
                  W.HBox([controls["sigma"], controls["n_samples"], controls["steps"]]),
                  W.HBox([controls["target"], controls["view"], controls["signed"]]),
                  output])
    box.state, box.controls, box.output, box.redraws = state, controls, output, 0

    def sync_enabled():
        for name, on in options_for(box.state.method, box.state.base).items():
            controls[name].disabled = not on

    def redraw():
        try:
            maps = compute(box.state, model, data, device=device)
            png = figure_png(render(box.state, maps, data, figsize=figsize))
            output.outputs = (_display_png(png),)
        except Exception as err:  # shown to the reader instead of vanishing into the widget log
            output.outputs = (_display_text(f"{box.state.method}: {type(err).__name__}: {err}"),)
        box.redraws += 1

    def on_change(change):
        name = change["owner"]._explorer_field
        box.state = replace(box.state, **{name: change["new"]})
        sync_enabled()
        redraw()

    for name, widget in controls.items():
        widget._explorer_field = name
        widget.observe(on_change, names="value")
    sync_enabled()
    redraw()
    return box



def comparison_figure(x, maps: dict, method: str, index: int, variant: str, *, reference: str = "dense",
                      masks=None, scores: dict | None = None, figsize=(7, 2.5)) -> Figure:
    """Image ``index`` of ``x`` (its ``masks`` outlined), the ``reference`` map of ``method`` and its map
    under ``variant``, side by side. ``maps[(variant, method)]``: pixel maps ``(N, 1, H, W)``;
    ``scores[(variant, method)]``: one score per image, shown in the titles."""
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 3)
    viz.show_image(axes[0], x[index], title=f"image {index}")
    if masks is not None:
        axes[0].contour(masks[index, 0].cpu().numpy(), levels=[0.5], colors="cyan", linewidths=1)
    for ax, v in ((axes[1], reference), (axes[2], variant)):
        score = "" if scores is None else f": {float(scores[(v, method)][index]):.2f}"
        viz.heatmap(ax, maps[(v, method)][index].cpu(), title=f"{v}{score}")
    return fig


def comparison_explorer(x, maps: dict, *, reference: str = "dense", masks=None, scores: dict | None = None):
    """Widgets to browse :func:`comparison_figure`: a method, an image and a variant. Returns a ``VBox`` with
    ``.controls`` and ``.output`` (the figure as a PNG, as :func:`explorer` does)."""
    import ipywidgets as W

    methods = list(dict.fromkeys(m for _, m in maps))
    variants = [v for v in dict.fromkeys(v for v, _ in maps) if v != reference]
    controls = {"method": W.Dropdown(options=methods, value=methods[0], description="method"),
                "index": W.IntSlider(0, 0, len(x) - 1, description="image", continuous_update=False),
                "variant": W.Dropdown(options=variants, value=variants[0], description="variant")}
    output = W.Output(layout=W.Layout(min_height="200px"))
    box = W.VBox([W.HBox(list(controls.values())), output])
    box.controls, box.output = controls, output

    def redraw(_change=None):
        fig = comparison_figure(x, maps, controls["method"].value, controls["index"].value, controls["variant"].value,
                                reference=reference, masks=masks, scores=scores)
        output.outputs = (_display_png(figure_png(fig)),)

    for widget in controls.values():
        widget.observe(redraw, names="value")
    redraw()
    return box
