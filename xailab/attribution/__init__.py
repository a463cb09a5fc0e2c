"""The attribution engine: methods registered by name, noise ensembles, map utilities, and the
one loop that computes maps of many methods over a data set.

Every method is ``method(model, x, target, **options) -> Tensor`` shaped like ``x``
(``(N, C, H, W)`` images or ``(N, D)`` tables), except the CAM-style ones (``grad_cam``,
``fullgrad``, ``simple_fullgrad``, ``smooth_fullgrad``) which return ONE channel ``(N, 1, H, W)``
upsampled bilinearly to x's height and width. ``target`` is an int or N class indices; the
explained score is the model's logit for it. Methods refuse models in train mode and never
modify the model: modes, ``requires_grad``, hooks and patches are restored on every path.

Common option names: ``base``, ``sigma``, ``n_samples``, ``batch_size``, ``steps``,
``baseline``, ``layer``, ``seed``. The registry records what each method is (its output shape,
whether it draws noise, its tunable options): :func:`method_info`.

>>> attribute(model, x, y, method="vargrad", base="integrated_gradients", steps=16)
>>> method_maps(model, data.x, "label", ["gradient", "vargrad(gradient)"], labels=data.y, reduce="abs-sum")

Layout: :mod:`.registry` (the name table and the facts of each method), :mod:`.targets`
(:func:`resolve_target`), :mod:`.gradients`, :mod:`.ensembles`, :mod:`.cam`,
:mod:`.controls`, :mod:`.captum_adapter`, :mod:`.fullgrad` (the method families; the subpackage
``xailab.attribution.fullgrad`` also holds the full-gradient decomposition), :mod:`.maps`
(channel reductions, normalisations), :mod:`.specs` (method names with options) and
:mod:`.dataset` (:func:`method_maps`).
"""
from __future__ import annotations

from typing import Callable

# Importing a method module registers its methods; this order is the order of METHODS.
from xailab.attribution import gradients, ensembles, cam, fullgrad, controls, captum_adapter  # noqa: F401,I001
from xailab.attribution.cam import grad_cam, guided_grad_cam
from xailab.attribution.controls import random, sobel
from xailab.attribution.dataset import method_maps
from xailab.attribution.ensembles import STATS, ensemble, smoothgrad, smoothgrad_sq, vargrad
from xailab.attribution.gradients import (gradient, guided_backprop, input_x_gradient, integrated_gradients,
                                          integration_points)
from xailab.attribution.maps import NORMALISATIONS, REDUCTIONS, average_ranks, normalise, reduce_channels
from xailab.attribution.registry import METHODS, OPTION_RANGES, MethodInfo, attribute, get_method, method_info
from xailab.attribution.specs import MethodSpec, method_table, parse_method
from xailab.attribution.targets import TARGETS, resolve_target


def captum(cls_or_name, **init_kwargs) -> Callable:
    """A method function backed by any Captum attribution class (see ``captum_adapter``)."""
    return captum_adapter.captum(cls_or_name, **init_kwargs)


__all__ = [
    "METHODS", "NORMALISATIONS", "OPTION_RANGES", "REDUCTIONS", "STATS", "TARGETS", "MethodInfo", "MethodSpec",
    "attribute", "average_ranks", "captum", "ensemble", "get_method", "grad_cam", "gradient", "guided_backprop",
    "guided_grad_cam", "input_x_gradient", "integrated_gradients", "integration_points", "method_info",
    "method_maps", "method_table", "normalise", "parse_method", "random", "reduce_channels", "resolve_target",
    "smoothgrad", "smoothgrad_sq", "sobel", "vargrad",
]
