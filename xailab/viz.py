"""Figures for saliency maps: heatmaps, overlays, method x sample grids, curves, image sheets.

Conventions, so that every notebook's figures read the same way:

- **signed** maps (a gradient, Integrated Gradients, DeepLift...) use a diverging colormap
  (``RdBu_r``: red = evidence for the class, blue = against) centred at 0 with symmetric limits;
- **magnitude** maps (``abs-sum`` reductions, Grad-CAM, SmoothGrad²...) use a sequential
  colormap (``inferno``) from 0;
- maps with more than one channel are reduced to one pixel map with
  :func:`xailab.attribution.reduce_channels` (``reduce="sum"`` keeps the sign, ``"abs-sum"``
  is the default for magnitude; pass ``reduce=`` to choose);
- display limits are clipped at a high percentile of |map| (``clip=99.5``) because a handful of
  extreme pixels otherwise wash out the rest of the map; ``clip=None`` shows the full range.

Everything works with the Agg backend and builds :class:`matplotlib.figure.Figure` objects that
are not registered with ``pyplot``: nothing is shown behind the caller's back, tests do not leak
figures, and a notebook displays a returned figure once (``fig`` as the last expression, or
``display(fig)``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from xailab.attribution.maps import reduce_channels
from xailab.utils import check_fraction

SIGNED_CMAP = "RdBu_r"
MAGNITUDE_CMAP = "inferno"
CLIP = 99.5  # percentile of |map| used as the display limit


# --------------------------------------------------------------------------- array helpers
def _numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float32).numpy()
    return np.asarray(a, dtype=np.float32)


def _single(a, what: str) -> np.ndarray:
    """One image or map as (C, H, W): accepts (H, W), (C, H, W) or a batch of one (1, C, H, W)."""
    arr = _numpy(a)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{what} must be (H, W), (C, H, W) or (1, C, H, W), got shape {tuple(arr.shape)}")
    return arr


def _batch(a, what: str) -> np.ndarray:
    """A batch as (N, C, H, W): accepts (N, C, H, W), one (C, H, W) image or (H, W)."""
    arr = _numpy(a)
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{what} must be (N, C, H, W), (C, H, W) or (H, W), got shape {tuple(arr.shape)}")
    return arr


def _reduce(chw: np.ndarray, reduce: str) -> np.ndarray:
    """(C, H, W) -> (H, W) with the project's one channel-reduction helper."""
    if chw.shape[0] == 1:
        return chw[0]
    return _numpy(reduce_channels(torch.from_numpy(chw[None].copy()), reduce=reduce))[0, 0]


def _is_signed(arr: np.ndarray) -> bool:
    """A map is shown as signed when it has negative values (magnitudes never do)."""
    return bool(np.nanmin(arr) < 0) if arr.size else False


def pixel_map(maps, *, signed: bool | None = None, reduce: str | None = None) -> tuple[np.ndarray, bool]:
    """One map as an (H, W) array plus whether it is shown signed.

    ``signed=None`` decides from the data (any negative value -> signed). ``reduce=None`` picks
    ``"sum"`` for signed display (so that the sign survives) and ``"abs-sum"`` otherwise.
    """
    chw = _single(maps, "maps")
    if signed is None:
        signed = _is_signed(chw)
    hw = _reduce(chw, reduce or ("sum" if signed else "abs-sum"))
    if not signed and _is_signed(hw):
        hw = np.abs(hw)  # magnitude display of a signed single-channel map
    return hw, signed


def display_limits(hw: np.ndarray, signed: bool, clip: float | None = CLIP) -> tuple[float, float]:
    """(vmin, vmax) for a pixel map: symmetric around 0 when signed, from 0 otherwise."""
    mag = np.abs(hw[np.isfinite(hw)])
    top = float(np.percentile(mag, clip)) if (clip is not None and mag.size) else float(mag.max(initial=0.0))
    if top <= 0:
        top = float(mag.max(initial=0.0)) or 1.0  # flat or all-zero map: any positive limit
    return (-top, top) if signed else (0.0, top)


