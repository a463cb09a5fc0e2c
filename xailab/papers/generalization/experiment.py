"""The disjoint-split experiment: for each training-set size n, train several networks on disjoint
sets of n images, compare their maps (and their predictions) on a common test set, and measure how
much of the difference is noise of the measurement itself.

Two noise floors sit under every between-network difference:

* **Monte-Carlo** — a stochastic map (SmoothGrad) of *the same* network computed twice with
  independent noise;
* **data order** — the same network retrained from the same initialisation on the same images in
  another order (the randomness of training that is not the data).

A difference between networks trained on disjoint data means something only where it stands above
both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from xailab.attribution import TARGETS, method_maps, method_table
from xailab.data import disjoint_splits
from xailab.metrics import CONSISTENCY, consistency, prediction_agreement
from xailab.train import fit, fit_many, predict
from xailab.utils import check_positive, progress as progress_bar

__all__ = ["DEFAULT_METHODS", "SplitResults", "check_sizes", "disjoint_split_experiment"]

DEFAULT_METHODS = ("gradient", "integrated_gradients", "smoothgrad", "grad_cam")
#: The shuffling seed of the data-order retrain: the only thing that differs from network 0.
ORDER_SEED = 99_991


def _pairs(n_models: int, pairs) -> list[tuple[int, int]]:
    """Which pairs of the networks to compare: ``"disjoint"`` ((0,1), (2,3), ...: independent
    pairs), ``"all"`` (every pair) or an int (the first that many of all pairs)."""
    every = list(combinations(range(n_models), 2))
    if pairs == "disjoint":
        return [(i, i + 1) for i in range(0, n_models - 1, 2)]
    if pairs == "all":
        return every
    if isinstance(pairs, int) and pairs > 0:
        return every[:pairs]
    raise ValueError(f"pairs must be 'disjoint', 'all' or a positive int, got {pairs!r}")


def check_sizes(sizes: Sequence[int], networks: int, available: int, *, num_classes: int,
                batch_size: int) -> list[int]:
    """The training-set sizes as ints, with a clear error before any training when ``networks``
    disjoint sets of the largest size do not fit in ``available`` images, or a set would hold fewer
    images than classes or than one batch."""
    networks = int(check_positive("networks", networks, integer=True))
    if networks < 2:
        raise ValueError(f"networks must be >= 2 (two networks to compare), got {networks}")
    sizes = [int(check_positive("sizes", n, integer=True)) for n in sizes]
    if not sizes:
        raise ValueError("sizes must hold at least one training-set size")
    need = max(num_classes, batch_size)
    for n in sizes:
        if n < need:
            raise ValueError(f"size {n} is too small: fewer images than max(num_classes={num_classes}, "
                             f"batch_size={batch_size}) = {need}")
        if networks * n > available:
            raise ValueError(f"{networks} disjoint sets of {n} images need {networks * n} training images, "
                             f"only {available} are available; use sizes <= {available // networks}")
    return sizes


@dataclass
class SplitResults:
    """Tidy output of :func:`disjoint_split_experiment`.

    ``rows``: one dict per (n, repetition, pair, method) with keys ``n, seed, pair, method,
    agreement, kappa (chance-corrected agreement), acc_a, acc_b`` and one per metric (``spearman,
    l2`` ...; means over test images). ``floor``: one dict per (n, method, kind) with ``kind`` in
    ``"mc"`` (two noise draws of one network's stochastic map) and ``"order"`` (the network
    retrained on the same data in another order), and the same metric keys. ``per_image``:
    ``{(n, (rep, i, j), method): {metric: Tensor (N,)}}``. ``maps``: ``{(n, method): Tensor
    (networks, keep, 1, H, W)}`` pixel maps (abs-sum) kept for the first test images. ``models``:
    ``{n: [networks]}``; ``accuracy``: ``{n: [accuracy of each network]}``.
    """
    rows: list[dict] = field(default_factory=list)
    floor: list[dict] = field(default_factory=list)
    per_image: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)

    def select(self, **where) -> list[dict]:
        """Rows matching every ``key=value`` given."""
        return [r for r in self.rows if all(r.get(key) == v for key, v in where.items())]

    def mean(self, value: str = "spearman") -> float:
        """Mean of ``value`` over every row (every n, pair and method)."""
        return float(np.mean([r[value] for r in self.rows]))

    def summary(self, value: str = "spearman", by: Sequence[str] = ("n", "method")) -> dict:
        """``{group: (mean, std, count)}`` of ``value`` over the rows of each group (pairs)."""
        groups: dict = {}
        for r in self.rows:
            groups.setdefault(tuple(r[b] for b in by), []).append(float(r[value]))
        out = {}
        for key, vals in groups.items():
            t = torch.tensor(vals, dtype=torch.float64)
            std = float(t.std()) if len(vals) > 1 else 0.0
            out[key if len(by) > 1 else key[0]] = (float(t.mean()), std, len(vals))
        return out

    def by_size(self, value: str = "spearman", methods: Sequence[str] | None = None):
        """``(sizes, {method: [mean per size]}, {method: [std per size]})`` of ``value`` over pairs,
        sizes ascending."""
        summ = self.summary(value)
        sizes = sorted({n for n, _ in summ})
        methods = list(methods) if methods is not None else list(dict.fromkeys(m for _, m in summ))
        return (sizes, {m: [summ[(n, m)][0] for n in sizes] for m in methods},
                {m: [summ[(n, m)][1] for n in sizes] for m in methods})

    def gain(self, method: str, value: str = "spearman") -> tuple[float, float]:
        """The change of ``value`` for ``method`` from the smallest to the largest size, and its standard
        error: the pairs of one size share networks, so they count as ``networks // 2`` independent
        measurements, not as many as pairs."""
        s, (lo, hi) = self.summary(value), (min(self.accuracy), max(self.accuracy))
        nets = len(self.accuracy[lo])
        se = math.sqrt((s[(lo, method)][1] ** 2 + s[(hi, method)][1] ** 2) / max(1, nets // 2))
        return s[(hi, method)][0] - s[(lo, method)][0], se

    def floor_of(self, value: str, n: int, method: str, kind: str) -> float | None:
        """The noise floor ``kind`` (``"mc"`` or ``"order"``) of ``value`` at size ``n``, or None."""
        hits = [r[value] for r in self.floor if (r["n"], r["method"], r["kind"]) == (n, method, kind)]
        return float(np.mean(hits)) if hits else None


def _reseeded(table: dict, seed: int) -> dict:
    """The methods of ``table`` that draw noise (and so have a Monte-Carlo floor), with another seed."""
    return {label: (spec.raw, {**spec.options, "seed": seed}) for label, spec in table.items() if spec.seeded}


def _compare(maps_a: dict, maps_b: dict, metrics) -> dict:
    return {label: {m: consistency(maps_a[label], other=maps_b[label], measure=m) for m in metrics}
            for label in maps_b}


def disjoint_split_experiment(model_fn: Callable[[int], nn.Module], train, test, *, sizes: Sequence[int],
                              networks: int = 4, methods=DEFAULT_METHODS, fit_options: Mapping | None = None,
                              seeds: Sequence[int] = (0,), pairs="all", init_from=None,
                              metrics: Sequence[str] = ("spearman", "l2"), keep_maps: int = 8,
                              target: str = "label", noise_floor: bool = True, device="auto",
                              progress: bool = True) -> SplitResults:
    """For each training-set size ``n`` of ``sizes``, train ``networks`` networks on disjoint,
    class-balanced sets of ``n`` images of ``train`` and compare their maps on ``test``.

    ``fit_options`` go to :func:`xailab.train.fit_many` (e.g. ``steps=`` for the same number of
    optimisation steps at every size, ``optimiser="sgd"``, ``lr_schedule="cosine"``). Every network
    gets its own initialisation seed, so pairs differ by data *and* by the randomness of training,
    as in the paper; ``init_from`` (a state dict or a module) starts every network from the same
    pre-trained weights instead (the paper's fine-tuning variant). ``seeds`` repeat everything
    with other sets and initialisations (more pairs per size).

    ``methods``: a method table (see :func:`xailab.attribution.method_table`); maps are reduced to
    pixel relevance with abs-sum. ``target``: ``"label"`` explains the true class, ``"predicted"``
    each network's own prediction. ``pairs``: ``"all"``, ``"disjoint"`` or an int.
    ``noise_floor``: also measure, for network 0 of every size and the first seed, the Monte-Carlo
    floor of stochastic methods and the data-order floor (one extra network per size).
    """
    fit_options = dict(fit_options or {})
    batch_size = int(fit_options.get("batch_size", 64))
    sizes = check_sizes(sizes, networks, len(train), num_classes=train.num_classes, batch_size=batch_size)
    for m in metrics:
        if m not in CONSISTENCY:
            raise ValueError(f"metrics must be among {CONSISTENCY}, got {m!r}")
    table = method_table(methods)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    state = init_from.state_dict() if isinstance(init_from, nn.Module) else init_from

    def build(seed: int) -> nn.Module:
        net = model_fn(seed)
        if state is not None:
            net.load_state_dict(state)
        return net

    def maps_of(net, spec_table):
        return method_maps(net, test.x, target, spec_table, labels=test.y, reduce="abs-sum", batch_size=128)

    res = SplitResults()
    jobs = [(s, n) for s in seeds for n in sizes]
    for rep, n in progress_bar(jobs, progress, desc="training-set sizes"):
        parts = disjoint_splits(train[: networks * n], networks, seed=rep)
        net_seeds = [100_000 * rep + 10 * n + i for i in range(networks)]
        nets = fit_many(build, parts, seeds=net_seeds, device=device, progress=False, **fit_options)
        logits = [predict(net, test.x, device=device).detach().cpu() for net in nets]
        accs = [float((lg.argmax(-1) == test.y).double().mean()) for lg in logits]
        res.models.setdefault(n, []).extend(nets)
        res.accuracy.setdefault(n, []).extend(accs)
        maps = [maps_of(net, table) for net in nets]
        if rep == seeds[0]:
            for label in table:
                res.maps[(n, label)] = torch.stack([m[label][:keep_maps] for m in maps])
            if noise_floor:
                _floors(res, n, nets[0], build(net_seeds[0]), parts[0], table, maps[0], maps_of, metrics,
                        fit_options, device)
        for i, j in _pairs(networks, pairs):
            agree = prediction_agreement(logits[i], logits[j])
            kappa = prediction_agreement(logits[i], logits[j], chance_corrected=True)
            for label, vals in _compare(maps[i], maps[j], metrics).items():
                res.per_image[(n, (rep, i, j), label)] = vals
                row = dict(n=n, seed=rep, pair=(i, j), method=label, agreement=agree, kappa=kappa,
                           acc_a=accs[i], acc_b=accs[j])
                row.update({m: float(v.mean()) for m, v in vals.items()})
                res.rows.append(row)
    return res


def _floors(res, n, net, fresh, data, table, maps, maps_of, metrics, fit_options, device) -> None:
    """The Monte-Carlo and data-order floors of network ``net`` (``fresh``: its untrained twin)."""
    again = maps_of(net, _reseeded(table, seed=ORDER_SEED)) if _reseeded(table, 0) else {}
    for label, vals in _compare(maps, again, metrics).items():
        res.floor.append(dict(n=n, method=label, kind="mc", **{m: float(v.mean()) for m, v in vals.items()}))
    single = {k: v for k, v in fit_options.items() if k != "strategy"}     # fit() trains one network
    reordered = fit(fresh, data, seed=ORDER_SEED, device=device, progress=False, **single)
    for label, vals in _compare(maps, maps_of(reordered, table), metrics).items():
        res.floor.append(dict(n=n, method=label, kind="order", **{m: float(v.mean()) for m, v in vals.items()}))
