"""Find a model's prunable layers and capture their inputs on a batch of views.

Prunable layers are ``nn.Conv2d`` (unfolded to patches, so a convolution is a matrix product
``W (out, in/groups·kh·kw)`` by patch columns, one independent problem per group) and
``nn.Linear`` (inputs flattened to ``(samples, in_features)``).

To trace several images at once, each prunable layer of a working copy is swapped for a
:class:`MultiWeight` that holds one weight tensor per image and applies image ``b``'s weights to
image ``b``'s views, so one forward pass serves every image. Every per-image product (a layer's
output, its Hessian) is computed on that image's views alone, with the shapes a single-image trace
uses: batched kernels (a grouped convolution over the images, a batched matmul) round differently
with the batch size, and a trace must be bitwise the same whatever else shares its batch (register
SPADE-8). Inputs are captured by a pre-hook that stops the forward pass as soon as the layer has
received them (later layers are not needed yet).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xailab.hooks import forward_order, hooks_removed

PRUNABLE = (nn.Conv2d, nn.Linear)


class _Stop(Exception):
    """Raised by a capture hook to end a forward pass once the wanted input is in hand."""


def execution_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Prunable layers of ``model`` as ``(name, module)`` in the order a forward pass on ``x``
    calls them. A layer called twice in one pass (weight sharing) is refused: its trace would
    have to fit two different inputs with one sparse weight, which capture does not do."""
    return [(c.name, c.module) for c in forward_order(model, x, PRUNABLE, once=True)]


