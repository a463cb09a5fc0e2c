"""The disjoint-split experiment: train one network per disjoint part of a training set and
compare their maps (and their predictions) on a common test set."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from xailab.attribution import TARGETS, method_maps, method_table
from xailab.data import disjoint_splits
from xailab.metrics import CONSISTENCY, consistency, prediction_agreement
from xailab.train import fit_many, predict
from xailab.utils import check_positive, progress as progress_bar

__all__ = ["DEFAULT_METHODS", "SplitResults", "check_split_factor", "disjoint_split_experiment"]

DEFAULT_METHODS = ("gradient", "integrated_gradients", "smoothgrad", "grad_cam")


def _pairs(n_models: int, pairs) -> list[tuple[int, int]]:
    """Which pairs of the k networks to compare: ``"disjoint"`` ((0,1), (2,3), ...: independent
    pairs), ``"all"`` (every pair) or an int (the first that many of all pairs)."""
    every = list(combinations(range(n_models), 2))
    if pairs == "disjoint":
        return [(i, i + 1) for i in range(0, n_models - 1, 2)]
    if pairs == "all":
        return every
    if isinstance(pairs, int) and pairs > 0:
        return every[:pairs]
    raise ValueError(f"pairs must be 'disjoint', 'all' or a positive int, got {pairs!r}")


def check_split_factor(n: int, k: int, *, num_classes: int, batch_size: int) -> int:
    """Size of each of the k parts of n samples; a clear error when the parts would be too small
    to train on (fewer samples than classes, or than one batch)."""
    k = int(check_positive("split factor", k, integer=True))
    if k < 2:
        raise ValueError(f"split factor must be >= 2 (two networks to compare), got {k}")
    part = n // k
    need = max(num_classes, batch_size)
    if part < need:
        raise ValueError(f"split factor {k} is too large for {n} training samples: each part would hold "
                         f"{part} samples, fewer than max(num_classes={num_classes}, batch_size={batch_size}) "
                         f"= {need}; use k <= {n // need}")
    return part


@dataclass
class SplitResults:
    """Tidy output of :func:`disjoint_split_experiment`.

    ``rows``: one dict per (k, pair, method) with keys ``k, n_train, seed, pair, method, agreement,
    kappa (chance-corrected agreement), acc_a, acc_b`` and one per metric (``spearman, l2`` ...) (metric values are means over test images).
    ``per_image``: ``{(k, pair, method): {metric: Tensor (N,)}}``.
    ``maps``: ``{(k, method): Tensor (k, N, 1, H, W)}`` pixel maps (abs-sum) of every network, kept
    for ``keep_maps`` test images.  ``models``: ``{k: [networks]}``.  ``accuracy``: ``{k: [acc]}``.
    """
    rows: list[dict] = field(default_factory=list)
    per_image: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)

    def select(self, **where) -> list[dict]:
        """Rows matching every ``key=value`` given."""
        return [r for r in self.rows if all(r.get(key) == v for key, v in where.items())]

    def mean(self, value: str = "spearman") -> float:
        """Mean of ``value`` over every row (every k, pair and method)."""
        return float(np.mean([r[value] for r in self.rows]))

    def by_size(self, value: str = "spearman", methods: Sequence[str] | None = None):
        """``(split factors, {method: [mean per k]}, {method: [std per k]})`` of ``value`` over pairs,
        in the order of the split factors (largest training set first)."""
        summ = self.summary(value)
        ks = sorted({k for k, _ in summ})
        methods = list(methods) if methods is not None else list(dict.fromkeys(m for _, m in summ))
        return (ks, {m: [summ[(k, m)][0] for k in ks] for m in methods},
                {m: [summ[(k, m)][1] for k in ks] for m in methods})

    def summary(self, value: str = "spearman", by: Sequence[str] = ("k", "method")) -> dict:
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


def disjoint_split_experiment(model_fn: Callable[[int], nn.Module], train, test, *,
                              split_factors: Sequence[int] = (2, 4, 8), methods=DEFAULT_METHODS,
                              epochs: int | Mapping[int, int] = 10, seeds: Sequence[int] = (0,), lr: float = 1e-3,
                              batch_size: int = 64, pairs="disjoint", init_from=None,
                              metrics: Sequence[str] = ("spearman", "l2"), keep_maps: int = 8,
                              target: str = "label", device="auto", progress: bool = True,
                              ) -> SplitResults:
    """For each split factor k, split ``train`` into k disjoint equal parts, train one network per
    part, and compare the networks' maps on ``test``.

    ``epochs``: one number for every k, or ``{k: epochs}`` (e.g. proportional to k, so that every
    network takes the same number of optimisation steps whatever its training-set size).

    ``model_fn(seed) -> nn.Module`` builds a fresh network (pass a spectrally normalised
    architecture, e.g. ``lambda s: SmallCNN(..., spectral_norm=True, seed=s)``, for that variant).
    Every network gets its own initialisation seed, so pairs differ by data *and* by the randomness
    of training, as in the paper.  ``init_from`` (a state dict or a module) makes every network start
    from the same pre-trained weights instead (the paper's fine-tuning variant).  ``seeds`` repeat
    the whole split with different split and initialisation seeds (more pairs per k).

    ``methods``: a method table (see :func:`xailab.attribution.method_table`); maps are reduced to
    pixel relevance with abs-sum.  ``target``: ``"label"`` explains the true class, ``"predicted"``
    each network's own prediction.  ``pairs``: ``"disjoint"`` (independent pairs (0,1), (2,3), ...),
    ``"all"`` or an int.  Returns a :class:`SplitResults`.
    """
    split_factors = [int(k) for k in split_factors]
    if not split_factors:
        raise ValueError("split_factors must hold at least one split factor")
    for k in split_factors:  # fail before any training
        check_split_factor(len(train), k, num_classes=train.num_classes, batch_size=batch_size)
        if isinstance(epochs, Mapping) and k not in epochs:
            raise ValueError(f"epochs has no entry for split factor {k}")
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

    res = SplitResults()
    jobs = [(s, k) for s in seeds for k in split_factors]
    for rep, k in progress_bar(jobs, progress, desc="split factors"):
        parts = disjoint_splits(train, k, seed=rep)
        net_seeds = [1000 * rep + 100 * k + i for i in range(k)]
        ep = epochs[k] if isinstance(epochs, Mapping) else epochs
        nets = fit_many(build, parts, seeds=net_seeds, epochs=ep, lr=lr, batch_size=batch_size,
                        device=device, progress=False)
        logits = [predict(n, test.x, device=device).detach().cpu() for n in nets]
        accs = [float((lg.argmax(-1) == test.y).double().mean()) for lg in logits]
        res.models.setdefault(k, []).extend(nets)
        res.accuracy.setdefault(k, []).extend(accs)
        maps = [method_maps(net, test.x, test.y if target == "label" else "predicted", table,
                            reduce="abs-sum", batch_size=128) for net in nets]
        if rep == seeds[0]:
            for label in table:
                res.maps[(k, label)] = torch.stack([m[label][:keep_maps] for m in maps])
        for i, j in _pairs(k, pairs):
            agree = prediction_agreement(logits[i], logits[j])
            kappa = prediction_agreement(logits[i], logits[j], chance_corrected=True)
            for label in table:
                vals = {m: consistency(maps[i][label], maps[j][label], m) for m in metrics}
                res.per_image[(k, (rep, i, j), label)] = vals
                row = dict(k=k, n_train=len(parts[i]), seed=rep, pair=(i, j), method=label,
                           agreement=agree, kappa=kappa, acc_a=accs[i], acc_b=accs[j])
                row.update({m: float(v.mean()) for m, v in vals.items()})
                res.rows.append(row)
    return res
