"""xailab: a workbook for explaining neural networks.

Layout, by layer (imports run down the layers only):

- ``utils`` — devices, argument checks, progress bars, mode guards, seeded RNG;
- ``data``, ``models`` and ``attribution`` (the engine: every method by name, ensembles, FullGrad,
  maps of many methods over a data set);
- ``train``, ``removal`` (which features to remove, what they become), ``metrics`` (the
  catalogue), ``viz``;
- ``papers`` — one package per paper: ``roar``, ``fullgrad``, ``spade``, ``generalization``;
- ``widgets`` and ``workbook`` (the runner, the claims and the report).

Submodules are imported on first use (``xailab.data``, ``xailab.attribution`` ...), so importing
``xailab`` itself is cheap and has no side effects. ``xailab.attribute`` is the one shortcut.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "attribution", "data", "metrics", "models", "papers", "removal", "train", "utils", "viz", "widgets", "workbook",
}


def attribute(model, x, target, method: str = "gradient", **options):
    """Explain ``model``'s output ``target`` at ``x`` with the attribution method named ``method``."""
    from xailab.attribution import attribute as _attribute

    return _attribute(model, x, target, method=method, **options)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"xailab.{name}")
    raise AttributeError(f"module 'xailab' has no attribute {name!r}")
