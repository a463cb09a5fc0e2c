"""Attribution methods, registered by name.

Every method is ``method(model, x, target, **options) -> Tensor`` shaped like ``x``
(``(N, C, H, W)`` images or ``(N, D)`` tables), except the CAM-style ones (``grad_cam``,
``fullgrad``, ``simple_fullgrad``, ``smooth_fullgrad``) which return ONE channel ``(N, 1, H, W)``
upsampled bilinearly to x's height and width. ``target`` is an int or N class indices; the
explained score is the model's logit for it. Methods refuse models in train mode and never
modify the model: modes, ``requires_grad``, hooks and patches are restored on every path.

Common option names: ``base``, ``sigma``, ``n_samples``, ``batch_size``, ``steps``,
``baseline``, ``layer``, ``seed``.

>>> attribute(model, x, y, method="vargrad", base="integrated_gradients", steps=16)
"""
from __future__ import annotations

import importlib
from typing import Callable

from torch import Tensor, nn

from xailab.attribution.cam import grad_cam, guided_grad_cam
from xailab.attribution.controls import random, sobel
from xailab.attribution.ensembles import STATS, ensemble, smoothgrad, smoothgrad_sq, vargrad
from xailab.attribution.gradients import (completeness_gap, gradient, guided_backprop, input_x_gradient,
                                          integrated_gradients, integration_points)
from xailab.attribution.maps import average_ranks, normalize, reduce_channels


def _lazy(module: str, name: str) -> Callable:
    """A registry entry that imports ``xailab.attribution.<module>.<name>`` on first call, so a
    missing optional module (or Captum) only breaks the methods that need it."""

    def method(model: nn.Module, x: Tensor, target, **options) -> Tensor:
        try:
            fn = getattr(importlib.import_module(f"xailab.attribution.{module}"), name)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"attribution method {name!r} needs xailab.attribution.{module}.{name}: {err}") from err
        return fn(model, x, target, **options)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``xailab.attribution.{module}.{name}`` (imported on first use)."
    return method


METHODS: dict[str, Callable] = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "smoothgrad": smoothgrad,
    "smoothgrad_sq": smoothgrad_sq,
    "vargrad": vargrad,
    "grad_cam": grad_cam,
    "guided_grad_cam": guided_grad_cam,
    "fullgrad": _lazy("fullgrad", "fullgrad"),
    "simple_fullgrad": _lazy("fullgrad", "simple_fullgrad"),
    "smooth_fullgrad": _lazy("fullgrad", "smooth_fullgrad"),
    "random": random,
    "sobel": sobel,
    **{name: _lazy("captum_adapter", name)
       for name in ("deeplift", "lrp", "occlusion", "lime", "gradient_shap", "kernel_shap")},
}


def get_method(name: str) -> Callable:
    """The registered method called ``name`` (a clear error listing the known names otherwise)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attribution method {name!r}; known methods: {', '.join(METHODS)}") from None


def attribute(model: nn.Module, x: Tensor, target, method: str = "gradient", **options) -> Tensor:
    """Explain ``model``'s score for ``target`` at ``x`` with the method registered as ``method``
    (or a method function). Options go to the method."""
    fn = method if callable(method) else get_method(method)
    return fn(model, x, target, **options)


def captum(cls_or_name, **init_kwargs) -> Callable:
    """A method function backed by any Captum attribution class (see ``captum_adapter``)."""
    from xailab.attribution.captum_adapter import captum as _captum

    return _captum(cls_or_name, **init_kwargs)


__all__ = [
    "METHODS", "STATS", "attribute", "average_ranks", "captum", "completeness_gap", "ensemble",
    "get_method", "grad_cam", "gradient", "guided_backprop", "guided_grad_cam", "input_x_gradient",
    "integrated_gradients", "integration_points", "normalize", "random", "reduce_channels",
    "smoothgrad", "smoothgrad_sq", "sobel", "vargrad",
]
