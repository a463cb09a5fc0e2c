"""The table of attribution methods by name.

Each method module registers its functions with :func:`register` when it is imported (the
package's ``__init__`` imports them all), so a module that needs a method by name, such as the
noise ensembles for their ``base``, asks :func:`get_method` at call time without importing the
package that imports it.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

#: name -> method ``fn(model, x, target, **options) -> Tensor``, in registration order.
METHODS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: make ``fn`` available as ``attribute(..., method=name)``."""

    def add(fn: Callable) -> Callable:
        if name in METHODS and METHODS[name] is not fn:
            raise ValueError(f"attribution method {name!r} is registered twice")
        METHODS[name] = fn
        return fn

    return add


def get_method(name: str) -> Callable:
    """The registered method called ``name`` (a clear error listing the known names otherwise)."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attribution method {name!r}; known methods: {', '.join(METHODS)}") from None


def attribute(model: nn.Module, x: Tensor, target, method="gradient", **options) -> Tensor:
    """Explain ``model``'s score for ``target`` at ``x`` with the method registered as ``method``
    (or a method function). Options go to the method."""
    fn = method if callable(method) else get_method(method)
    return fn(model, x, target, **options)
