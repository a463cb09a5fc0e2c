"""Gradient-based methods: gradient, input × gradient, integrated gradients, guided backprop.

Each is ``method(model, x, target, **options) -> Tensor`` shaped like ``x``. The score explained
is the model's output (the logit) for class ``target``; nothing is soft-maxed.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from xailab.attribution._core import (batch_rows, check_input, chunked, explaining,
                                      score_gradient, targets_for)
from xailab.attribution.registry import register
from xailab.hooks import hooks_removed
from xailab.utils import check_positive

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


@register("gradient")
def gradient(model: nn.Module, x: Tensor, target, *, batch_size: int | None = None) -> Tensor:
    """Vanilla gradient (Simonyan et al. 2014): ``∂f_target(x)/∂x``, signed."""
    check_input(x)
    t = targets_for(target, x)
    rows = batch_rows(batch_size, x)
    with explaining(model, "gradient"):
        return chunked(lambda xc, tc: score_gradient(model, xc, tc), x, t, rows)


@register("input_x_gradient")
def input_x_gradient(model: nn.Module, x: Tensor, target, *, batch_size: int | None = None) -> Tensor:
    """Input × gradient (Shrikumar et al. 2016): ``x ⊙ ∂f_target(x)/∂x``."""
    return x.detach() * gradient(model, x, target, batch_size=batch_size)


def integration_points(steps: int, rule: str = "gausslegendre") -> tuple[Tensor, Tensor]:
    """Points ``alpha`` in [0, 1] and weights ``w`` with ``∫₀¹ g(a) da ≈ Σ w_k g(alpha_k)``.

    ``gausslegendre`` (default, as Captum): Gauss-Legendre nodes mapped from [-1, 1] to [0, 1].
    ``riemann_trapezoid``: ``steps`` evenly spaced points including both ends, half weight at ends
    (weights 1/(steps-1), summing to 1; Captum 0.9 uses 1/steps, so its result is (steps-1)/steps
    of ours).
    ``riemann_left/right/middle``: ``steps`` equal cells sampled at their left/right end or centre.
    """
    steps = int(check_positive("steps", steps, integer=True))
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas, w = 0.5 * (nodes + 1.0), 0.5 * weights
    elif rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("steps must be >= 2 for rule='riemann_trapezoid'")
        alphas = np.linspace(0.0, 1.0, steps)
        w = np.full(steps, 1.0 / (steps - 1))
        w[0] = w[-1] = 0.5 / (steps - 1)
    elif rule in ("riemann_left", "riemann_right", "riemann_middle"):
        offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
        alphas = (np.arange(steps) + offset) / steps
        w = np.full(steps, 1.0 / steps)
    else:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    return torch.as_tensor(alphas, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)


def as_baseline(baseline, x: Tensor) -> Tensor:
    """A scalar or a tensor broadcastable to ``x`` -> a tensor shaped like ``x``."""
    if baseline is None:
        baseline = 0.0
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return torch.broadcast_to(b, x.shape)
    except RuntimeError:
        raise ValueError(f"baseline must be a number or broadcastable to x's shape {tuple(x.shape)}, "
                         f"got shape {tuple(b.shape)}") from None


@register("integrated_gradients", options=("steps",))
def integrated_gradients(model: nn.Module, x: Tensor, target, *, baseline=0.0, steps: int = 64,
                         rule: str = "gausslegendre", batch_size: int | None = None) -> Tensor:
    """Integrated gradients (Sundararajan et al. 2017).

    ``(x - b) ⊙ ∫₀¹ ∂f(b + a (x - b))/∂x da`` with the integral taken by ``rule`` over ``steps``
    points (default Gauss-Legendre, Captum's default too). ``baseline`` ``b``: a number (default 0)
    or a tensor broadcastable to ``x``. The ``steps × N`` interpolated inputs are generated lazily
    and pushed through the model ``batch_size`` rows at a time, so memory stays bounded.
    """
    check_input(x)
    t = targets_for(target, x)
    alphas, weights = integration_points(steps, rule)
    base = as_baseline(baseline, x)
    diff = x - base
    n, rows = x.shape[0], batch_rows(batch_size, x)
    total = torch.zeros_like(x)
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    weights = weights.to(device=x.device, dtype=x.dtype)
    view = (-1,) + (1,) * (x.ndim - 1)
    with explaining(model, "integrated_gradients"):
        for start in range(0, alphas.numel() * n, rows):
            idx = torch.arange(start, min(start + rows, alphas.numel() * n), device=x.device)
            k, i = idx // n, idx % n  # step-major order: all samples at alpha_0, then alpha_1 ...
            points = torch.addcmul(base[i], alphas[k].view(view), diff[i])
            grad = score_gradient(model, points, t[i])
            total.index_add_(0, i, grad * weights[k].view(view))
    return total * diff


def relu_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.ReLU)]


@contextlib.contextmanager
def guided_relus(model: nn.Module) -> Iterator[None]:
    """Make every ``nn.ReLU`` module pass back only positive gradients (guided backprop).

    A forward hook puts a tensor hook on each ReLU output that clamps the incoming gradient at 0;
    the ReLU's own backward then applies its forward mask, so the input gets ``relu(g) * [x > 0]``.
    This works for in-place ReLUs and for ReLU modules used several times in one forward pass.
    Hooks are removed on exit, errors included.
    """
    modules = relu_modules(model)
    if not modules:
        raise ValueError(
            f"guided backprop found no nn.ReLU modules in {type(model).__name__}: it overrides the "
            "backward pass of nn.ReLU modules and cannot patch functional calls (torch.relu, F.relu, "
            "x.relu()). Use nn.ReLU modules in the model.")

    def clamp(grad: Tensor) -> Tensor:
        return grad.clamp(min=0)

    def forward_hook(module, inputs, output):
        if output.requires_grad:
            output.register_hook(clamp)

    with hooks_removed([]) as handles:
        for m in modules:
            handles.append(m.register_forward_hook(forward_hook))
        yield


@register("guided_backprop")
def guided_backprop(model: nn.Module, x: Tensor, target, *, batch_size: int | None = None) -> Tensor:
    """Guided backpropagation (Springenberg et al. 2015): the gradient where every ReLU passes
    back only positive gradients. Needs ``nn.ReLU`` modules (see :func:`guided_relus`)."""
    check_input(x)
    t = targets_for(target, x)
    rows = batch_rows(batch_size, x)
    with explaining(model, "guided_backprop"), guided_relus(model):
        return chunked(lambda xc, tc: score_gradient(model, xc, tc), x, t, rows)
