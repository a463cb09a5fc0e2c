"""The remove-and-retrain sweep: relevance once per estimator, modified datasets, fresh models.

One *cell* of the sweep is (estimator, variant, fraction): it builds the modified train and test
sets and trains ``len(seeds)`` fresh models on them at once with :func:`xailab.train.fit_many`.
Cells do not depend on each other, so they can run on any ``concurrent.futures.Executor``
(a local process pool, Dask's ``client.get_executor()``, submitit's ``AutoExecutor`` for SLURM).
The fraction-0 cell is the same for every estimator and variant (nothing removed) and runs once.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from xailab.roar.estimators import parse_estimator, relevance_maps
from xailab.roar.removal import RANK_BY, REDUCE, channel_mean, replace_features
from xailab.roar.result import RoarResult
from xailab.utils import check_fraction, check_positive, progress as progress_bar, resolve_device

__all__ = ["roar", "ModelFactory", "process_pool"]


class ModelFactory:
    """``model_fn`` for :func:`roar` that pickles (for process pools and clusters):
    ``ModelFactory("cnn", in_channels=3, num_classes=4)(seed)`` = ``make_model("cnn", seed=seed, ...)``."""

    def __init__(self, name: str, **kw):
        self.name, self.kw = name, kw

    def __call__(self, seed: int) -> nn.Module:
        from xailab.models import make_model

        return make_model(self.name, seed=seed, **self.kw)

    def __repr__(self) -> str:
        args = ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.kw.items()])
        return f"ModelFactory({args})"


def process_pool(workers: int = 2):
    """A local ``ProcessPoolExecutor`` for :func:`roar`: ``workers`` processes, one torch thread each.

    Forked where the platform allows it (fast start; one thread per worker keeps OpenMP fork-safe),
    spawned elsewhere.  Use it as a context manager: ``with process_pool(2) as ex: roar(..., executor=ex)``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = int(check_positive("workers", workers, integer=True))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=torch.set_num_threads, initargs=(1,))


def _strip(data):
    """The data without its ground-truth mask (lighter to ship to workers; not used by training)."""
    if dataclasses.is_dataclass(data) and getattr(data, "mask", None) is not None:
        return dataclasses.replace(data, mask=None)
    return data


def _modified(data, relevance: Tensor | None, fraction: float, top: bool, fill_value: Tensor, rank_by, reduce):
    if relevance is None or fraction == 0:
        return data
    x = replace_features(data.x, relevance, fraction, top=top, rank_by=rank_by, reduce=reduce,
                         fill_value=fill_value)
    return dataclasses.replace(data, x=x)


def run_cell(task: dict) -> list[float]:
    """Train ``len(seeds)`` fresh models on one modified train set; test accuracy of each.

    A plain top-level function of one picklable dict, so any executor can run it.
    """
    from xailab.train import evaluate, fit_many

    args = (task["fraction"], task["top"], task["fill_value"], task["rank_by"], task["reduce"])
    train = _modified(task["train"], task["rel_train"], *args)
    test = _modified(task["test"], task["rel_test"], *args)
    models = fit_many(task["model_fn"], train, seeds=task["seeds"], epochs=task["epochs"], lr=task["lr"],
                      batch_size=task["batch_size"], device=task["device"], progress=False)
    return [evaluate(m, test, device=task["device"]) for m in models]


def _check_estimators(estimators) -> dict[str, str | tuple]:
    """``{name: method name | (train_relevance, test_relevance)}`` from a list or a mapping."""
    if isinstance(estimators, str):
        estimators = [estimators]
    items = dict(estimators) if isinstance(estimators, Mapping) else {e: e for e in estimators}
    if not items:
        raise ValueError("estimators must name at least one estimator")
    for name, spec in items.items():
        if isinstance(spec, str):
            parse_estimator(spec)  # raises a clear error for unknown names
        elif not (isinstance(spec, (tuple, list)) and len(spec) == 2 and all(isinstance(t, Tensor) for t in spec)):
            raise ValueError(f"estimators[{name!r}] must be a method name or a (train_relevance, "
                             f"test_relevance) pair of tensors, got {type(spec).__name__}")
    return items


def _check_relevance_shape(t: Tensor, x: Tensor, what: str) -> None:
    ok = t.shape == x.shape or (x.ndim == 4 and t.ndim == 4 and t.shape[1] == 1
                                and t.shape[0] == x.shape[0] and t.shape[2:] == x.shape[2:])
    if not ok:
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected the inputs' {tuple(x.shape)} "
                         f"(or one channel)")


def _check_fractions(fractions) -> list[float]:
    fr = sorted({check_fraction("fractions", f) for f in fractions})
    if not fr:
        raise ValueError("fractions must hold at least one value in [0, 1]")
    return fr


