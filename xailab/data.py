"""Data for the workbook: labelled tensors with, where known, ground-truth relevance masks.

* :func:`shapes` – synthetic colour images whose class is the kind of one object drawn on a
  textured, noisy background with distractors; the mask is exactly the object's pixels.
* :func:`add_trigger` / :func:`stamp_trigger` – trojan patches (several designs) for SPADE.
* :func:`roar_toy` – the ROAR paper's 16-dimensional toy data with known informative features.
* :func:`digits` – scikit-learn's bundled 8x8 digits (real data, offline).
* :func:`cifar10` / :func:`mnist` – torchvision datasets the user already has on disk.
* :func:`train_test_split` / :func:`disjoint_splits` – splits.

Every generator takes a ``seed`` and draws from its own ``torch.Generator``: the same seed gives
the same tensors, and the global RNG is never touched.
"""
from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from xailab.utils import check_fraction, check_positive, seeded_generator

__all__ = [
    "Data", "Triggered", "DatasetNotFoundError", "SHAPE_KINDS", "TRIGGER_DESIGNS",
    "shapes", "add_trigger", "stamp_trigger", "trigger_patch", "roar_toy", "digits", "cifar10",
    "mnist", "train_test_split", "disjoint_splits",
]


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------
@dataclass
class Data:
    """A labelled set of tensors.

    ``x`` is ``(N, C, H, W)`` float32 in [0, 1] for images or ``(N, D)`` for tabular data, ``y``
    is ``(N,)`` int64, ``mask`` (optional) is the ground-truth relevance with one channel
    ``(N, 1, H, W)`` (or ``(N, D)``) in {0, 1}. ``meta`` holds dataset-level facts that are not
    per sample (e.g. ``informative`` feature indices of :func:`roar_toy`); subsets share it.
    """

    x: Tensor
    y: Tensor
    mask: Tensor | None = None
    classes: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.y = torch.as_tensor(self.y).long()
        self.classes = tuple(self.classes)
        if self.x.shape[0] != self.y.shape[0] or self.y.ndim != 1:
            raise ValueError(f"x and y must have the same length N and y shape (N,); got x {tuple(self.x.shape)}, "
                             f"y {tuple(self.y.shape)}")
        if self.mask is not None and self.mask.shape[0] != self.x.shape[0]:
            raise ValueError(f"mask must have one row per sample: x {tuple(self.x.shape)}, mask {tuple(self.mask.shape)}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> "Data":
        """A subset (same classes and meta). An int gives a one-sample Data (batch axis kept)."""
        if isinstance(index, int):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"index {index} out of range for Data of length {n}")
            index = slice(index % n, index % n + 1)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index)
            if index.dtype != torch.bool:
                index = index.long()
        return Data(self.x[index], self.y[index], None if self.mask is None else self.mask[index],
                    self.classes, self.meta)

    def to(self, device) -> "Data":
        """A copy whose tensors live on ``device``."""
        meta = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.meta.items()}
        return Data(self.x.to(device), self.y.to(device), None if self.mask is None else self.mask.to(device),
                    self.classes, meta)

    @property
    def num_classes(self) -> int:
        """``len(classes)`` when the classes are named, else ``y.max() + 1``."""
        if self.classes:
            return len(self.classes)
        return int(self.y.max()) + 1 if len(self) else 0

    @property
    def informative(self) -> Tensor:
        """Indices of the informative features (tabular toy data only)."""
        if "informative" not in self.meta:
            raise AttributeError("this Data has no 'informative' features (only roar_toy data has them)")
        return self.meta["informative"]

    def __repr__(self) -> str:
        mask = None if self.mask is None else tuple(self.mask.shape)
        return (f"Data(n={len(self)}, x={tuple(self.x.shape)}, mask={mask}, classes={self.classes}, "
                f"meta={sorted(self.meta)})")


def _check_n(n) -> int:
    return int(check_positive("n", n, integer=True))


# --------------------------------------------------------------------------------------------
# shapes
# --------------------------------------------------------------------------------------------
SHAPE_KINDS = ("square", "disc", "triangle", "cross", "ring", "diamond", "x", "frame")
"""Object kinds in class order: ``shapes(num_classes=K)`` uses the first K."""