def image_array(image) -> tuple[np.ndarray, str | None]:
    """An image as something ``imshow`` draws: (H, W) with a gray colormap or (H, W, 3) RGB."""
    chw = _single(image, "image")
    if chw.shape[0] == 1:
        return np.clip(chw[0], 0, 1), "gray"
    if chw.shape[0] == 3:
        return np.clip(chw.transpose(1, 2, 0), 0, 1), None
    raise ValueError(f"image must have 1 or 3 channels, got {chw.shape[0]}")


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- single axes
def heatmap(ax, maps, signed=None, cmap=None, title=None, *, reduce: str | None = None,
            clip: float | None = CLIP, colorbar: bool = False):
    """Draw one map on ``ax`` and return the ``AxesImage``.

    ``maps``: one map, (H, W), (C, H, W) or (1, C, H, W). ``signed=None`` shows a map with negative
    values on the diverging colormap with limits ``±L`` and any other map on the sequential one
    from 0, where ``L`` is the ``clip`` percentile of |map|. ``colorbar=True`` adds one beside ``ax``.
    """
    hw, signed = pixel_map(maps, signed=signed, reduce=reduce)
    vmin, vmax = display_limits(hw, signed, clip)
    im = ax.imshow(hw, cmap=cmap or (SIGNED_CMAP if signed else MAGNITUDE_CMAP), vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    _bare(ax)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, ticks=MaxNLocator(4))
        cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))  # raw scales span 1e-7 .. 1e2
        cb.ax.tick_params(labelsize=7)
    return im


def show_image(ax, image, title=None):
    """Draw an image (1-channel in gray, 3-channel in colour) without ticks; returns the AxesImage."""
    arr, cmap = image_array(image)
    im = ax.imshow(arr, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    _bare(ax)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return im


def overlay(ax, image, maps, alpha=0.5, title=None, *, reduce: str | None = None,
            clip: float | None = CLIP, cmap=None):
    """The image in grayscale with the map's magnitude painted over it (``maps``: one map).

    The image is dimmed; the colour's opacity grows in proportion to the saliency (up to
    ``alpha``), so unimportant pixels leave the image visible and important ones light up.
    Signed maps are overlaid by magnitude.
    """
    check_fraction("alpha", alpha)
    arr, _ = image_array(image)
    gray = arr if arr.ndim == 2 else arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    ax.imshow(gray, cmap="gray", vmin=-0.25, vmax=1.6, interpolation="nearest")  # dimmed: colour stands out
    hw, _ = pixel_map(maps, signed=False, reduce=reduce)
    _, top = display_limits(hw, False, clip)
    level = np.clip(hw / top, 0, 1)
    # the bright upper part of the colormap, opacity proportional to the level
    rgba = colormaps[cmap or MAGNITUDE_CMAP](0.35 + 0.65 * level)
    rgba[..., 3] = alpha * level
    im = ax.imshow(rgba, interpolation="nearest")
    _bare(ax)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return im


def curves(ax, xs, ys: Mapping[str, Sequence], *, err=None, xlabel, ylabel, title=None, marker="o"):
    """One line per entry of ``ys`` with a shaded spread.

    ``xs``: one sequence shared by all lines, or a dict with one per name. Each ``ys[name]`` is a
    sequence of values, or a 2-D array (runs x points) whose mean is drawn with ±1 std shaded.
    ``err[name]``: a sequence (± band) or a pair (low, high) of sequences; it overrides the std.
    """
    err = err or {}
    for name, y in ys.items():
        x = _numpy(xs[name] if isinstance(xs, Mapping) else xs)
        y = _numpy(y)
        spread = None
        if y.ndim == 2:
            y, spread = y.mean(0), y.std(0)
        if y.shape != x.shape:
            raise ValueError(f"curves: ys[{name!r}] has {y.shape[-1] if y.ndim else 0} points "
                             f"but xs has {x.shape[-1] if x.ndim else 0}")
        (line,) = ax.plot(x, y, marker=marker, ms=3, label=name)
        band = err.get(name)
        if band is not None:
            band = _numpy(band)
            lo, hi = (band[0], band[1]) if band.ndim == 2 else (y - band, y + band)
        elif spread is not None:
            lo, hi = y - spread, y + spread
        else:
            continue
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        ax.legend(fontsize=8, frameon=False)
    return ax


def log_ticks(ax, values, axis: str = "x"):
    """A log scale on ``axis`` with plain tick labels at ``values`` (no minor labels)."""
    from matplotlib.ticker import NullFormatter

    getattr(ax, f"set_{axis}scale")("log")
    getattr(ax, f"set_{axis}ticks")(list(values), [f"{v:g}" for v in values])
    getattr(ax, f"{axis}axis").set_minor_formatter(NullFormatter())
    return ax


# --------------------------------------------------------------------------- whole figures
def grid(images, maps: Mapping[str, torch.Tensor], *, signed=False, titles=None, figsize=None,
         reduce: str | None = None, row_labels: Sequence[str] | None = None, overlay_maps: bool = False,
         clip: float | None = CLIP, colorbar: bool = True) -> Figure:
    """Methods x samples: one row per sample, the image first then one column per method.

    ``maps[name]``: (N, C, H, W) attributions for the N ``images`` (any C; reduced per ``reduce``).
    ``signed``: ``False`` shows magnitudes, ``True`` keeps the sign (diverging colormap), ``None``
    decides per method from its values. ``titles``: column titles (a sequence in ``maps`` order
    or a dict name -> title), by default the method names. ``row_labels``: one text per sample
    (e.g. its class). Every map is scaled by its own display limit, so the colorbar reads as
    relative attribution (0 .. 1, or -1 .. 1 when signed).
    """
    imgs = _batch(images, "images")
    n = imgs.shape[0]
    names = list(maps)
    if not names:
        raise ValueError("grid: maps is empty; pass a dict of method name -> (N, C, H, W) maps")
    batches = {}
    for name in names:
        b = _batch(maps[name], f"maps[{name!r}]")
        if b.shape[0] != n or b.shape[-2:] != imgs.shape[-2:]:
            raise ValueError(f"grid: maps[{name!r}] has shape {tuple(b.shape)}, expected {n} maps of "
                             f"{imgs.shape[-2]}x{imgs.shape[-1]} pixels like the images")
        batches[name] = b
    col_titles = _column_titles(names, titles)
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"grid: row_labels has {len(row_labels)} entries for {n} samples")
    ncols = 1 + len(names)
    fig = Figure(figsize=figsize or (1.5 * ncols + 0.8, 1.5 * n + 0.4), layout="constrained")
    axes = np.asarray(fig.subplots(n, ncols, squeeze=False))
    shown = {}
    for i in range(n):
        show_image(axes[i, 0], imgs[i], title="input" if i == 0 else None)
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]), fontsize=9)
        for j, name in enumerate(names, start=1):
            hw, is_signed = pixel_map(batches[name][i], signed=signed, reduce=reduce)
            top = display_limits(hw, is_signed, clip)[1]
            unit = hw / top
            ax = axes[i, j]
            if overlay_maps:
                overlay(ax, imgs[i], np.abs(unit), alpha=0.85, clip=None)
            else:
                heatmap(ax, unit, signed=is_signed, clip=None)
                ax.images[-1].set_clim(-1 if is_signed else 0, 1)
            shown[is_signed] = ax.images[-1]
            if i == 0:
                ax.set_title(col_titles[j - 1], fontsize=9)
    if colorbar and not overlay_maps:
        for is_signed, im in shown.items():
            label = "relative attribution" + (" (signed)" if is_signed and len(shown) > 1 else "")
            fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label=label)
    return fig


