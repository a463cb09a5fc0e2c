"""Independent network pairs: the unit of replication of the generalization claims (register §5).

For each training-set size ``n``, ``m`` pairs of networks (A_i, B_i), each network trained on its own
class-balanced set of ``n`` images, every set disjoint from every other (within a size and across sizes), and
for each pair network A retrained from the same initialisation on the same images in another order (A′_i): the
**data-order ceiling**, the agreement a network can have with itself under this recipe. Maps are compared on a
few fixed test images, predictions on many.

- :func:`split_sets` — the disjoint training sets;
- :func:`train_pairs` — the networks of one arm (plain, spectrally normalised, fine-tuned ...), all of a size
  trained together (:func:`xailab.train.fit_many`);
- :func:`compare_pairs` — per pair, the consistency of every map (normalised Spearman and normalised L2), its
  ceiling and the Monte-Carlo floor of maps that draw noise, the prediction agreement and Cohen's κ, and every
  network's training and test accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from xailab.attribution import method_maps, method_table
from xailab.data import Data
from xailab.metrics import consistency, prediction_agreement
from xailab.train import evaluate, fit_many, predict
from xailab.utils import check_positive, derive_seed

__all__ = ["MEASURES", "PairRecord", "compare_pairs", "land", "least_fitted", "ship", "split_sets", "train_pairs"]

#: The register's two consistency metrics: normalised Spearman (higher: more consistent) and normalised L2.
MEASURES = ("spearman", "l2")
ROLES = ("A", "B", "A'")


def split_sets(pool: Data, sizes: Sequence[int], m: int, seed: int) -> dict[tuple[int, int, str], Data]:
    """``{(n, i, role): Data}``: for every size and pair, the class-balanced training sets of A and B (A′ shares
    A's), disjoint from every other set of every size; ``pool`` must hold ``2 m Σ sizes`` images."""
    m = int(check_positive("m", m, integer=True))
    need = 2 * m * sum(sizes)
    if len(pool) < need:
        raise ValueError(f"{m} pairs at sizes {list(sizes)} need {need} disjoint training images, the pool has {len(pool)}")
    g = torch.Generator().manual_seed(int(seed))
    k = pool.num_classes
    by_class = [c.nonzero().squeeze(1)[torch.randperm(int(c.sum()), generator=g)] for c in
                (pool.y[:, None] == torch.arange(k)[None]).T]
    taken = [0] * k
    sets = {}
    for n in sizes:
        for i in range(m):
            for role in ("A", "B"):
                counts = [n // k + (c < n % k) for c in range(k)]
                idx = []
                for c, count in enumerate(counts):
                    if taken[c] + count > len(by_class[c]):
                        raise ValueError(f"class {c} runs out of images; use a larger pool")
                    idx.append(by_class[c][taken[c]:taken[c] + count])
                    taken[c] += count
                sets[(n, i, role)] = pool[torch.cat(idx)[torch.randperm(n, generator=g)]]
            sets[(n, i, "A'")] = sets[(n, i, "A")]
    return sets


class _StartFrom:
    """``model_fn`` whose networks load given weights: ``init[role]`` for the networks of that role (picklable)."""

    def __init__(self, model_fn: Callable[[int], nn.Module], starts: Mapping):
        self.model_fn, self.starts = model_fn, dict(starts)

    def __call__(self, seed: int) -> nn.Module:
        net = self.model_fn(seed)
        if self.starts.get(seed) is not None:
            net.load_state_dict(self.starts[seed])
        return net


def ship(net: nn.Module) -> tuple:
    """A network of :func:`train_pairs` as ``(model_fn, init seed, state dict)``: parametrized modules (spectral
    normalisation) cross a process boundary only as their state dict. :func:`land` rebuilds it."""
    model_fn, init_seed = net.origin
    return model_fn, init_seed, net.state_dict()


def land(shipped: tuple) -> nn.Module:
    """The network :func:`ship` packed, in eval mode."""
    model_fn, init_seed, state = shipped
    net = model_fn(init_seed)
    net.load_state_dict(state)
    net.origin = (model_fn, init_seed)
    return net.eval()


def _train_unit(task: dict) -> list[tuple]:
    """One group of networks trained together (a plain top-level function: any executor can run it)."""
    nets = fit_many(task["model_fn"], task["sets"], seeds=task["order"], init_seeds=task["inits"],
                    device=task["device"], progress=False, **task["fit_options"])
    return [(task["model_fn"], s, net.state_dict()) for s, net in zip(task["inits"], nets)]


def train_pairs(model_fn: Callable[[int], nn.Module], sets: Mapping, *, arm: str, seed: int,
                fit_options: Mapping | None = None, ceiling: bool = True, init: Mapping | None = None,
                device="auto", executor=None, groups: int = 1) -> dict[tuple[int, int, str], nn.Module]:
    """Train every network of one ``arm`` on ``sets`` (from :func:`split_sets`): ``{(n, i, role): model}``.

    Initialisations and data orders come from ``derive_seed(seed, arm, n, i, role)``; A′ takes A's
    initialisation and its own order (``ceiling=False`` leaves A′ out). ``init``: optional ``{role: state dict}``
    every network of that role starts from (fine-tuning from pretrained weights). The networks of one size are
    trained together in ``groups`` groups, on ``executor`` (any ``concurrent.futures`` executor) when given.
    Every network keeps ``origin = (model_fn, init seed)``, which :func:`ship` needs."""
    fit_options = dict(fit_options or {})
    roles = ROLES if ceiling else ROLES[:2]
    tasks, keys_of = [], []
    for n in sorted({n for n, _, _ in sets}):
        keys = sorted((k for k in sets if k[0] == n and k[2] in roles), key=lambda k: (k[1], ROLES.index(k[2])))
        for part in np.array_split(np.arange(len(keys)), min(groups, len(keys))):
            chunk = [keys[j] for j in part]
            inits = [derive_seed(seed, arm, n, i, "A" if r == "A'" else r, "init") for (_, i, r) in chunk]
            starts = {s: (init or {}).get("A" if r == "A'" else r) for s, (_, _, r) in zip(inits, chunk)}
            tasks.append(dict(model_fn=_StartFrom(model_fn, starts) if init else model_fn,
                              sets=[sets[k] for k in chunk], inits=inits, device=device, fit_options=fit_options,
                              order=[derive_seed(seed, arm, n, i, r, "order") for (_, i, r) in chunk]))
            keys_of.append(chunk)
    results = [_train_unit(t) for t in tasks] if executor is None else list(executor.map(_train_unit, tasks))
    return {k: land(net) for chunk, nets in zip(keys_of, results) for k, net in zip(chunk, nets)}


@dataclass
class PairRecord:
    """One pair (A_i, B_i) of an arm at size ``n``. ``consistency[method][measure]``: A against B, the mean over
    the map images (``per_image`` keeps every image); ``ceiling``: A against A′; ``floor``: A against itself with
    fresh noise (methods that draw noise); ``agreement`` / ``kappa`` of the predictions (and their ceilings,
    A against A′); ``accuracy`` / ``train_accuracy`` by role."""
    arm: str
    n: int
    pair: int
    consistency: dict = field(default_factory=dict)
    per_image: dict = field(default_factory=dict)
    ceiling: dict = field(default_factory=dict)
    floor: dict = field(default_factory=dict)
    agreement: float = float("nan")
    kappa: float = float("nan")
    agreement_ceiling: float = float("nan")
    kappa_ceiling: float = float("nan")
    accuracy: dict = field(default_factory=dict)
    train_accuracy: dict = field(default_factory=dict)

    def mean(self, methods: Sequence[str], measure: str, of: str = "consistency") -> float:
        """The mean over ``methods`` of ``measure`` in ``consistency``, ``ceiling`` or ``floor``."""
        table = getattr(self, of)
        return float(np.mean([table[m][measure] for m in methods]))


def _compare(a: Tensor, b: Tensor) -> dict[str, Tensor]:
    return {measure: consistency(a, other=b, measure=measure) for measure in MEASURES}


def _compare_unit(task: dict) -> "PairRecord":
    """One pair's maps, predictions and comparisons (a plain top-level function: any executor can run it)."""
    arm, n, i, seed = task["arm"], task["n"], task["pair"], task["seed"]
    table, maps_data, test, batch_size = task["table"], task["maps_data"], task["test"], task["batch_size"]
    maps, logits = {}, {}
    task["networks"] = {r: land(net) for r, net in task["networks"].items()}
    for r, net in task["networks"].items():
        maps[r] = method_maps(net, maps_data.x, "label", table, labels=maps_data.y, reduce="abs-sum",
                              batch_size=batch_size, seed=derive_seed(seed, arm, n, i, r, "maps"))
        logits[r] = predict(net, test.x).cpu()
    rec = PairRecord(arm, n, i)
    for r, net in task["networks"].items():
        rec.accuracy[r] = float((logits[r].argmax(1) == test.y).double().mean())
        rec.train_accuracy[r] = evaluate(net, task["sets"][r])
    for label in table:
        vals = _compare(maps["A"][label], maps["B"][label])
        rec.per_image[label] = vals
        rec.consistency[label] = {k: float(v.mean()) for k, v in vals.items()}
        if "A'" in maps:
            rec.ceiling[label] = {k: float(v.mean()) for k, v in _compare(maps["A"][label], maps["A'"][label]).items()}
    noisy = {label: (spec.raw, spec.options) for label, spec in table.items() if spec.seeded}
    if noisy and task["floor"]:
        again = method_maps(task["networks"]["A"], maps_data.x, "label", noisy, labels=maps_data.y, reduce="abs-sum",
                            batch_size=batch_size, seed=derive_seed(seed, arm, n, i, "A", "again"))
        for label in noisy:
            rec.floor[label] = {k: float(v.mean()) for k, v in _compare(maps["A"][label], again[label]).items()}
    rec.agreement = prediction_agreement(logits["A"], logits["B"])
    rec.kappa = prediction_agreement(logits["A"], logits["B"], chance_corrected=True)
    if "A'" in logits:
        rec.agreement_ceiling = prediction_agreement(logits["A"], logits["A'"])
        rec.kappa_ceiling = prediction_agreement(logits["A"], logits["A'"], chance_corrected=True)
    return rec


def compare_pairs(networks: Mapping, sets: Mapping, methods, maps_data: Data, test: Data, *, arm: str, seed: int,
                  floor_pairs: int | None = None, batch_size: int = 64, executor=None) -> list[PairRecord]:
    """Compare the networks of :func:`train_pairs` pair by pair (see :class:`PairRecord`). ``methods``: a method
    table; maps explain the label of each of ``maps_data``'s images (channel-summed |map|); predictions and
    accuracies on ``test``. The Monte-Carlo floor of the maps that draw noise is measured on network A of the
    first ``floor_pairs`` pairs of each size (all by default). Noise is seeded from ``(seed, arm, n, i, role)``;
    pairs run on ``executor`` when given."""
    table = method_table(methods)
    pairs = sorted({(n, i) for (n, i, r) in networks})
    tasks = [dict(arm=arm, n=n, pair=i, seed=seed, table=table, maps_data=maps_data, test=test, batch_size=batch_size,
                  networks={r: ship(networks[(n, i, r)]) for r in ROLES if (n, i, r) in networks},
                  sets={r: sets[(n, i, r)] for r in ROLES if (n, i, r) in networks},
                  floor=floor_pairs is None or i < floor_pairs) for n, i in pairs]
    return [_compare_unit(t) for t in tasks] if executor is None else list(executor.map(_compare_unit, tasks))


def least_fitted(records: Sequence[PairRecord]) -> tuple[tuple[int, int, str], float]:
    """The network of ``records`` (from :func:`compare_pairs`) with the lowest training accuracy, as
    ``((n, pair, role), accuracy)``: the premise that every network fits its own set (GEN-6) reads it."""
    fit = {(r.n, r.pair, role): a for r in records for role, a in r.train_accuracy.items()}
    if not fit:
        raise ValueError("records hold no training accuracy")
    worst = min(fit, key=fit.get)
    return worst, fit[worst]
