"""The table of attribution methods by name, with what each method *is*.

Each method module registers its functions with :func:`register` when it is imported (the
package's ``__init__`` imports them all). The registry records the facts every consumer needs,
so that no consumer has to rediscover them:

- ``output``: ``"input"`` (a map shaped like ``x``) or ``"pixel"`` (one channel, ``(N, 1, H, W)``);
- ``seeded``: whether the method draws noise, and so takes a ``seed`` (read from its signature);
- ``options``: the tunable options it reads, each with its default (from the signature) and its
  range (from :data:`OPTION_RANGES`, one range per option name across xailab).

The widgets, :func:`~xailab.attribution.method_maps`, ROAR and the generalization experiment read
these facts. Adding a method is one file and one ``@register`` call (see docs/design.md).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

__all__ = ["METHODS", "OPTION_RANGES", "OUTPUTS", "MethodInfo", "Option", "attribute", "get_method",
           "method_info", "register"]

#: What a method returns: a map shaped like the input, or one channel at the input's size.
OUTPUTS = ("input", "pixel")

#: The range of every tunable option, by name (the same name means the same thing everywhere):
#: ``(low, high, type)`` for numbers, a tuple of choices otherwise (``None``: filled in at use).
OPTION_RANGES: dict[str, tuple] = {
    "sigma": (0.01, 0.5, float),        # noise std, a fraction of each input's value range
    "n_samples": (1, 256, int),         # noisy copies (ensembles) or perturbations (LIME, SHAP)
    "steps": (1, 128, int),             # points of a path integral
    "base": (),                         # a registered non-ensemble method (filled from the registry)
}


@dataclass(frozen=True)
class Option:
    """A tunable option of a method: its name, default and allowed range (or choices)."""
    name: str
    default: Any
    low: Any = None
    high: Any = None
    kind: type = object
    choices: tuple = ()


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: ``fn(model, x, target, **options) -> Tensor`` and its facts."""
    name: str
    fn: Callable
    output: str
    seeded: bool
    options: dict[str, Option] = field(default_factory=dict)

    @property
    def takes_base(self) -> bool:
        return "base" in self.options


#: name -> :class:`MethodInfo`, in registration order.
METHODS: dict[str, MethodInfo] = {}


def _option(fn: Callable, name: str) -> Option:
    params = inspect.signature(fn).parameters
    if name not in params:
        raise ValueError(f"{fn.__name__} declares the tunable option {name!r} but has no such parameter")
    if name not in OPTION_RANGES:
        raise ValueError(f"tunable option {name!r} has no range in OPTION_RANGES; known: {sorted(OPTION_RANGES)}")
    rng = OPTION_RANGES[name]
    default = params[name].default
    if len(rng) == 3:
        return Option(name, default, rng[0], rng[1], rng[2])
    return Option(name, default, kind=str)


def register(name: str, *, output: str = "input", options: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` available as ``attribute(..., method=name)``, recording that it returns
    an ``output`` map (:data:`OUTPUTS`) and reads the tunable ``options`` (names of
    :data:`OPTION_RANGES`). Whether it draws noise is read from its signature (a ``seed`` parameter)."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")

    def add(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name].fn is not fn:
            raise ValueError(f"attribution method {name!r} is registered twice")
        seeded = "seed" in inspect.signature(fn).parameters
        METHODS[name] = MethodInfo(name, fn, output, seeded, {o: _option(fn, o) for o in options})
        return fn

    return add


def method_info(name: str) -> MethodInfo:
    """The facts of the registered method ``name`` (a clear error listing the known names otherwise)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attribution method {name!r}; known methods: {', '.join(METHODS)}") from None


def get_method(name: str) -> Callable:
    """The function of the registered method ``name``."""
    return method_info(name).fn


def attribute(model: nn.Module, x: Tensor, target, method="gradient", **options) -> Tensor:
    """Explain ``model``'s score for ``target`` at ``x`` with the method registered as ``method``
    (or a method function). Options go to the method."""
    fn = method if callable(method) else get_method(method)
    return fn(model, x, target, **options)
