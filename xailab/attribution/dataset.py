"""Maps of many methods over a data set, in batches: the one loop every experiment uses.

:func:`method_maps` takes a method table (see :mod:`xailab.attribution.specs`), computes each
map batch by batch on the model's device and returns them on the CPU. Ensemble statistics of the
same base and options (``smoothgrad(gradient)``, ``vargrad(gradient)`` ...) come from ONE set of
noisy samples; a squared map reuses its raw map.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from xailab.attribution._core import check_input
from xailab.attribution.ensembles import ensemble
from xailab.attribution.maps import reduce_channels
from xailab.attribution.registry import attribute
from xailab.attribution.specs import MethodSpec, method_table, same_options
from xailab.attribution.targets import resolve_target
from xailab.hooks import model_device
from xailab.utils import check_positive, progress as progress_bar

#: Seeds of batch ``b`` are ``seed * SEED_STRIDE + b``: distinct and reproducible per batch.
SEED_STRIDE = 100_003


def _groups(table: dict[str, MethodSpec]) -> list[tuple[MethodSpec, dict[str | None, list[str]]]]:
    """Raw computations: one per (method, options, plain-or-ensemble); for ensembles the labels of
    each statistic, for plain maps the labels under ``None``."""
    groups: list[tuple[MethodSpec, dict]] = []
    for label, spec in table.items():
        for head, members in groups:
            if head.method == spec.method and bool(head.stat) == bool(spec.stat) \
                    and same_options(head.options, spec.options):
                members.setdefault(spec.stat, []).append(label)
                break
        else:
            groups.append((spec, {spec.stat: [label]}))
    return groups


def method_maps(model: nn.Module, x: Tensor, target, methods, *, labels=None, defaults=None,
                reduce: str | None = None, batch_size: int | None = None, seed: int | None = None,
                progress: bool = False, desc: str = "maps") -> dict[str, Tensor]:
    """``{label: map}`` for every method of ``methods`` on all of ``x``, computed ``batch_size``
    rows at a time (default: all at once) on the model's device and returned on the CPU.

    ``defaults``: per-method option defaults (see :func:`~xailab.attribution.specs.method_table`).
    ``target``: an int, N class indices, ``"label"`` (with ``labels``) or ``"predicted"`` (each
    batch's arg-max logit); see :func:`~xailab.attribution.resolve_target`.
    ``reduce``: ``None`` (maps shaped as the methods return them) or a channel reduction of
    :func:`~xailab.attribution.maps.reduce_channels` (``"abs-sum"`` ...), giving pixel maps.
    ``seed``: ``None`` passes every method's options unchanged; an int gives batch ``b`` the seed
    ``seed * SEED_STRIDE + b`` for every method that draws noise (ensembles, ``random``, LIME ...)
    unless its options fix one, so that batches do not repeat each other's noise.
    """
    table = method_table(methods, defaults)
    check_input(x)
    n = x.shape[0]
    predicted = isinstance(target, str) and target == "predicted"
    t = None if predicted else resolve_target(target, x, labels=labels)
    rows = n if batch_size is None else int(check_positive("batch_size", batch_size, integer=True))
    dev = model_device(model)
    groups = _groups(table)
    raw: dict[tuple[int, str | None], list[Tensor]] = {}
    starts = range(0, n, max(rows, 1))
    for b, start in enumerate(progress_bar(starts, progress, desc=desc, leave=False)):
        xb = x[start:start + rows].to(dev)
        tb = resolve_target("predicted", xb, model=model) if predicted else t[start:start + rows].to(dev)
        bseed = None if seed is None else int(seed) * SEED_STRIDE + b
        for g, (head, members) in enumerate(groups):
            opts = dict(head.options)
            if bseed is not None and "seed" not in opts and head.seeded:
                opts["seed"] = bseed
            if head.stat:
                stats = tuple(sorted(members))
                out = ensemble(model, xb, tb, base=head.method, stats=stats, **opts)
            else:
                out = {None: attribute(model, xb, tb, method=head.method, **opts)}
            for stat, m in out.items():
                raw.setdefault((g, stat), []).append(m.detach().cpu())
    maps: dict[str, Tensor] = {}
    for g, (head, members) in enumerate(groups):
        for stat, labels in members.items():
            full = torch.cat(raw[(g, stat)])
            for label in labels:
                m = full ** 2 if table[label].squared else full
                maps[label] = m if reduce is None else reduce_channels(m, reduce)
    return {label: maps[label] for label in table}
