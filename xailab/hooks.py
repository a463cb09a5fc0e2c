"""Hooks and model structure: the one place that registers hooks, finds layers in the order a
forward pass calls them and says where a model lives.

Every piece of xailab that looks inside a network goes through here, so that hook handles are
removed on every path (errors included) and "the layers of a model" means one thing: the modules
a forward pass calls, in the order it calls them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

__all__ = ["LayerCall", "forward_order", "hooks_removed", "model_device", "parameter_layers"]


@contextlib.contextmanager
def hooks_removed(handles: list | None = None) -> Iterator[list]:
    """Yield a list to collect hook handles into (``handles`` if given); remove every one on exit,
    errors included."""
    handles = [] if handles is None else handles
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()
        handles.clear()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@dataclass(frozen=True)
class LayerCall:
    """One call of a module during a forward pass: its qualified name, the module, and the shapes
    of its first input and of its output."""
    name: str
    module: nn.Module
    input_shape: tuple
    output_shape: tuple


def forward_order(model: nn.Module, x: torch.Tensor, types=(nn.Conv2d, nn.Linear), *,
                  once: bool = False) -> list[LayerCall]:
    """The modules of ``model`` that are instances of ``types``, in the order a forward pass on
    ``x`` calls them (one entry per call; no gradients, modes untouched).

    ``once=True`` refuses a module called more than once per pass (weight sharing), with a
    ValueError naming it: callers that give every layer one role (SPADE's traces) need that.
    """
    names = {m: n for n, m in model.named_modules()}
    calls: list[LayerCall] = []

    def hook(module, inputs, output):
        if once and any(c.module is module for c in calls):
            raise ValueError(f"layer {names[module]!r} is called more than once per forward pass; "
                             "every layer must be used once")
        first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
        calls.append(LayerCall(names[module], module, tuple(first.shape) if first is not None else (),
                               tuple(output.shape) if isinstance(output, torch.Tensor) else ()))

    with hooks_removed() as handles, torch.no_grad():
        for m in model.modules():
            if isinstance(m, types):
                handles.append(m.register_forward_hook(hook))
        model(x)
    return calls


def parameter_layers(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Names of the modules that own parameters, from the output back to the input: the order of
    a cascading randomisation. With an example batch ``x`` the order is the forward pass's;
    without one, registration order is taken as forward order."""
    names = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    if x is not None and names:
        owners = {model.get_submodule(n) for n in names}
        called = [c.name for c in forward_order(model, x, nn.Module) if c.module in owners]
        names = list(dict.fromkeys(called)) + [n for n in names if n not in called]
    return names[::-1]