def _kind_mask(kind: str, u: Tensor, v: Tensor) -> Tensor:
    """Inside-test of one object kind in its own frame (u right, v down, extent about [-1, 1])."""
    au, av = u.abs(), v.abs()
    if kind == "square":
        return torch.maximum(au, av) <= 0.75
    if kind == "disc":
        return u * u + v * v <= 0.85
    if kind == "triangle":  # apex up, flat base
        return (v <= 0.75) & (v >= -1.0 + 1.75 * au)
    if kind == "cross":
        return ((au <= 0.3) & (av <= 1.0)) | ((av <= 0.3) & (au <= 1.0))
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    if kind == "diamond":
        return au + av <= 1.0
    if kind == "x":
        s, t = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
        return ((s.abs() <= 0.25) & (t.abs() <= 1.0)) | ((t.abs() <= 0.25) & (s.abs() <= 1.0))
    if kind == "frame":
        m = torch.maximum(au, av)
        return (m <= 0.85) & (m >= 0.5)
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates (rows, cols), each (1, H, W)."""
    r = torch.arange(size, dtype=torch.float32)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    return rows[None], cols[None]


def _smooth_field(n: int, size: int, cells: int, g: torch.Generator) -> Tensor:
    """Random (n, 3, size, size) field: ``cells``x``cells`` uniform values, upsampled bilinearly."""
    low = torch.rand(n, 3, cells, cells, generator=g)
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def _draw_distractors(img: Tensor, rows: Tensor, cols: Tensor, p: dict) -> Tensor:
    """Alpha-blend thin line segments and small soft blobs (not any class's shape) onto ``img``."""
    for j in range(p["kind"].shape[1]):
        a, b = p["start"][:, j, :, None, None], p["end"][:, j, :, None, None]  # (B, 2, 1, 1)
        dr, dc = rows - a[:, 0], cols - a[:, 1]
        if_line = p["kind"][:, j] == 0
        # lines: pixels within ``width`` of the segment a-b
        d = b - a
        t = ((dr * d[:, 0] + dc * d[:, 1]) / (d.pow(2).sum(1) + 1e-6)).clamp_(0, 1)
        line = torch.hypot(dr - t * d[:, 0], dc - t * d[:, 1]) <= p["width"][:, j, None, None]
        # blobs: anisotropic Gaussian centred on a (sigmas in pixels)
        sr, sc = p["sigma"][:, j, 0, None, None], p["sigma"][:, j, 1, None, None]
        blob = torch.exp_(-0.5 * ((dr / sr).square_() + (dc / sc).square_()))
        alpha = torch.where(if_line[:, None, None], line.float(), blob).mul_(p["opacity"][:, j, None, None])
        img = img.lerp_(p["colour"][:, j, :, None, None].expand_as(img), alpha[:, None])
    return img


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """(N,) hue in [0, 1), saturation, value -> (N, 3) RGB."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6) % 6
    return v[:, None] - (v * s)[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


_CHUNK = 512  # images rasterised at once; part of the random stream, so a constant
CUES = ("kind", "colour", "both")
_HUE_NAMES = ("red", "orange", "yellow", "chartreuse", "green", "spring green", "cyan", "azure", "blue", "violet",
              "magenta", "rose")


def _object_draws(n: int, size: int, lo: float, hi: float, rotation: float, brightness, g) -> dict:
    """Radius, centre, rotation and colour of one object per image (in the generator's order)."""
    radius = size * (lo + (hi - lo) * torch.rand(n, generator=g))
    centre = radius[:, None] + torch.rand(n, 2, generator=g) * (size - 1 - 2 * radius[:, None])
    theta = (torch.rand(n, generator=g) * 2 - 1) * math.radians(rotation)
    h, sat, v = torch.rand(n, generator=g), torch.rand(n, generator=g), torch.rand(n, generator=g)
    sat, val = 0.2 + 0.8 * sat, brightness[0] + (brightness[1] - brightness[0]) * v
    return dict(radius=radius, centre=centre, theta=theta, hue=h, sat=sat, val=val, colour=_hsv_to_rgb(h, sat, val))


def _object_mask(o: dict, sl: slice, rows: Tensor, cols: Tensor, names) -> Tensor:
    """Which pixels of images ``sl`` the object ``o`` covers, (B, H, W) bool."""
    cy, cx = o["centre"][sl, 0, None, None], o["centre"][sl, 1, None, None]
    cos, sin = o["theta"][sl].cos()[:, None, None], o["theta"][sl].sin()[:, None, None]
    r = o["radius"][sl, None, None]
    u = ((cols - cx) * cos + (rows - cy) * sin) / r
    v = (-(cols - cx) * sin + (rows - cy) * cos) / r
    kind = o["kind"][sl]
    inside = torch.zeros(kind.shape[0], rows.shape[-2], rows.shape[-1], dtype=torch.bool)
    for k in kind.unique().tolist():
        sel = kind == k
        inside[sel] = _kind_mask(names[k], u[sel], v[sel])
    return inside


def _check_small_objects(count_name: str, count: int, scale_name: str, scale: tuple[float, float]) -> None:
    """The one check of shapes' extra small objects (context, decoys): a count >= 0 and a radius range in (0, 0.5]."""
    if count < 0 or not 0 < scale[0] <= scale[1] <= 0.5:
        raise ValueError(f"{count_name} must be >= 0 and {scale_name} (low, high) with 0 < low <= high <= 0.5, "
                         f"got {count}, {scale}")


def shapes(n: int, size: int = 32, seed: int = 0, *, num_classes: int = 4, noise: float = 0.06,
           distractors: int = 2, scale: tuple[float, float] = (0.22, 0.35), rotation: float = 10.0,
           background: tuple[float, float] = (0.1, 0.5), texture: float = 0.15,
           brightness: tuple[float, float] = (0.8, 1.0), draw_object: bool = True, cue: str = "kind",
           objects: int = 1, context: int = 0, context_scale: tuple[float, float] = (0.07, 0.1),
           mask_of: str = "evidence", decoys: int = 0, decoy_scale: tuple[float, float] = (0.1, 0.16),
           decoy_kinds: Sequence[int] | None = None) -> Data:
    """Synthetic colour images whose class is the kind of one object (square, disc, triangle ...).

    Each image: a smooth random colour field with values in ``background`` plus a finer texture
    of amplitude ``texture``, ``distractors`` thin line segments or small soft blobs of random
    colour (never a class shape), then the class object (random hue and saturation, HSV value in
    ``brightness``, radius ``scale`` x ``size`` pixels, rotation within ±``rotation`` degrees,
    anywhere inside the image), then Gaussian pixel noise of std ``noise`` everywhere; clamped to
    [0, 1]. Classes are balanced (``n // num_classes`` or one more each).

    With the defaults, ``SmallCNN`` (3 blocks, width 16) trained with Adam (lr 1e-3, batch 64) on
    3000 images is near chance after one epoch (~35-40 %), passes 90 % test accuracy after about
    6 epochs and reaches ~96 % after 10 (about 12 s on one CPU core): learnable, not trivial.
    Raise ``noise``, ``texture``, ``distractors`` or ``rotation`` (or lower ``scale``) for harder data.

    ``cue`` says what carries the class: ``"kind"`` (default) the object's kind, its colour random;
    ``"colour"`` the object's hue (class ``k`` of ``K`` draws hues within ``1/(2K)`` of ``k/K``, a
    band no other class uses), its kind random among all :data:`SHAPE_KINDS`; ``"both"`` the kind and
    the hue together, redundant evidence. With a colour cue the distractors are grey, so that only
    objects carry hue. ``objects``: how many objects of the class each image holds (placed
    independently, later ones over earlier ones); the mask is their union.

    ``context``: how many small objects of the class (radius ``context_scale`` x ``size``, same cue as the
    object) are scattered over the image before the object is drawn: class evidence spread beyond one compact
    object, as a scene's context carries its class (ROAR's ``spread`` regime). ``mask_of``: ``"evidence"``
    (default) marks the object(s) and the context, ``"object"`` the object(s) alone; the images are the same
    either way.

    ``decoys``: how many small shapes (radius ``decoy_scale`` x ``size``) of a random kind among the classes'
    kinds (or among ``decoy_kinds``, class indices), in a random colour, every image carries whatever its
    class, under the context and the object and never in the mask: class-independent clutter that partly looks
    like a class, as a real scene holds things that resemble other classes; their kinds are in
    ``meta["decoy_kinds"]`` ``(N, decoys)``. With ``decoys=0`` (default) nothing is drawn for them and the
    images are those of earlier versions.

    ``mask`` is exactly the objects' pixels: they are drawn last and opaque, so no pixel outside
    the mask depends on them. ``draw_object=False`` gives the same images (same random draws)
    without the objects, with the same mask (where the objects would be).
    """
    n = _check_n(n)
    size = int(check_positive("size", size, integer=True))
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if not 2 <= num_classes <= len(SHAPE_KINDS):
        raise ValueError(f"num_classes must be in [2, {len(SHAPE_KINDS)}], got {num_classes}")
    if distractors < 0:
        raise ValueError(f"distractors must be >= 0, got {distractors}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if cue not in CUES:
        raise ValueError(f"cue must be one of {CUES}, got {cue!r}")
    if mask_of not in ("evidence", "object"):
        raise ValueError(f"mask_of must be 'evidence' or 'object', got {mask_of!r}")
    if decoy_kinds is not None and (not len(decoy_kinds) or any(not 0 <= int(k) < num_classes for k in decoy_kinds)):
        raise ValueError(f"decoy_kinds must be class indices in [0, {num_classes - 1}], got {decoy_kinds!r}")
    _check_small_objects("decoys", decoys, "decoy_scale", decoy_scale)
    _check_small_objects("context", context, "context_scale", context_scale)
    objects = int(check_positive("objects", objects, integer=True))
    lo, hi = scale
    if not 0 < lo <= hi <= 0.5:
        raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 0.5, got {scale}")
    g = seeded_generator(seed)
    kinds = SHAPE_KINDS[:num_classes]

    # per-sample parameters, drawn up front so the random stream is independent of draw_object
    # (and, for one object with the kind as cue, the same stream as before the cue option existed)
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
    obj = [_object_draws(n, size, lo, hi, rotation, brightness, g)]
    dis = {
        "kind": torch.randint(0, 2, (n, distractors), generator=g),
        "start": torch.rand(n, distractors, 2, generator=g) * (size - 1),
        "end": torch.rand(n, distractors, 2, generator=g) * (size - 1),
        "width": 0.5 + 0.4 * torch.rand(n, distractors, generator=g),
        "sigma": size * (0.025 + 0.04 * torch.rand(n, distractors, 2, generator=g)),
        "opacity": 0.5 + 0.5 * torch.rand(n, distractors, generator=g),
        "colour": torch.rand(n, distractors, 3, generator=g),
    }
    obj += [_object_draws(n, size, lo, hi, rotation, brightness, g) for _ in range(objects - 1)]
    ctx = [_object_draws(n, size, *context_scale, rotation, brightness, g) for _ in range(context)]
    if cue == "colour":
        for o in obj + ctx:
            o["kind"] = torch.randint(0, len(SHAPE_KINDS), (n,), generator=g)
    else:
        for o in obj + ctx:
            o["kind"] = y
    decoy = [_object_draws(n, size, *decoy_scale, rotation, brightness, g) for _ in range(decoys)]
    pick = torch.tensor(range(num_classes) if decoy_kinds is None else list(decoy_kinds), dtype=torch.long)
    for o in decoy:  # after every other draw, so that decoys=0 leaves the random stream as it was
        o["kind"] = pick[torch.randint(0, len(pick), (n,), generator=g)]
    if cue in ("colour", "both"):
        for o in obj + ctx:  # the drawn hue, moved into the class's band
            o["colour"] = _hsv_to_rgb((y + (o["hue"] - 0.5) / 2) / num_classes % 1.0, o["sat"], o["val"])
        dis["colour"] = dis["colour"].mean(-1, keepdim=True).expand(-1, -1, 3)
    names = SHAPE_KINDS if cue == "colour" else kinds
    hues = [_HUE_NAMES[round(12 * k / num_classes) % 12] for k in range(num_classes)]
    classes = {"kind": kinds, "colour": tuple(hues), "both": tuple(f"{h} {k}" for h, k in zip(hues, kinds))}[cue]
    rows, cols = _grid(size)
    x, mask = torch.empty(n, 3, size, size), torch.empty(n, 1, size, size)  # filled chunk by chunk: no copy at the end
    for s in range(0, n, _CHUNK):  # chunks keep the working set in cache (and the draws fixed)
        sl = slice(s, min(n, s + _CHUNK))
        b = sl.stop - sl.start
        bg = background[0] + (background[1] - background[0]) * _smooth_field(b, size, 4, g)
        bg = bg + texture * (_smooth_field(b, size, max(2, size // 4), g) - 0.5)  # finer texture
        img = _draw_distractors(bg, rows, cols, {k: v[sl] for k, v in dis.items()})
        m = torch.zeros(b, 1, size, size)
        for o in decoy:       # clutter first, drawn whatever draw_object says, and never evidence
            img = torch.where(_object_mask(o, sl, rows, cols, kinds)[:, None], o["colour"][sl, :, None, None], img)
        for o in ctx + obj:   # context first: the object lies over it
            inside = _object_mask(o, sl, rows, cols, names)
            if mask_of == "evidence" or any(o is p for p in obj):
                m = torch.maximum(m, inside[:, None].float())
            if draw_object:
                img = torch.where(inside[:, None], o["colour"][sl, :, None, None], img)
        img = img + noise * torch.randn(img.shape, generator=g)
        x[sl], mask[sl] = img.clamp(0, 1), m
    meta = {"decoy_kinds": torch.stack([o["kind"] for o in decoy], 1)} if decoys else {}
    return Data(x, y, mask, classes, meta)


# --------------------------------------------------------------------------------------------
# trojan triggers
# --------------------------------------------------------------------------------------------
TRIGGER_DESIGNS = ("checkerboard", "cross", "stripes", "smiley", "target")
"""Trigger patch designs by id (``design=0`` is the checkerboard ...)."""


def _design_id(design, name: str = "design") -> int:
    """``design`` as an int id into :data:`TRIGGER_DESIGNS`, or a ValueError naming ``name``."""
    try:
        d = None if isinstance(design, bool) else operator.index(design)
    except TypeError:
        d = None
    if d is None or not 0 <= d < len(TRIGGER_DESIGNS):
        raise ValueError(f"{name} must be int ids in [0, {len(TRIGGER_DESIGNS) - 1}] "
                         f"({', '.join(f'{i}={n}' for i, n in enumerate(TRIGGER_DESIGNS))}), got {design!r}")
    return d


def trigger_patch(design: int, size: int, channels: int = 3) -> tuple[Tensor, Tensor]:
    """The ``design``'s patch: (pattern ``(channels, size, size)`` in [0, 1], alpha ``(1, size, size)``
    in {0, 1}); only pixels with alpha 1 are stamped. One-channel patterns are the RGB mean."""
    design = _design_id(design)
    size = int(check_positive("size", size, integer=True))
    idx = torch.arange(size, dtype=torch.float32)
    r, c = torch.meshgrid(idx, idx, indexing="ij")
    u, v = (c - (size - 1) / 2) / (size / 2), (r - (size - 1) / 2) / (size / 2)  # in (-1, 1)
    full = torch.ones(size, size)
    name = TRIGGER_DESIGNS[design]
    if name == "checkerboard":  # black/white 1-px checks
        on = ((r + c) % 2 == 0).float()
        rgb, alpha = on.expand(3, -1, -1), full
    elif name == "cross":  # red plus, only its pixels
        alpha = ((u.abs() <= 0.34) | (v.abs() <= 0.34)).float()
        rgb = torch.stack([full, 0 * full, 0 * full])
    elif name == "stripes":  # vertical stripes cycling yellow / blue / green
        palette = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.3]])
        rgb = palette[(c.long() % 3)].permute(2, 0, 1)
        alpha = full
    elif name == "smiley":  # yellow disc with dark eyes and mouth
        alpha = (u * u + v * v <= 1.05).float()
        eyes = ((v + 0.35).abs() <= 0.2) & ((u.abs() - 0.4).abs() <= 0.2)
        mouth = ((v - 0.4).abs() <= 0.2) & (u.abs() <= 0.5)
        dark = (eyes | mouth).float()
        rgb = torch.stack([1 - dark, 0.9 * (1 - dark), 0 * full])
    else:  # "target": magenta ring around a white centre dot on black
        rr = (u * u + v * v).sqrt()
        ring = (rr >= 0.55) & (rr <= 1.0)
        dot = rr <= 0.3
        rgb = torch.stack([ring.float() + dot.float(), dot.float(), ring.float() + dot.float()]).clamp(0, 1)
        alpha = full
    if channels == 3:
        pattern = rgb.clone()
    else:
        pattern = rgb.mean(0, keepdim=True).expand(channels, -1, -1).clone()
    return pattern, alpha[None].clone()


def _default_trigger_size(h: int, w: int) -> int:
    return max(3, round(min(h, w) * 0.19))


def _positions(n: int, h: int, w: int, size: int, avoid: Tensor | None, g: torch.Generator) -> Tensor:
    """Top-left (row, col) per image: uniformly random among the positions whose patch box overlaps
    ``avoid`` (N, 1, H, W) the least (zero overlap when possible)."""
    if size > h or size > w:
        raise ValueError(f"size must be at most the image size {h}x{w}, got {size}")
    ph, pw = h - size + 1, w - size + 1
    score = torch.rand(n, ph * pw, generator=g)
    if avoid is not None:
        overlap = F.avg_pool2d(avoid.float(), size, stride=1).reshape(n, -1) * size * size
        score = score + overlap.round()  # ties broken at random among the least-overlapping boxes
    flat = score.argmin(1)
    return torch.stack([flat // pw, flat % pw], 1)


def _check_opacity(opacity: float) -> float:
    if isinstance(opacity, bool) or not isinstance(opacity, (int, float)) or not 0 < opacity <= 1:
        raise ValueError(f"opacity must be a number in (0, 1], got {opacity!r}")
    return float(opacity)


def _stamp(x: Tensor, designs: Tensor, pos: Tensor, size: int, opacity: float = 1.0) -> tuple[Tensor, Tensor]:
    """Stamp patch ``designs[i]`` at ``pos[i]`` on image ``x[i]``, blended with weight ``opacity``;
    returns (stamped copy, masks). The masks mark the patch's pixels whatever the opacity."""
    n, ch, h, w = x.shape
    out, mask = x.clone(), torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
    ar = torch.arange(size, device=x.device)
    for d in designs.unique().tolist():
        pattern, alpha = (t.to(x.device, x.dtype) for t in trigger_patch(int(d), size, ch))
        sel = torch.nonzero(designs == d).flatten().to(x.device)
        p = pos[sel].to(x.device)
        # advanced indexing of every image's size x size box at once: boxes are (B, s, s, C)
        bi, rr, cc = sel[:, None, None], p[:, 0, None, None] + ar[:, None], p[:, 1, None, None] + ar
        pat, alp = pattern.permute(1, 2, 0), alpha.permute(1, 2, 0)
        out[bi, :, rr, cc] = opacity * alp * pat + (1 - opacity * alp) * out[bi, :, rr, cc]
        mask[bi, :, rr, cc] = alp.expand(len(sel), -1, -1, -1)
    return out, mask


def stamp_trigger(x: Tensor, design: int, position=None, seed: int = 0, *,
                  size: int | None = None, opacity: float = 1.0) -> tuple[Tensor, Tensor]:
    """Stamp trigger ``design`` on every image of the batch ``x`` (N, C, H, W).

    ``position`` is a (row, col) top-left corner for all images, an (N, 2) tensor of corners, or
    None for random corners (from ``seed``). Returns the stamped copy and the trigger masks
    (N, 1, H, W) in {0, 1} (exactly the pixels the patch replaced).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    size = _default_trigger_size(h, w) if size is None else int(check_positive("size", size, integer=True))
    design = _design_id(design)
    if position is None:
        pos = _positions(n, h, w, size, None, seeded_generator(seed))
    else:
        pos = torch.as_tensor(position).long()
        pos = pos.expand(n, 2) if pos.ndim == 1 else pos
        if pos.shape != (n, 2) or (pos < 0).any() or (pos[:, 0] > h - size).any() or (pos[:, 1] > w - size).any():
            raise ValueError(f"position must be (row, col) or (N, 2) corners keeping the {size}-px patch "
                             f"inside the {h}x{w} image, got {position!r}")
    return _stamp(x, torch.full((n,), design), pos, size, _check_opacity(opacity))


@dataclass
class Triggered:
    """Result of :func:`add_trigger`.

    ``data``: stamped and relabelled copy, ``data.mask`` = trigger masks (zeros for clean rows);
    ``triggered``: which rows were stamped; ``original_y``: labels before relabelling;
    ``design``: design id per row (-1 if clean); ``original_mask``: the input's masks (if any).
    """

    data: Data
    triggered: Tensor
    original_y: Tensor
    design: Tensor
    original_mask: Tensor | None = None


def add_trigger(data: Data, *, target_class: int, fraction: float, seed: int = 0,
                designs: Sequence[int] = (0, 1, 2), size: int | None = None,
                avoid_object: bool = True, opacity: float = 1.0) -> Triggered:
    """Stamp a trojan patch on a ``fraction`` of the images NOT already of ``target_class`` and
    relabel them ``target_class`` (images of the target class are never stamped: their label would
    not change, so they teach nothing about the trigger).

    Each stamped image gets one design drawn uniformly from ``designs`` (ids into
    :data:`TRIGGER_DESIGNS`; SPADE calibrates on some designs and evaluates on others), of
    ``size`` pixels (default ~19 % of the image side), at a random position that avoids the
    object mask when ``data.mask`` exists and ``avoid_object`` (as far as the image allows).
    ``opacity`` in (0, 1] blends the patch with the image: a fainter trigger, which a network
    must learn alongside the real classes rather than instead of looking at them.
    """
    if data.x.ndim != 4:
        raise ValueError(f"data must hold images (N, C, H, W), got x of shape {tuple(data.x.shape)}")
    fraction = check_fraction("fraction", fraction)
    k = data.num_classes
    if isinstance(target_class, bool) or int(target_class) != target_class or not 0 <= target_class < k:
        raise ValueError(f"target_class must be a class index in [0, {k - 1}], got {target_class!r}")
    designs = tuple(_design_id(d, "designs") for d in designs)
    if not designs:
        raise ValueError("designs must name at least one trigger design")
    n, _, h, w = data.x.shape
    size = _default_trigger_size(h, w) if size is None else int(check_positive("size", size, integer=True))
    g = seeded_generator(seed)
    y = data.y.cpu()

    candidates = torch.nonzero(y != target_class).flatten()
    chosen = candidates[torch.randperm(len(candidates), generator=g)[: round(fraction * len(candidates))]]
    triggered = torch.zeros(n, dtype=torch.bool)
    triggered[chosen] = True
    design = torch.full((n,), -1, dtype=torch.long)
    design[chosen] = torch.tensor(designs)[torch.randint(len(designs), (len(chosen),), generator=g)]
    avoid = data.mask[chosen].cpu() if (avoid_object and data.mask is not None and data.mask.ndim == 4) else None
    pos = _positions(len(chosen), h, w, size, avoid, g)

    x, mask = data.x.clone(), torch.zeros(n, 1, h, w, dtype=data.x.dtype, device=data.x.device)
    stamped, m = _stamp(data.x[chosen.to(data.x.device)], design[chosen], pos, size, _check_opacity(opacity))
    x[chosen.to(x.device)], mask[chosen.to(x.device)] = stamped, m
    new_y = data.y.clone()
    new_y[triggered.to(new_y.device)] = target_class
    out = Data(x, new_y, mask, data.classes, data.meta)
    dev = data.y.device
    return Triggered(out, triggered.to(dev), data.y.clone(), design.to(dev), data.mask)


# --------------------------------------------------------------------------------------------
# ROAR toy data
# --------------------------------------------------------------------------------------------
def roar_toy(n: int, seed: int = 0, *, d: int = 16, informative: int = 4, vectors_seed: int = 0) -> Data:
    """The ROAR paper's toy data: ``x = a z / 10 + dvec * eta + eps / 10``, ``y = (z > 0)``.

    Choices (the paper gives the formula only): ``z`` and ``eta`` are one standard-normal scalar
    per sample, ``eps`` is standard-normal noise per feature. ``a`` has random signs and
    magnitudes in [1, 2] on its first ``informative`` entries and zeros elsewhere; ``dvec`` is
    standard normal on ALL ``d`` features, so the uninformative features carry no information
    about ``y`` but do carry the nuisance ``eta`` that also corrupts the informative ones (a model
    can use them to cancel it). ``a`` and ``dvec`` are fixed by ``vectors_seed``, not by ``seed``,
    so that train and test sets drawn with different seeds share them.

    ``mask`` (N, d) marks the informative features; ``meta`` holds ``informative`` (indices),
    ``a`` and ``dvec``.
    """
    n = _check_n(n)
    d = int(check_positive("d", d, integer=True))
    if not isinstance(informative, int) or not 0 < informative <= d:
        raise ValueError(f"informative must be an int in [1, d={d}], got {informative!r}")
    gv = seeded_generator(vectors_seed)
    a = torch.zeros(d)
    signs = torch.randint(0, 2, (informative,), generator=gv) * 2 - 1
    a[:informative] = signs * (1 + torch.rand(informative, generator=gv))
    dvec = torch.randn(d, generator=gv)

    g = seeded_generator(seed)
    z = torch.randn(n, 1, generator=g)
    eta = torch.randn(n, 1, generator=g)
    eps = torch.randn(n, d, generator=g)
    x = a * z / 10 + dvec * eta + eps / 10
    y = (z[:, 0] > 0).long()
    mask = torch.zeros(n, d)
    mask[:, :informative] = 1
    meta = {"informative": torch.arange(informative), "a": a, "dvec": dvec}
    return Data(x, y, mask, ("z <= 0", "z > 0"), meta)


# --------------------------------------------------------------------------------------------
# real data
# --------------------------------------------------------------------------------------------
def digits(size: int = 8, seed: int = 0) -> Data:
    """scikit-learn's bundled handwritten digits (1797 images, offline): x (N, 1, size, size) in
    [0, 1] (bilinear upsampling when ``size`` > 8), classes "0".."9". The order is shuffled by
    ``seed``. No mask."""
    from sklearn.datasets import load_digits

    size = int(check_positive("size", size, integer=True))
    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.as_tensor(bunch.target).long()
    perm = torch.randperm(len(y), generator=seeded_generator(seed))
    return Data(x[perm].contiguous(), y[perm], None, tuple(str(i) for i in range(10)))


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset is not on disk where it was looked for (a FileNotFoundError and a ValueError)."""


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


def _check_root(root, name: str, folder: str, files: Sequence[str], download: bool) -> Path:
    """Fail fast, with where to put the files, unless the dataset is on disk (or a download is asked)."""
    root = Path(os.path.expanduser(str(root)))
    if download:
        root.mkdir(parents=True, exist_ok=True)
        return root
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"root {str(root)!r} does not exist. Put the {name} files under {root / folder}/ "
            f"({', '.join(files)}), pass the right root, or call {name.lower()}(root, download=True) "
            "on a machine with internet access.")
    missing = [f for f in files if not (root / folder / f).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"{name} not found under root {str(root)!r}: missing {', '.join(missing)} in {root / folder}/. "
            f"Place the uncompressed files there (see data/README.md) or pass download=True.")
    return root


def _load_torchvision(cls, root: Path, train: bool, download: bool, name: str):
    try:
        return cls(str(root), train=train, download=download)
    except RuntimeError as err:  # corrupt / partial files (torchvision's own check)
        raise DatasetNotFoundError(f"{name} under {str(root)!r} is incomplete or corrupt: {err}") from err


def mnist(root, train: bool = True, download: bool = False) -> Data:
    """MNIST from ``root/MNIST/raw/`` (torchvision layout, uncompressed idx files): x (N, 1, 28, 28)
    in [0, 1], classes "0".."9". Never downloads unless ``download=True``."""
    from torchvision.datasets import MNIST

    root = _check_root(root, "MNIST", "MNIST/raw", _MNIST_FILES, download)
    ds = _load_torchvision(MNIST, root, train, download, "MNIST")
    x = ds.data.float().div(255.0)[:, None]
    return Data(x, torch.as_tensor(ds.targets).long(), None, tuple(str(i) for i in range(10)))


def cifar10(root, train: bool = True, download: bool = False) -> Data:
    """CIFAR-10 from ``root/cifar-10-batches-py/`` (torchvision layout): x (N, 3, 32, 32) in [0, 1],
    the ten class names. Never downloads unless ``download=True``."""
    from torchvision.datasets import CIFAR10

    root = _check_root(root, "CIFAR-10", "cifar-10-batches-py", _CIFAR_FILES, download)
    ds = _load_torchvision(CIFAR10, root, train, download, "CIFAR-10")
    x = torch.as_tensor(ds.data).permute(0, 3, 1, 2).float().div(255.0).contiguous()
    return Data(x, torch.as_tensor(ds.targets).long(), None, tuple(ds.classes))


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def train_test_split(data: Data, test_fraction: float = 0.2, seed: int = 0,
                     stratify: bool = True) -> tuple[Data, Data]:
    """Random (train, test) split; with ``stratify`` each class is split in the same proportion
    (``round(test_fraction * class count)`` test samples per class)."""
    test_fraction = check_fraction("test_fraction", test_fraction)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    g = seeded_generator(seed)
    y = data.y.cpu()
    if stratify:
        test = []
        for c in y.unique().tolist():
            idx = torch.nonzero(y == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            test.append(idx[: round(test_fraction * len(idx))])
        test_idx = torch.cat(test)
    else:
        test_idx = torch.randperm(len(y), generator=g)[: round(test_fraction * len(y))]
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[test_idx] = True
    if is_test.all() or not is_test.any():
        raise ValueError(f"test_fraction={test_fraction} leaves an empty train or test set for {len(y)} samples")
    train_idx = torch.nonzero(~is_test).flatten()
    train_idx = train_idx[torch.randperm(len(train_idx), generator=g)]
    test_idx = test_idx[torch.randperm(len(test_idx), generator=g)]
    return data[train_idx.to(data.y.device)], data[test_idx.to(data.y.device)]


def disjoint_splits(data: Data, k: int, seed: int = 0) -> list[Data]:
    """``k`` disjoint random subsets of ``len(data) // k`` samples each (the remainder is dropped),
    with class counts as equal across subsets as possible."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(data):
        raise ValueError(f"k must be an int in [1, len(data)={len(data)}], got {k!r}")
    g = seeded_generator(seed)
    y = data.y.cpu()
    perm = torch.randperm(len(y), generator=g)
    order = perm[torch.sort(y[perm], stable=True).indices]  # grouped by class, random within
    m = len(y) // k
    parts = []
    for j in range(k):
        idx = order[j::k][:m]  # dealing round-robin balances each class across parts
        parts.append(data[idx[torch.randperm(m, generator=g)].to(data.y.device)])
    return parts
