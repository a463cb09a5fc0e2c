"""One trojaned network's SPADE evaluation as functions: the steps 05 walks through on its first network, so that
the same steps can be repeated on more networks (the pooled SPADE claims of docs/deviations.md, 2026-12-05).

1. :func:`layer_plan`: which layers the views of an image determine, and the schedules over them;
2. :func:`calibrate_schedule`: traces of the calibration images over the sparsity grid, and the maxima chosen;
3. :func:`evaluate_schedules`: traces of the evaluation images under every schedule the claims compare, and the
   Sparse-FC baseline;
4. :func:`replicate`: a network trained at another seed, taken through 1-3 and the facet probes;
   :class:`Replicates`: several of them, side by side in a process pool where there is one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xailab.papers.spade import evaluate as ev
from xailab.papers.spade import facets as fa
from xailab.papers.spade.trace import layer_conditioning
from xailab.utils import check_positive, process_pool, resolve_device

#: the variants of the evaluation rows besides "dense"
VARIANTS = ("spade", "fixed", "linear s*", "constant", "sparse fc")


def layer_plan(model, calib_x, *, n_views: int, seed: int, device, images: int = 2) -> tuple[dict, ev.Schedules]:
    """Per prunable layer, the worst conditioning over the first ``images`` calibration images
    (:func:`layer_conditioning`), and the schedules that leave the layers the views do not determine dense."""
    cond: dict = {}
    for i in range(min(images, len(calib_x))):
        for r in layer_conditioning(model, calib_x[i], n_views=n_views, seed=seed, device=device):
            c = cond.setdefault(r["name"], dict(r))
            for key, worst in (("live", min), ("rank", min), ("deficit", max), ("condition", max),
                               ("condition_damped", max)):
                c[key] = worst(c[key], r[key])
    return cond, ev.Schedules(list(cond), dense=[n for n, r in cond.items() if r["deficit"] > 0])


@dataclass
class Calibration:
    dense: list                 # the dense maps' rows on the calibration images
    rows: list                  # trace rows, variant = the schedule's maximum
    agreement: dict             # maximum -> (keeps the class, after BN re-estimation, class-unit sparsity)
    per_method: dict            # method -> chosen maximum
    overall: float              # the single maximum best over all methods (s*)


def calibrate_schedule(model, x, mask, target, methods: dict, grid, schedule: ev.Schedules, **common) -> Calibration:
    """Traces of the calibration images ``x`` at every linear maximum of ``grid``; the maxima that maximise the
    mean AUC per method and over methods (:func:`evaluate.calibrate`)."""
    dense = ev.dense_rows(model, x, mask, target, methods, steps=common["steps"])
    rows, agreement = [], {}
    for s in grid:
        r, traces = ev.trace_rows(model, x, mask, target, methods, variant=s, sparsity=schedule(s), keep_traces=True,
                                  **common)
        rows += r
        agreement[s] = (float(np.mean([t.report.agrees_on_input for t in traces])),
                        float(np.mean([t.report.agrees_after_bn for t in traces])),
                        float(np.mean([fa.class_unit_sparsity(t.model, target) for t in traces])))
    per_method, overall = ev.calibrate(rows)
    return Calibration(dense, rows, agreement, per_method, overall)


@dataclass
class Evaluation:
    rows: list                  # dense rows, then one variant of VARIANTS per row
    kept: list                  # the traces at s* (linear schedule), one per evaluation image
    sparse_fc: object           # facets.sparse_head's result
    linear_star: dict           # layer -> sparsity, linear up to s*
    constant: dict              # layer -> sparsity, the same mean budget in every pruned layer
    s_bar: float                # that budget
    pruned: list                # the layers the linear schedule prunes


def evaluate_schedules(model, task, x, mask, target, methods: dict, dense: list, calibration: Calibration,
                       schedule: ev.Schedules, fixed: float, **common) -> Evaluation:
    """Traces of the evaluation images ``x`` under each method's calibrated maximum ("spade"), the fixed schedule,
    the linear schedule at s* and the constant schedule of the same mean budget; the Sparse-FC head refitted on
    ``task``'s training set. One set of traces per distinct schedule; each set's maps only for the variants that
    need them. ``dense``: the dense rows of ``x`` (computed once, shared)."""
    per_method, overall = calibration.per_method, calibration.overall
    linear_star = schedule(overall)
    pruned = [n for n in schedule.names if linear_star[n] > 0]
    s_bar = float(np.mean([linear_star[n] for n in pruned]))
    constant = {n: (s_bar if n in pruned else 0.0) for n in schedule.names}
    plans = {s: {m for m in methods if per_method[m] == s} | (set(methods) if s in (overall, fixed) else set())
             for s in sorted(set(per_method.values()) | {overall, fixed})}
    rows, kept = list(dense), []
    for s, ms in plans.items():
        r, tr = ev.trace_rows(model, x, mask, target, {m: methods[m] for m in methods if m in ms}, variant=s,
                              sparsity=schedule(s), keep_traces=(s == overall), **common)
        kept = tr or kept
        rows += [{**row, "variant": "spade"} for row in r if per_method[row["method"]] == s]
        rows += [{**row, "variant": "fixed"} for row in r if s == fixed]
        rows += [{**row, "variant": "linear s*"} for row in r if s == overall]
    rows += ev.trace_rows(model, x, mask, target, methods, variant="constant", sparsity=constant, **common)[0]
    sfc = fa.sparse_head(model, task.train.x, task.train.y, task.test.x, task.test.y, target=target)
    device = common.get("device", "cpu")
    rows += [{**row, "variant": "sparse fc"}
             for row in ev.dense_rows(sfc.model.to(device), x, mask, target, methods, steps=common["steps"])]
    return Evaluation(rows, kept, sfc, linear_star, constant, s_bar, pruned)


@dataclass
class Replicate:
    """One network of the pooled SPADE claims (the first, or one replicate() trained), with what its claims and probes
    need."""
    seed: int
    clean_accuracy: float
    premise: dict               # SPADE-6's statistics on this network
    rows: list                  # Evaluation.rows
    agrees_after_bn: np.ndarray  # per evaluation image, the trace at s* keeps the dense class (BN re-estimated)
    overall: float
    unit_sparsity: float        # the class unit's sparsity in the traces at s*
    oracle: dict                # "gain" (mean AUC, oracle head − dense) and its "high" end
    undetermined: list          # the layers its views do not determine (left dense), in execution order


def facet_premise(model, task, target: int, device) -> tuple[dict, torch.Tensor]:
    """SPADE-6's statistics on ``task``'s network, and the trigger-facet channels of its class unit (defined on the
    calibration images, measured on the evaluation ones)."""
    groups = {"clean": task.clean_x, "triggered": task.eval_x, "other": task.other_x}
    with torch.no_grad():
        prob = {k: float(model(v.to(device)).softmax(1)[:, target].mean()) for k, v in groups.items()}
    trigger_facet = fa.facet_channels(model, task.calib_x.to(device), task.clean_x, target)
    object_share = fa.facet_share(model, task.eval_x.to(device), target, ~trigger_facet)
    stats = {"P(T) on clean class-T images": prob["clean"], "P(T) on triggered images": prob["triggered"],
             "P(T) on clean images of other classes": prob["other"],
             "smallest flip rate of a design": min(task.flip_rate[d] for d in task.info["eval_designs"]),
             "object-facet share": float(object_share.mean())}
    return stats, trigger_facet


def replicate(task_options: dict, *, seed: int, methods: dict, grid, fixed: float, device, common: dict,
              bootstrap_seed: int = 0) -> Replicate:
    """Train the trojaned network of ``task_options`` (:func:`evaluate.trojan_task`'s arguments but ``seed`` and
    ``device``) at ``seed`` and take it through the notebook's steps:
    layer plan (views of two calibration images), calibration over ``grid``, the evaluation schedules, the oracle
    head's gain and SPADE-6's statistics. ``common``: the options of every batch of traces (its ``seed`` and
    ``n_views`` give the views, as on the first network)."""
    task = ev.trojan_task(seed=seed, device=device, **task_options)
    model, target = task.model.to(device), task.target_class
    ex, emask = task.eval_x.to(device), task.eval_mask.to(device)
    premise, trigger_facet = facet_premise(model, task, target, device)
    _, schedule = layer_plan(model, task.calib_x.to(device), n_views=common["n_views"], seed=common["seed"],
                             device=device)
    dense = ev.dense_rows(model, ex, emask, target, methods, steps=common["steps"])
    oracle = fa.oracle_head(model, target, trigger_facet).to(device)
    oracle_rows = [{**r, "variant": "oracle"} for r in ev.dense_rows(oracle, ex, emask, target, methods,
                                                                     steps=common["steps"])]
    gain = ev.Scores(dense + oracle_rows, seed=bootstrap_seed).interval("oracle")
    calibration = calibrate_schedule(model, task.calib_x.to(device), task.calib_mask.to(device), target, methods,
                                     grid, schedule, **common)
    evaluation = evaluate_schedules(model, task, ex, emask, target, methods, dense, calibration, schedule, fixed,
                                    **common)
    kept = evaluation.kept
    return Replicate(seed, task.clean_accuracy, premise, evaluation.rows,
                     np.array([float(t.report.agrees_after_bn) for t in kept]), calibration.overall,
                     float(np.mean([fa.class_unit_sparsity(t.model, target) for t in kept])),
                     {"gain": gain.mean, "high": gain.high}, [n for n in schedule.names if n in schedule.dense])


class Replicates:
    """:func:`replicate` at each of ``seeds`` (``options``: its keyword arguments), started when constructed.

    With ``workers`` > 1 on the CPU the networks are built side by side in that many processes of one thread each
    (:func:`xailab.utils.process_pool`; small networks gain little from a second thread), without progress bars,
    while the caller goes on; :meth:`results` waits for them. Otherwise nothing runs until :meth:`results` builds
    them one after another in this process. The same networks either way: only the thread count's rounding
    differs."""

    def __init__(self, task_options: dict, seeds, *, workers: int = 1, **options):
        self.seeds = [int(s) for s in seeds]
        workers = int(check_positive("workers", workers, integer=True))
        self.task_options, self.options = task_options, options
        self.processes = min(workers, len(self.seeds))
        self._pool, self._futures = None, []
        if self.processes > 1 and resolve_device(options.get("device", "cpu")).type == "cpu":
            # no progress bars from other processes: a notebook kernel cannot show them (it warns per update)
            quiet = {**options, "common": {**options.get("common", {}), "progress": False}}
            self._pool = process_pool(self.processes)
            self._futures = [self._pool.submit(replicate, {**task_options, "progress": False}, seed=s, **quiet)
                             for s in self.seeds]
        else:
            self.processes = 0

    @property
    def parallel(self) -> bool:
        """Whether the networks are being built in other processes."""
        return self._pool is not None

    def results(self) -> list[Replicate]:
        """The replicates in the order of ``seeds`` (waiting for the pool, or building them here)."""
        if self._pool is None:
            return [replicate(self.task_options, seed=s, **self.options) for s in self.seeds]
        try:
            return [f.result() for f in self._futures]
        finally:
            self._pool.shutdown(cancel_futures=True)