def check_supported(name: str, module: nn.Module) -> None:
    """Refuse layers whose weights cannot be written as ``W @ patches`` here."""
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise ValueError(f"layer {name!r}: padding_mode={module.padding_mode!r} is not supported "
                         "by SPADE capture (only zero padding)")
    if isinstance(module, nn.Conv2d) and isinstance(module.padding, str) and module.padding != "valid":
        if any(s != 1 for s in module.stride):
            raise ValueError(f"layer {name!r}: padding='same' with stride != 1 is not supported")


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """Weights as ``(groups, rows, cols)``: a Linear is one group; a Conv2d with ``g`` groups has
    ``out/g`` rows and ``in/g·kh·kw`` columns per group (column order = ``unfold``'s)."""
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        return w.unsqueeze(0)
    g = module.groups
    return w.reshape(g, w.shape[0] // g, -1)


def _conv_padding(module: nn.Conv2d):
    pad = module.padding
    if isinstance(pad, str):                       # "same" (stride 1) or "valid"
        if pad == "valid":
            return (0, 0)
        if any((d * (k - 1)) % 2 for d, k in zip(module.dilation, module.kernel_size)):
            raise ValueError("padding='same' with an even kernel is not supported")
        return tuple((d * (k - 1)) // 2 for d, k in zip(module.dilation, module.kernel_size))
    return pad


def layer_samples(module: nn.Module, inp: torch.Tensor, n_images: int) -> torch.Tensor:
    """Turn a layer's captured input ``(n_images·V, ...)`` into samples per image and group:
    ``(n_images, groups, samples, cols)`` (patches for a conv, rows for a linear layer)."""
    if isinstance(module, nn.Linear):
        return inp.reshape(n_images, -1, inp.shape[-1]).unsqueeze(1)
    cols = F.unfold(inp, module.kernel_size, dilation=module.dilation,
                    padding=_conv_padding(module), stride=module.stride)   # (N·V, C·kh·kw, L)
    g = module.groups
    n_v, d, L = cols.shape
    cols = cols.reshape(n_images, n_v // n_images, g, d // g, L)
    return cols.permute(0, 2, 1, 4, 3).reshape(n_images, g, -1, d // g)


def layer_hessian(module: nn.Module, inp: torch.Tensor, n_images: int,
                  dtype: torch.dtype = torch.float64, chunk: int = 32) -> torch.Tensor:
    """``H = 2/n · Xᵀ X`` per image and group, ``(n_images, groups, cols, cols)``, from a layer's
    captured input ``(n_images·V, ...)``, with ``n`` = views × positions.

    Views are unfolded ``chunk`` at a time (a full unfold of 128 views is hundreds of MB); each
    chunk's product runs in the input's precision (float32 BLAS) and is summed in ``dtype``.
    """
    v = inp.shape[0] // n_images
    per_image = inp.reshape(n_images, v, *inp.shape[1:])
    out = []
    for image in per_image:                                        # one image at a time: see the module doc
        H, n = None, 0
        for i in range(0, v, chunk):
            X = layer_samples(module, image[i:i + chunk], 1)[0]    # (G, samples, cols)
            h = (X.transpose(-1, -2) @ X).to(dtype)
            H = h if H is None else H + h
            n += X.shape[-2]
        out.append(H * (2.0 / n))
    return torch.stack(out)


class MultiWeight(nn.Module):
    """A Conv2d or Linear carrying one weight (and bias) per image, applied to an image-major
    batch ``(n_images·V, ...)``; image ``b``'s views see weights ``b`` only."""

    def __init__(self, module: nn.Module, n_images: int):
        super().__init__()
        self.inner = module
        self.n = n_images
        self.weight = nn.Parameter(module.weight.detach().unsqueeze(0).repeat(
            n_images, *[1] * module.weight.ndim), requires_grad=False)
        bias = module.bias
        self.bias = None if bias is None else nn.Parameter(
            bias.detach().unsqueeze(0).repeat(n_images, 1), requires_grad=False)

    def set_matrix(self, W: torch.Tensor) -> None:
        """Write weights given as ``(n_images, groups, rows, cols)`` back in the module layout."""
        self.weight.data.copy_(W.reshape(self.weight.shape).to(self.weight.dtype))

    def forward(self, x):
        m = self.inner
        parts = x.reshape(self.n, -1, *x.shape[1:]).unbind(0)     # image-major: (views, ...) per image
        biases = [None] * self.n if self.bias is None else self.bias.unbind(0)
        if isinstance(m, nn.Linear):
            ys = [F.linear(p, w, b) for p, w, b in zip(parts, self.weight.unbind(0), biases)]
        else:
            ys = [F.conv2d(p, w, b, m.stride, _conv_padding(m), m.dilation, m.groups)
                  for p, w, b in zip(parts, self.weight.unbind(0), biases)]
        return torch.cat(ys).reshape(*x.shape[:-1], -1) if isinstance(m, nn.Linear) else torch.cat(ys)


def swap_in(model: nn.Module, names: list[str], n_images: int) -> dict[str, MultiWeight]:
    """Replace the named layers of ``model`` (a working copy) by :class:`MultiWeight` wrappers."""
    wrappers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapper = MultiWeight(getattr(parent, child), n_images)
        setattr(parent, child, wrapper)
        wrappers[name] = wrapper
    return wrappers


def pooled_sources(model: nn.Module, x: torch.Tensor) -> dict[str, nn.Module]:
    """``{linear name: pooling module}`` for every ``nn.Linear`` whose input is the global average of
    the input of an ``nn.AdaptiveAvgPool2d`` called just before it (checked numerically on ``x``).

    Global average pooling followed by a linear layer equals the linear layer applied at every position
    and then averaged, so such a layer can be fitted on per-position features: views × positions
    samples instead of one sample per view (a 64-input head on 48 views is otherwise undetermined)."""
    names = {m: n for n, m in model.named_modules()}
    calls: list = []

    def hook(module, inputs):
        calls.append((module, inputs[0].detach()))

    with hooks_removed() as handles, torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)):
                handles.append(m.register_forward_pre_hook(hook))
        model(x)
    out, pool = {}, None
    for module, inp in calls:
        if isinstance(module, nn.AdaptiveAvgPool2d):
            pool = (module, inp)
        elif pool is not None and inp.ndim == 2 and pool[1].ndim == 4:
            mean = pool[1].mean((2, 3))
            if mean.shape == inp.shape and torch.allclose(mean, inp, rtol=1e-5, atol=1e-6):
                out[names[module]] = pool[0]
            pool = None
    return out


def per_position(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` feature maps as per-position samples of a linear layer, ``(N, h·w, C)``."""
    return features.flatten(2).transpose(1, 2)


def capture_input(model: nn.Module, layer: nn.Module, views: torch.Tensor) -> torch.Tensor:
    """Run ``views`` through ``model`` until ``layer`` is called; return its input (no grad)."""
    box = {}

    def hook(_module, inputs):
        box["x"] = inputs[0].detach()
        raise _Stop

    with hooks_removed([layer.register_forward_pre_hook(hook)]):
        try:
            with torch.no_grad():
                model(views)
        except _Stop:
            pass
    if "x" not in box:
        raise RuntimeError("the layer was not called during the forward pass")
    return box["x"]
