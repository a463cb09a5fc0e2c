"""Method specifications: how a method is named, with its options, everywhere in xailab.

A *method name* is

- a registered method (``"gradient"``, ``"grad_cam"``, ``"random"`` ...);
- ``"<stat>(<base>)"`` with ``stat`` one of :data:`~xailab.attribution.ensembles.STATS`: that
  noise-ensemble statistic of a registered base method (``"vargrad(integrated_gradients)"``);
- either of these followed by ``"²"`` (or ``"^2"``): the element-wise square of that map.

A *method table* maps labels to ``(name, options)``; :func:`method_table` accepts the short forms
callers write: one name, a list of names (each its own label), or ``{label: name}`` /
``{label: (name, {option: value})}``, e.g. ``{"SmoothGrad σ=0.3": ("smoothgrad", {"sigma": 0.3})}``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor

from xailab.attribution.ensembles import STATS
from xailab.attribution.registry import METHODS, method_info

SQUARED = "²"
_SQUARE_SUFFIXES = (SQUARED, "^2")


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method name plus its options: ``method`` (registered), optional ensemble ``stat``,
    ``squared``; ``raw`` is the name of the map before squaring."""
    method: str
    stat: str | None = None
    squared: bool = False
    options: dict = field(default_factory=dict, compare=False)

    @property
    def raw(self) -> str:
        return f"{self.stat}({self.method})" if self.stat else self.method

    @property
    def name(self) -> str:
        return self.raw + (SQUARED if self.squared else "")

    @property
    def seeded(self) -> bool:
        """Whether computing this map draws noise (an ensemble, or a method that takes a seed)."""
        return bool(self.stat) or method_info(self.method).seeded


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are different
        return False


def same_options(a: Mapping, b: Mapping) -> bool:
    """Whether two option dicts are equal (tensors compared by value)."""
    return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)


def parse_method(name: str, options: Mapping | None = None) -> MethodSpec:
    """Parse and validate a method name; unknown names raise a ValueError listing the options."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a method name must be a non-empty string, got {name!r}")
    core, squared = name.strip(), False
    for suffix in _SQUARE_SUFFIXES:
        if core.endswith(suffix):
            core, squared = core[: -len(suffix)], True
    stat, method = None, core
    match = re.fullmatch(r"(\w+)\((\w+)\)", core)
    if match:
        stat, method = match.groups()
        if stat not in STATS:
            raise ValueError(f"unknown ensemble {stat!r} in method {name!r}; expected one of {STATS}")
        if method in STATS:
            raise ValueError(f"the base of {name!r} must be a non-ensemble method, got {method!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {name!r}: {method!r} is not a registered attribution method "
                         f"(known: {', '.join(sorted(METHODS))}; ensembles as 'vargrad(gradient)', "
                         f"squares with a trailing '{SQUARED}')")
    return MethodSpec(method, stat, squared, dict(options or {}))


def method_table(methods, defaults: Mapping | None = None) -> dict[str, MethodSpec]:
    """Normalise ``methods`` (see the module docstring) to ``{label: MethodSpec}``.

    ``defaults``: option defaults by base method name (``{"integrated_gradients": {"steps": 16}}``)
    plus ``"ensemble"`` for the noise ensembles' own options (``{"n_samples": 15, "sigma": 0.15}``);
    options given with a method override them.
    """
    if isinstance(methods, str):
        methods = (methods,)
    if isinstance(methods, Mapping):
        items = methods.items()
    else:
        items = [(m, m) for m in methods]
    table = {}
    for label, spec in items:
        if isinstance(spec, MethodSpec):
            table[str(label)] = spec
        elif isinstance(spec, str):
            table[str(label)] = parse_method(spec)
        elif isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], Mapping):
            table[str(label)] = parse_method(spec[0], spec[1])
        else:
            raise ValueError(f"methods[{label!r}] must be a method name or a (name, options) pair, "
                             f"got {spec!r}")
    if not table:
        raise ValueError("methods must name at least one attribution method")
    if defaults:
        table = {label: _with_defaults(spec, defaults) for label, spec in table.items()}
    return table


def _with_defaults(spec: MethodSpec, defaults: Mapping) -> MethodSpec:
    unknown = [k for k in defaults if k != "ensemble" and k not in METHODS]
    if unknown:
        raise ValueError(f"defaults name unknown methods {unknown}; keys are method names or 'ensemble'")
    merged = dict(defaults.get(spec.method, {}))
    if spec.stat:
        merged.update(defaults.get("ensemble", {}))
    merged.update(spec.options)
    return MethodSpec(spec.method, spec.stat, spec.squared, merged)
