"""The remove-and-retrain sweep, in phases: check the request, train the explained model, rank the
features once per estimator, build the cells, run them, assemble a :class:`RoarResult`.

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

from torch import Tensor, nn

from xailab.attribution import REDUCTIONS, TARGETS, method_table
from xailab.models import ModelFactory
from xailab.papers.roar.estimators import relevance_maps
from xailab.papers.roar.result import NOT_RETRAINED, RETRAINED, VARIANTS, RoarResult
from xailab.removal import RANK_BY, dataset_mean, replace_features
from xailab.train import evaluate, fit, fit_many
from xailab.utils import check_fraction, check_positive, process_pool, progress as progress_bar, resolve_device

__all__ = ["roar", "ModelFactory", "process_pool", "run_cell", "score_cell", "without_retraining"]   # ModelFactory: from xailab.models


# --------------------------------------------------------------------------- one cell
def _strip(data):
    """The data without its ground-truth mask (lighter to ship to workers; not used by training)."""
    if dataclasses.is_dataclass(data) and getattr(data, "mask", None) is not None:
        return dataclasses.replace(data, mask=None)
    return data


def modified(data, maps: Tensor | None, fraction: float, *, top: bool, fill, rank_by: str, reduce: str,
             **fill_options):
    """``data`` with the top (``top``) or bottom ``fraction`` of each sample's features removed."""
    if maps is None or fraction == 0:
        return data
    x = replace_features(data.x, maps, fraction, top=top, rank_by=rank_by, reduce=reduce, fill=fill,
                         **fill_options)
    return dataclasses.replace(data, x=x)


def score_cell(task: dict) -> list[tuple[float, None]]:
    """The explained model's test accuracy with the top (or bottom) fraction removed, no retraining."""
    how = dict(top=task["top"], fill=task["fill"], rank_by=task["rank_by"], reduce=task["reduce"],
               **task["fill_options"])
    return [(evaluate(task["model"], modified(task["test"], task["maps_test"], task["fraction"], **how),
                      device=task["device"]), None)]


def run_cell(task: dict) -> list[tuple[float, float]]:
    """Train ``len(seeds)`` fresh models on one modified train set: ``(test accuracy, training accuracy)`` of
    each (the training accuracy tells a collapsed optimisation from a loss of information).

    A plain top-level function of one picklable dict, so any executor can run it.
    """
    how = dict(top=task["top"], fill=task["fill"], rank_by=task["rank_by"], reduce=task["reduce"],
               **task["fill_options"])
    train = modified(task["train"], task["maps_train"], task["fraction"], **how)
    test = modified(task["test"], task["maps_test"], task["fraction"], **how)
    models = fit_many(task["model_fn"], train, seeds=task["seeds"], epochs=task["epochs"], lr=task["lr"],
                      batch_size=task["batch_size"], device=task["device"], progress=False, **task["fit_options"])
    return [(evaluate(m, test, device=task["device"]), evaluate(m, train, device=task["device"])) for m in models]


# --------------------------------------------------------------------------- phases
def _split_estimators(estimators) -> tuple[dict, dict[str, tuple[Tensor, Tensor]], list[str]]:
    """``(method table entries, precomputed {label: (train_relevance, test_relevance)}, labels in order)``."""
    if isinstance(estimators, str):
        estimators = [estimators]
    items = dict(estimators) if isinstance(estimators, Mapping) else {e: e for e in estimators}
    if not items:
        raise ValueError("estimators must name at least one estimator")
    methods, given = {}, {}
    for label, spec in items.items():
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and all(isinstance(t, Tensor) for t in spec):
            given[label] = tuple(spec)
        else:
            methods[label] = spec
    return methods, given, list(items)


def _check_maps_shape(t: Tensor, x: Tensor, what: str) -> None:
    ok = t.shape == x.shape or (x.ndim == 4 and t.ndim == 4 and t.shape[1] == 1
                                and t.shape[0] == x.shape[0] and t.shape[2:] == x.shape[2:])
    if not ok:
        raise ValueError(f"{what} has shape {tuple(t.shape)}, expected the inputs' {tuple(x.shape)} "
                         f"(or one channel)")


