"""Grad-CAM (Selvaraju et al. 2017) and Guided Grad-CAM.

Grad-CAM weighs a convolutional layer's channels by their spatially averaged gradients:
``cam = ReLU(Σ_k mean_hw(∂f/∂A_k) · A_k)``, then upsamples the ``(N, 1, h, w)`` map bilinearly
(``align_corners=False``) to the input's ``H × W``. It returns ONE channel ``(N, 1, H, W)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.attribution._core import (batch_rows, check_image, check_outputs, chunked, explaining,
                                      targets_for)
from xailab.attribution.gradients import guided_backprop
from xailab.attribution.registry import register
from xailab.hooks import hooks_removed


def find_layer(model: nn.Module, layer=None) -> nn.Module:
    """``None`` -> the last ``nn.Conv2d`` (in registration order); a name -> that submodule;
    a module -> itself (it must belong to ``model``)."""
    named = dict(model.named_modules())
    if layer is None:
        convs = [m for m in named.values() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"no nn.Conv2d in {type(model).__name__}; pass layer= (a module name)")
        return convs[-1]
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in named.values()):
            raise ValueError("layer must be a submodule of model")
        return layer
    if isinstance(layer, str):
        if layer in named and layer:
            return named[layer]
        names = [n for n in named if n]
        shown = ", ".join(names[:60]) + (" ..." if len(names) > 60 else "")
        raise ValueError(f"unknown layer {layer!r}; the model's modules are: {shown}")
    raise TypeError(f"layer must be None, a module name or a module, got {type(layer).__name__}")


def _cam(model: nn.Module, layer: nn.Module, x: Tensor, t: Tensor, relu: bool) -> Tensor:
    captured: list[Tensor] = []

    def hook(module, inputs, output):
        if not isinstance(output, Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"grad_cam needs a layer with (N, K, h, w) output, got {shape}")
        captured.append(output)
        return output.clone()  # a later in-place op (ReLU(inplace=True)) must not alter A

    with hooks_removed([layer.register_forward_hook(hook)]):
        out = model(x.detach().requires_grad_(True))  # parameters are frozen: grads flow via x
    if len(captured) != 1:
        raise ValueError(f"grad_cam needs a layer called once per forward pass; it was called {len(captured)} times")
    check_outputs(out, t)
    acts = captured[0]
    (grads,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), acts)
    cam = (grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1, keepdim=True)
    if relu:
        cam = F.relu(cam)
    return F.interpolate(cam.detach(), size=x.shape[2:], mode="bilinear", align_corners=False)


@register("grad_cam", output="pixel")
def grad_cam(model: nn.Module, x: Tensor, target, *, layer=None, relu: bool = True,
             batch_size: int | None = None) -> Tensor:
    """Grad-CAM at ``layer`` (default: the last ``nn.Conv2d``'s output), ``(N, 1, H, W)``.

    ``relu=False`` keeps the negative evidence (the weighted sum before the ReLU).
    """
    check_image(x, "grad_cam")
    t = targets_for(target, x)
    rows = batch_rows(batch_size, x)
    with explaining(model, "grad_cam"):
        module = find_layer(model, layer)
        return chunked(lambda xc, tc: _cam(model, module, xc, tc, relu), x, t, rows)


@register("guided_grad_cam")
def guided_grad_cam(model: nn.Module, x: Tensor, target, *, layer=None,
                    batch_size: int | None = None) -> Tensor:
    """Guided Grad-CAM: guided backprop ``(N, C, H, W)`` times the upsampled Grad-CAM map,
    shaped like ``x``."""
    cam = grad_cam(model, x, target, layer=layer, batch_size=batch_size)
    return guided_backprop(model, x, target, batch_size=batch_size) * cam
