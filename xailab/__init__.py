"""xailab: a workbook for explaining neural networks.

Layout, by layer (imports run down the layers only):

- ``utils``, ``hooks`` (hooks and model structure) and ``stats`` (intervals and tests) — the floor;
- ``data``, ``models`` and ``attribution`` (the engine: every method by name with its facts,
  ensembles, FullGrad, maps of many methods over a data set);
- ``train``, ``removal`` (which features to remove, what they become), ``metrics`` (the
  catalogue and its runner), ``viz``, ``claims`` (the registered protocol that decides a verdict);
- ``papers`` — one package per paper: ``roar``, ``fullgrad``, ``spade``, ``generalization``;
- ``widgets``, ``workbook`` (the runner and the report) and ``course`` (the exercises).

Submodules are imported on first use (``xailab.data``, ``xailab.attribution`` ...), so importing
``xailab`` itself is cheap and has no side effects. ``xailab.attribute`` is the one shortcut: the
engine's :func:`xailab.attribution.attribute`.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: The top-level modules, each loaded on first access (PEP 562).
SUBMODULES = ("attribution", "claims", "course", "data", "hooks", "metrics", "models", "papers", "removal",
              "stats", "train", "utils", "viz", "widgets", "workbook")


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f"xailab.{name}")
    if name == "attribute":
        return importlib.import_module("xailab.attribution").attribute
    raise AttributeError(f"module 'xailab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *SUBMODULES, "attribute"])