def roar(model_fn: Callable[[int], nn.Module], train, test, estimators, fractions=(0, .1, .3, .5, .7, .9),
         seeds: int | Sequence[int] = 5, epochs: int = 10, explain_model: nn.Module | None = None, *,
         variants: Sequence[str] = ("roar", "keep", "no_retrain"), rank_by: str = "pixel",
         reduce: str = "abs-sum", target: str = "predicted", options: Mapping | None = None,
         lr: float = 1e-3, batch_size: int = 64, relevance_batch_size: int = 128, device="auto",
         cache_dir: str | os.PathLike | None = "data/cache", executor=None, progress: bool = True,
         ) -> RoarResult:
    """Remove (and keep) the top fractions of features per estimator and retrain from scratch.

    - ``model_fn(seed)`` builds a fresh untrained model (use :class:`ModelFactory` with a process
      pool); ``train`` / ``test``: ``xailab.data.Data``.
    - ``estimators``: names (see :mod:`xailab.roar.estimators`; controls ``random`` and ``sobel``)
      or a mapping ``{label: name | (train_relevance, test_relevance)}`` for precomputed rankings.
    - ``explain_model``: the trained model whose relevance ranks the features; by default
      ``model_fn(seeds[0])`` trained on ``train``.  Its relevance for every train and test image is
      computed once per estimator and cached in ``cache_dir`` (see :func:`relevance_maps`).
    - Removed features get the training set's per-channel mean (the paper's fill).
    - ``variants``: ``roar`` (remove the top fraction, retrain), ``keep`` (remove the bottom
      fraction, retrain), ``no_retrain`` (the explained model on the ROAR test set).
    - ``seeds``: a count (``range(seeds)``) or explicit seeds; ``executor``: any
      ``concurrent.futures.Executor`` to run cells in parallel (same numbers as ``None``).
    """
    items = _check_estimators(estimators)
    fractions = _check_fractions(fractions)
    seeds = list(range(int(check_positive("seeds", seeds, integer=True)))) if isinstance(seeds, int) \
        else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    bad = set(variants) - {"roar", "keep", "no_retrain"}
    if bad or not variants:
        raise ValueError(f"variants must be a non-empty subset of ('roar', 'keep', 'no_retrain'), got {variants!r}")
    if rank_by not in RANK_BY or reduce not in REDUCE:
        raise ValueError(f"rank_by must be one of {RANK_BY} and reduce one of {REDUCE}, got {rank_by!r}, {reduce!r}")
    for label, spec in items.items():
        if not isinstance(spec, str):
            for t, d, what in zip(spec, (train, test), ("train", "test")):
                _check_relevance_shape(t, d.x, f"{what} relevance of {label!r}")
    from xailab.train import evaluate, fit

    device = resolve_device(device)
    train, test = _strip(train), _strip(test)
    names = [spec for spec in items.values() if isinstance(spec, str)]
    if explain_model is None and (names or "no_retrain" in variants):  # only when something needs it
        explain_model = fit(model_fn(seeds[0]), train, epochs=epochs, lr=lr, batch_size=batch_size,
                            seed=seeds[0], device=device, progress=False)
    if explain_model is not None:
        explain_model.eval()

    # relevance of the whole train and test sets, once per estimator (cached on disk)
    rel: dict[str, tuple[Tensor, Tensor]] = {}
    if names:
        kw = dict(target=target, options=options, batch_size=relevance_batch_size, device=device,
                  cache_dir=cache_dir, progress=progress)
        rtr = relevance_maps(explain_model, train, names, **kw)
        rte = relevance_maps(explain_model, test, names, **kw)
        rel = {n: (rtr[n], rte[n]) for n in names}
    items = {label: rel[spec] if isinstance(spec, str) else tuple(spec) for label, spec in items.items()}

    fill_value = channel_mean(train.x)
    common = dict(model_fn=model_fn, train=train, test=test, fill_value=fill_value, rank_by=rank_by,
                  reduce=reduce, seeds=seeds, epochs=epochs, lr=lr, batch_size=batch_size, device=device)
    retrain = [v for v in ("roar", "keep") if v in variants]
    cells = []  # (labels [(estimator, variant)], task)
    if retrain and 0.0 in fractions:
        labels = [(e, v) for e in items for v in retrain]
        cells.append((labels, 0.0, dict(common, rel_train=None, rel_test=None, fraction=0.0, top=True)))
    for label, (r_tr, r_te) in items.items():
        for v in retrain:
            for f in fractions:
                if f > 0:
                    cells.append(([(label, v)], f, dict(common, rel_train=r_tr, rel_test=r_te, fraction=f,
                                                        top=(v == "roar"))))

    if executor is None:
        accs = [run_cell(task) for _, _, task in progress_bar(cells, progress, desc="ROAR cells")]
    else:
        futures = [executor.submit(run_cell, task) for _, _, task in cells]
        accs = [fut.result() for fut in progress_bar(futures, progress, desc="ROAR cells")]

    records = []
    for (labels, f, _), acc in zip(cells, accs):
        for est, v in labels:
            records += [dict(estimator=est, variant=v, fraction=f, seed=s, accuracy=a) for s, a in zip(seeds, acc)]
    if "no_retrain" in variants:
        for label, (_, r_te) in items.items():
            for f in fractions:
                mod = _modified(test, r_te, f, True, fill_value, rank_by, reduce)
                records.append(dict(estimator=label, variant="no_retrain", fraction=f, seed=None,
                                    accuracy=evaluate(explain_model, mod, device=device)))
    order = {v: i for i, v in enumerate(("roar", "keep", "no_retrain"))}
    est_order = {e: i for i, e in enumerate(items)}
    records.sort(key=lambda r: (est_order[r["estimator"]], order[r["variant"]], r["fraction"],
                                -1 if r["seed"] is None else r["seed"]))
    meta = dict(chance=1.0 / _num_classes(train, test), fractions=fractions, seeds=seeds, epochs=epochs,
                rank_by=rank_by, reduce=reduce, target=target, options=dict(options or {}),
                explain_accuracy=None if explain_model is None else evaluate(explain_model, test, device=device))
    return RoarResult(records, meta)


def _num_classes(train, test) -> int:
    k = getattr(train, "num_classes", None)
    if k:
        return int(k)
    return int(max(train.y.max(), test.y.max())) + 1