def _column_titles(names, titles) -> list[str]:
    if titles is None:
        return names
    if isinstance(titles, Mapping):
        return [str(titles.get(name, name)) for name in names]
    titles = list(titles)
    if len(titles) != len(names):
        raise ValueError(f"grid: titles has {len(titles)} entries for {len(names)} methods")
    return [str(t) for t in titles]


def show_images(images, labels=None, ncols=8, *, masks=None, classes: Sequence[str] | None = None,
                figsize=None) -> Figure:
    """A sheet of images with optional labels and ground-truth mask outlines.

    ``labels``: one per image (ints are looked up in ``classes`` when given). ``masks``:
    (N, 1, H, W) {0, 1} relevance masks, outlined in cyan on top of each image.
    """
    imgs = _batch(images, "images")
    n = imgs.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"show_images: labels has {len(labels)} entries for {n} images")
    mask_arr = _batch(masks, "masks") if masks is not None else None
    if mask_arr is not None and mask_arr.shape[0] != n:
        raise ValueError(f"show_images: masks has {mask_arr.shape[0]} entries for {n} images")
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=figsize or (1.3 * ncols, 1.4 * nrows + 0.2), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        if k >= n:
            ax.set_axis_off()
            continue
        title = None
        if labels is not None:
            lab = labels[k]
            lab = lab.item() if isinstance(lab, torch.Tensor) else lab
            title = classes[int(lab)] if classes is not None and isinstance(lab, (int, np.integer)) else str(lab)
        show_image(ax, imgs[k], title=title)
        if mask_arr is not None and mask_arr[k].max() > 0:
            ax.contour(mask_arr[k, 0], levels=[0.5], colors="cyan", linewidths=1.0)
    return fig


# --------------------------------------------------------------------------- tables
def span(values, fmt: str = "{:.2f}") -> str:
    """``"low–high"`` of ``values``, for prose rendered from a run."""
    values = list(values)
    return f"{fmt.format(min(values))}–{fmt.format(max(values))}"


class MarkdownTable(str):
    """A Markdown table as a string that notebooks render as a table (``_repr_markdown_``)."""

    def _repr_markdown_(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return str(self)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], fmt: str = "{:.3f}") -> MarkdownTable:
    """A Markdown table: floats formatted with ``fmt``, everything else with ``str``. As a cell's
    last expression (or with ``display``) it shows as a table; ``print`` gives the Markdown text."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return fmt.format(float(v))
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return MarkdownTable("\n".join(lines))
