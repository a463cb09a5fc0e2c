"""Neuron visualisation by activation maximisation — SPADE's second use.

An image is optimised to maximise one output logit of a model (the dense network, or a SPADE
trace). Regularisers keep it image-like: random jitter (roll by a few pixels each step), an L2
penalty on the deviation from grey and a total-variation penalty; pixels are ``sigmoid(z)`` so
they stay in [0, 1]. On a trojaned class neuron the dense model mixes both facets (trigger and
real class); a trace built for a clean image vs. for a triggered image should pull them apart.
"""
from __future__ import annotations

import torch
from torch import nn

from xailab.utils import check_positive, preserved_state, resolve_device


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, per image."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
            + (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3)))


def maximize_class(model: nn.Module, target: int, *, size: int = 32, channels: int = 3, n: int = 1,
                   steps: int = 200, lr: float = 0.1, jitter: int = 2, l2: float = 0.05,
                   tv: float = 3.0, seed: int = 0, device="auto") -> torch.Tensor:
    """``n`` images ``(n, channels, size, size)`` in [0, 1] maximising logit ``target`` of ``model``.

    Objective per image: ``logit - l2·mean((x-½)²)·100 - tv·TV(x)·10`` (the scales make the defaults
    comparable to a logit of a few units), Adam with ``lr`` for ``steps`` steps, a random roll of
    up to ``jitter`` pixels each step; seeded from ``seed``. The model is not modified. With
    ``tv=3`` the smooth class shapes of ``shapes`` survive while fine periodic patterns (the
    trigger designs) must be worth a lot of logit to appear, which makes the two facets easy to
    tell apart; :func:`total_variation` of the result measures how patterned it is.
    """
    steps = int(check_positive("steps", steps, integer=True))
    dev = resolve_device(device)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    z = (0.1 * torch.randn(n, channels, size, size, generator=g)).to(dev).requires_grad_(True)
    # Adam by hand (β = 0.9, 0.999): torch.optim's first step imports the compiler stack (seconds).
    m1, m2 = torch.zeros_like(z), torch.zeros_like(z)
    shifts = torch.randint(-jitter, jitter + 1, (steps, 2), generator=g).tolist() if jitter else [[0, 0]] * steps
    with preserved_state(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        for t, (dy, dx) in enumerate(shifts, start=1):
            x = torch.sigmoid(z)
            logit = model(torch.roll(x, shifts=(dy, dx), dims=(2, 3)))[:, target]
            loss = -(logit - 100 * l2 * ((x - 0.5) ** 2).mean((1, 2, 3)) - 10 * tv * total_variation(x)).sum()
            (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                m1.mul_(0.9).add_(grad, alpha=0.1)
                m2.mul_(0.999).addcmul_(grad, grad, value=0.001)
                step = (m1 / (1 - 0.9 ** t)) / ((m2 / (1 - 0.999 ** t)).sqrt() + 1e-8)
                z -= lr * step
    return torch.sigmoid(z).detach()