def _check_request(train, test, methods, given, fractions, seeds, variants, rank_by, reduce):
    """Validate everything before any training; returns (fractions, seeds, variants)."""
    if methods:
        method_table(methods)                  # raises a clear error for unknown names
    fractions = sorted({check_fraction("fractions", f) for f in fractions})
    if not fractions:
        raise ValueError("fractions must hold at least one value in [0, 1]")
    seeds = list(range(int(check_positive("seeds", seeds, integer=True)))) if isinstance(seeds, int) \
        else [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    variants = tuple(variants)
    if set(variants) - set(VARIANTS) or not variants:
        raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {variants!r}")
    if rank_by not in RANK_BY or reduce not in REDUCTIONS:
        raise ValueError(f"rank_by must be one of {RANK_BY} and reduce one of {REDUCTIONS}, "
                         f"got {rank_by!r}, {reduce!r}")
    for label, pair in given.items():
        for t, d, what in zip(pair, (train, test), ("train", "test")):
            _check_maps_shape(t, d.x, f"{what} maps of {label!r}")
    return fractions, seeds, variants


def _cells(relevance: dict, fractions, variants, common: dict, model) -> list[tuple]:
    """``[(function, task, labels [(estimator, variant)], fraction, seeds)]``: the shared
    fraction-0 retraining cell, one retraining cell per estimator, variant and fraction, then one
    scoring cell (no retraining) per estimator, variant and fraction."""
    retrain = [v for v in RETRAINED if v in variants]
    cells = []
    if retrain and 0.0 in fractions:
        labels = [(e, v) for e in relevance for v in retrain]
        cells.append((run_cell, dict(common, maps_train=None, maps_test=None, fraction=0.0, top=True),
                      labels, 0.0, common["seeds"]))
    for label, (r_tr, r_te) in relevance.items():
        for v in retrain:
            for f in fractions:
                if f > 0:
                    task = dict(common, maps_train=r_tr, maps_test=r_te, fraction=f, top=(v == "roar"))
                    cells.append((run_cell, task, [(label, v)], f, common["seeds"]))
    scoring = dict(common, model=model, train=None)
    for label, (_, r_te) in relevance.items():
        for v in NOT_RETRAINED:
            if v in variants:
                for f in fractions:
                    task = dict(scoring, maps_test=r_te, fraction=f, top=(v == "morf"))
                    cells.append((score_cell, task, [(label, v)], f, [None]))
    return cells


def _run(cells, executor, progress: bool) -> list[list[float]]:
    if executor is None:
        return [fn(task) for fn, task, *_ in progress_bar(cells, progress, desc="ROAR cells")]
    futures = [executor.submit(fn, task) for fn, task, *_ in cells]
    return [fut.result() for fut in progress_bar(futures, progress, desc="ROAR cells")]


def _records(cells, accs) -> list[dict]:
    return [dict(estimator=est, variant=v, fraction=f, seed=s, accuracy=a, train_accuracy=fit_a)
            for (_, _, labels, f, seeds), acc in zip(cells, accs) for est, v in labels
            for s, (a, fit_a) in zip(seeds, acc)]


def roar(model_fn: Callable[[int], nn.Module], train, test, estimators, fractions=(0, .1, .3, .5, .7, .9),
         seeds: int | Sequence[int] = 5, epochs: int = 10, explain_model: nn.Module | None = None, *,
         variants: Sequence[str] = ("roar", "kar", "morf"), rank_by: str = "pixel", reduce: str = "abs-sum",
         target: str = "label", seed: int | None = None, defaults: Mapping | None = None, fill="dataset_mean",
         fill_options: Mapping | None = None, fit_options: Mapping | None = None,
         lr: float = 1e-3, batch_size: int = 64, relevance_batch_size: int = 128, device="auto",
         cache_dir: str | os.PathLike | None = None, executor=None, progress: bool = True,
         ) -> RoarResult:
    """Remove (and keep) the top fractions of features per estimator and retrain from scratch.

    - ``model_fn(seed)`` builds a fresh untrained model (use :class:`ModelFactory` with a process
      pool); ``train`` / ``test``: ``xailab.data.Data``.
    - ``estimators``: a method table (names such as ``"vargrad(gradient)"``, or
      ``{label: name | (name, options) | (train_relevance, test_relevance)}`` for precomputed
      rankings); ``defaults``: per-method option defaults (see :func:`xailab.attribution.method_table`).
    - ``explain_model``: the trained model whose maps rank the features; by default
      ``model_fn(seeds[0])`` trained on ``train``.  Its maps of every train and test image are
      computed once per estimator, explaining ``target`` (``"label"`` or ``"predicted"``) with
      noise seeded by ``seed`` (default ``seeds[0]``), and cached in ``cache_dir`` when given (see
      :func:`relevance_maps`).
    - ``fill``: what removed features become (:data:`xailab.removal.FILLS`); the default is the
      *training set's* per-channel mean, the paper's fill. ``"noisy_linear"`` is ROAD's imputation;
      ``fill_options`` go to the fill (``noise``, ``seed``, ``blur_sigma``).
    - ``variants`` (:data:`VARIANTS`): ``roar`` (remove the top fraction, retrain), ``kar`` (remove
      the bottom fraction, retrain), ``morf`` / ``lerf`` (the explained model on the test set with
      the top / bottom fraction removed, no retraining: ROAD's curves with its fill).
    - ``seeds``: a count (``range(seeds)``) or explicit seeds; ``executor``: any
      ``concurrent.futures.Executor`` to run cells in parallel (same numbers as ``None``).
    - ``fit_options``: the rest of the training recipe of every model (``autocast``, ``warmup``,
      ``lr_schedule``, ``optimiser`` ..., see :func:`xailab.train.fit`).

    Every retrained record holds its model's ``accuracy`` (test) and ``train_accuracy``.
    """
    methods, given, order = _split_estimators(estimators)
    fractions, seeds, variants = _check_request(train, test, methods, given, fractions, seeds, variants,
                                                rank_by, reduce)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    device = resolve_device(device)
    train, test = _strip(train), _strip(test)
    scored = set(NOT_RETRAINED) & set(variants)
    if explain_model is None and (methods or scored):   # only when something needs it
        explain_model = fit(model_fn(seeds[0]), train, epochs=epochs, lr=lr, batch_size=batch_size,
                            seed=seeds[0], device=device, progress=False, **dict(fit_options or {}))
    if explain_model is not None:
        explain_model.eval()

    computed = {}
    if methods:
        kw = dict(target=target, defaults=defaults, seed=seeds[0] if seed is None else int(seed),
                  batch_size=relevance_batch_size, cache_dir=cache_dir, progress=progress)
        r_tr = relevance_maps(explain_model, train, methods, **kw)
        r_te = relevance_maps(explain_model, test, methods, **kw)
        computed = {label: (r_tr[label], r_te[label]) for label in methods}
    relevance = {label: computed[label] if label in computed else given[label] for label in order}

    fill_name = fill if isinstance(fill, str) else "value"
    if fill_name == "dataset_mean":                   # one value per channel: cheap to ship to every cell
        fill = dataset_mean(train.x)
    common = dict(model_fn=model_fn, train=train, test=test, seeds=seeds, epochs=epochs, lr=lr,
                  batch_size=batch_size, device=device, fill=fill, rank_by=rank_by, reduce=reduce,
                  fill_options=dict(fill_options or {}), fit_options=dict(fit_options or {}))
    cells = _cells(relevance, fractions, variants, common, explain_model)
    records = _records(cells, _run(cells, executor, progress))
    rank = {v: i for i, v in enumerate(VARIANTS)}
    records.sort(key=lambda r: (order.index(r["estimator"]), rank[r["variant"]], r["fraction"],
                                -1 if r["seed"] is None else r["seed"]))
    meta = dict(chance=1.0 / _num_classes(train, test), fractions=fractions, seeds=seeds, epochs=epochs,
                rank_by=rank_by, reduce=reduce, target=target, seed=kw["seed"] if methods else None,
                defaults=dict(defaults or {}),
                fill=fill_name,
                explain_accuracy=None if explain_model is None else evaluate(explain_model, test, device=device))
    return RoarResult(records, meta)


def _original_unit(task: dict) -> list[dict]:
    """One original model: its own maps of the test images, scored with the top fractions removed."""
    model, test, seed = task["model"].eval(), task["test"], task["seed"]
    maps = dict(task["given"])
    if task["methods"]:
        maps |= relevance_maps(model, test, task["methods"], target=task["target"], defaults=task["defaults"],
                               seed=seed, progress=False)
    how = dict(top=True, fill=task["fill"], rank_by=task["rank_by"], reduce=task["reduce"], **task["fill_options"])
    return [dict(estimator=label, variant="morf", fraction=f, seed=seed,
                 accuracy=evaluate(model, modified(test, maps[label], f, **how), device="cpu"), train_accuracy=None)
            for label in task["order"] for f in task["fractions"]]


def without_retraining(models: Mapping[int, nn.Module], train, test, estimators, fractions, *,
                       fill="dataset_mean", fill_options: Mapping | None = None, target: str = "predicted",
                       defaults: Mapping | None = None, rank_by: str = "pixel", reduce: str = "abs-sum",
                       executor=None) -> RoarResult:
    """The no-retraining arm per replicate (register, ROAR-10): every original model ``models[seed]`` (trained on
    unmodified data) ranks the test images with its *own* maps of ``estimators`` (a method table, or
    ``{label: test relevance}`` for precomputed rankings such as random) and is scored, as it is, on the test
    images with its top ``fractions`` removed. Records: variant ``"morf"``, ``seed`` the model's key, so they
    pair with the retrained records of the same seed. Maps' noise is seeded by the model's key; ``fill`` as in
    :func:`roar` (the default: ``train``'s per-channel mean). Models run on ``executor`` when given (CPU)."""
    items = dict(estimators) if isinstance(estimators, Mapping) else {e: e for e in estimators}
    given = {k: v for k, v in items.items() if isinstance(v, Tensor)}
    methods = {k: v for k, v in items.items() if k not in given}
    for label, t in given.items():
        _check_maps_shape(t, test.x, f"test maps of {label!r}")
    fractions = sorted({check_fraction("fractions", f) for f in fractions})
    fill_name = fill if isinstance(fill, str) else "value"
    if fill_name == "dataset_mean":
        fill = dataset_mean(train.x)
    tasks = [dict(model=m.cpu(), test=_strip(test), seed=int(s), given=given, methods=methods, order=list(items),
                  target=target, defaults=defaults, fill=fill, fill_options=dict(fill_options or {}),
                  rank_by=rank_by, reduce=reduce, fractions=fractions) for s, m in models.items()]
    rows = [_original_unit(t) for t in tasks] if executor is None else list(executor.map(_original_unit, tasks))
    return RoarResult([r for unit in rows for r in unit], dict(chance=1.0 / _num_classes(train, test),
                                                                fractions=fractions, fill=fill_name, target=target))


def _num_classes(train, test) -> int:
    k = getattr(train, "num_classes", None)
    if k:
        return int(k)
    return int(max(train.y.max(), test.y.max())) + 1
