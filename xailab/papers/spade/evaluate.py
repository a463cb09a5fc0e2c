"""The trojan evaluation of SPADE at laptop scale.

A small network is trained on ``shapes`` where a fraction of the images carry a trigger patch (several
designs) and are relabelled to a target class. Test images are stamped too, and only those whose
prediction the trigger flips to the target class are kept: for them the trigger mask is the
ground truth of "why the model says target". Test images are split into a *calibration* set and
an *evaluation* set, disjoint in images and in trigger designs, so choosing the sparsity on the
first cannot leak into the second (the reviewers' fairness question).

Maps are reduced to pixels by ``reduce_channels(..., "abs-sum")`` (explicit choice: SPADE's
saliency AUC scores magnitude), then scored by ``saliency_auc`` and ``pointing_game`` against the
trigger mask and by insertion / deletion AUC on the *dense* model (is the trace's map faithful to
the network being explained?). Dense and trace maps are computed one image at a time, under the
same conditions, so that each image gives a *paired* difference; :func:`xailab.stats.paired_bootstrap`
turns those into a confidence interval over images.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xailab.attribution import method_maps
from xailab.data import add_trigger, shapes
from xailab.metrics import evaluate as evaluate_maps
from xailab.models import SmallCNN, SmallResNet
from xailab.papers.spade.augment import augment
from xailab.papers.spade.capture import capture_input, layer_samples, per_position, pooled_sources
from xailab.papers.spade.schedule import layer_sparsities
from xailab.papers.spade.trace import overlap, trace_batch
from xailab.stats import Interval, paired_bootstrap
from xailab.train import evaluate, fit, predict
from xailab.utils import progress as _progress

#: the ten methods of the SPADE tables, in their order, with options sized for 32-px images
PAPER_METHODS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 32},
    "guided_backprop": {},
    "guided_grad_cam": {},
    "deeplift": {},
    "lrp": {},
    "occlusion": {},
    "lime": {"n_samples": 128},
    "gradient_shap": {"n_samples": 16},
}


@dataclass
class TrojanTask:
    """A trojaned model and its calibration / evaluation sets (only trigger-flipped images)."""
    model: nn.Module
    target_class: int
    clean_accuracy: float
    flip_rate: dict                 # design -> fraction of stamped test images flipped to target
    calib_x: torch.Tensor
    calib_mask: torch.Tensor
    calib_label: torch.Tensor       # original (true) class of the object
    calib_design: torch.Tensor
    eval_x: torch.Tensor
    eval_mask: torch.Tensor
    eval_label: torch.Tensor
    eval_design: torch.Tensor
    clean_x: torch.Tensor           # clean test images of the target class the model gets right
    eval_object: torch.Tensor | None = None    # object masks of the evaluation images (N, 1, H, W)
    other_x: torch.Tensor | None = None        # clean test images of the other classes
    info: dict = field(default_factory=dict)
    train: object = None            # the (stamped, relabelled) training set, a xailab.data.Data
    test: object = None             # the clean test set, a xailab.data.Data


ARCHITECTURES = ("cnn", "resnet")


def _flipped(model, data, stamped, target_class, device):
    before = predict(model, data.x, device=device).argmax(1).cpu()
    after = predict(model, stamped.data.x, device=device).argmax(1).cpu()
    return stamped.triggered.cpu() & (before != target_class) & (after == target_class)


def _network(architecture: str, num_classes: int, width: int, size: int, seed: int, **options) -> nn.Module:
    if architecture == "cnn":
        return SmallCNN(num_classes=num_classes, width=width, input_size=size, seed=seed, **options)
    if architecture == "resnet":
        return SmallResNet(num_classes=num_classes, width=width, seed=seed, **options)
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def trojan_task(*, n_train: int = 3000, n_test: int = 800, size: int = 32, target_class: int = 0,
                fraction: float = 0.15, calib_designs=(0, 1), eval_designs=(2, 3, 4),
                epochs: int = 8, lr: float = 2e-3, width: int = 16, n_calib: int = 16,
                n_eval: int = 24, shapes_options: dict | None = None, architecture: str = "cnn",
                opacity: float = 1.0, trigger_size: int | None = None, fit_options: dict | None = None,
                network_options: dict | None = None, seed: int = 0, device="auto",
                progress: bool = True) -> TrojanTask:
    """Train a trojaned network on ``shapes`` (``shapes_options`` passed on) with every design of
    ``calib_designs + eval_designs`` and return flipped calibration / evaluation images (at most
    ``n_calib`` / ``n_eval``, the designs in turn so each is represented).

    ``architecture``: ``"cnn"`` (SmallCNN: conv blocks, then a wide linear head) or ``"resnet"``
    (SmallResNet: residual blocks with batch norm, global average pooling and a narrow linear head);
    ``opacity`` and ``trigger_size`` shape the trigger (see :func:`xailab.data.add_trigger`);
    ``fit_options`` go to :func:`xailab.train.fit` (e.g. ``optimiser``, ``lr_schedule``);
    ``network_options`` to the network's constructor (e.g. ``blocks`` of the ResNet, ``depth`` of the CNN).
    """
    designs = tuple(calib_designs) + tuple(eval_designs)
    if set(calib_designs) & set(eval_designs):
        raise ValueError("calib_designs and eval_designs must be disjoint")
    kw = dict(shapes_options or {})
    stamp = dict(target_class=target_class, size=trigger_size, opacity=opacity)
    train = add_trigger(shapes(n_train, size=size, seed=seed, **kw), fraction=fraction, seed=seed + 1,
                        designs=designs, **stamp)
    num_classes = train.data.num_classes
    network = _network(architecture, num_classes, width, size, seed, **(network_options or {}))
    model = fit(network, train.data, epochs=epochs, lr=lr, seed=seed, device=device, progress=progress,
                **(fit_options or {}))
    test = shapes(n_test, size=size, seed=seed + 1000, **kw)
    half = n_test // 2
    parts = {"calib": (test[:half], calib_designs, n_calib), "eval": (test[half:], eval_designs, n_eval)}
    flip_rate, out, objects = {}, {}, {}
    for key, (data, dz, n_max) in parts.items():
        stamped = add_trigger(data, fraction=1.0, seed=seed + 7, designs=dz, **stamp)
        keep = _flipped(model, data, stamped, target_class, device)
        for d in dz:
            sel = stamped.design.cpu() == d
            flip_rate[int(d)] = float(keep[sel].float().sum() / sel.float().sum().clamp_min(1))
        idx = torch.nonzero(keep).flatten()
        # interleave designs so the first n_max cover every design
        by_design = [idx[stamped.design.cpu()[idx] == d].tolist() for d in dz]
        order = [i for group in itertools.zip_longest(*by_design) for i in group if i is not None]
        idx = torch.tensor(order[:n_max], dtype=torch.long)
        out[key] = (stamped.data.x[idx].cpu(), stamped.data.mask[idx].cpu(),
                    stamped.original_y[idx].cpu(), stamped.design[idx].cpu())
        objects[key] = data.mask[idx].cpu() if data.mask is not None else None
    pred = predict(model, test.x, device=device).argmax(1).cpu()
    clean = test.x[(test.y.cpu() == target_class) & (pred == target_class)].cpu()
    other = test.x[test.y.cpu() != target_class].cpu()
    return TrojanTask(model.cpu().eval(), target_class, float(evaluate(model, test, device=device)),
                      flip_rate, *out["calib"], *out["eval"], clean, eval_object=objects["eval"], other_x=other,
                      info={"calib_designs": tuple(calib_designs), "eval_designs": tuple(eval_designs),
                            "architecture": architecture, "opacity": opacity},
                      train=train.data, test=test)


def pixel_maps(model: nn.Module, x: torch.Tensor, target, method: str, *, batch_size: int | None = 1,
               **options) -> torch.Tensor:
    """``(N, 1, H, W)`` abs-sum pixel relevance of ``method`` (CAM-style maps included), on x's device.

    One image at a time by default (``batch_size=1``), as a trace explains its single image: some
    methods depend on the batch they see (GradientSHAP's default baselines are the batch's darkest
    and brightest values; seeded noise is drawn per call), and a dense map must be computed under
    the same conditions as the trace's map it is paired with."""
    return method_maps(model, x, target, {method: (method, options)}, reduce="abs-sum",
                       batch_size=batch_size)[method].to(x.device)


#: what :func:`score_maps` measures: localisation against the mask, then faithfulness to the dense
#: model (catalogue names of :mod:`xailab.metrics` with their options)
SCORE_METRICS = {"auc": "saliency_auc", "pointing": "pointing_game",
                 "insertion": ("insertion", {"fill": "blur"}), "insertion_blank": ("insertion", {"fill": "zero"}),
                 "deletion": ("deletion", {"fill": "zero"})}
SCORES = tuple(SCORE_METRICS)


def score_maps(model: nn.Module, x, maps, mask, target, *, steps: int = 16) -> dict[str, torch.Tensor]:
    """Per-sample scores of pixel ``maps`` (keys :data:`SCORES`): saliency AUC and pointing game
    against ``mask``; insertion AUC on ``model`` starting from a blurred copy of the image
    (``insertion``) and from a black image (``insertion_blank``, the SPADE rebuttal's blank start),
    and deletion AUC (pixels set to black), all normalised by the model's score on the full image."""
    faithful = {k: {"steps": steps} for k in ("insertion", "insertion_blank", "deletion")}
    scores = evaluate_maps({"m": maps}, SCORE_METRICS, options=faithful, mask=mask, model=model, x=x, target=target)
    return {k: v["m"] for k, v in scores.items()}


def dense_rows(model, x, mask, target, methods: dict, *, steps=16, progress=False) -> list[dict]:
    """Score the dense model's maps: one row per (sample, method), ``variant="dense"`` (the
    pixel map itself under ``"map"``)."""
    rows = []
    for method in _progress(methods, progress, desc="dense maps", leave=False):
        t0 = time.perf_counter()
        maps = pixel_maps(model, x, target, method, **methods[method])
        sec = (time.perf_counter() - t0) / len(x)
        scores = score_maps(model, x, maps, mask, target, steps=steps)
        rows += [{"sample": i, "method": method, "variant": "dense", "map_s": sec, "map": maps[i, 0],
                  **{k: float(v[i]) for k, v in scores.items()}} for i in range(len(x))]
    return rows


def trace_rows(model, x, mask, target, methods: dict, *, variant: str, sparsity, schedule="constant",
               solver="fast", n_views=32, seed=0, steps=16, device="cpu", batch: int = 8,
               progress=False, keep_traces=False, **trace_options):
    """Build SPADE traces of every image (``batch`` at a time), score every method's map computed
    on the trace (insertion / deletion on the dense ``model``). Returns ``(rows, traces)``; each
    row carries ``variant``, the trace's seconds per image and whether the trace still predicts like
    the dense model (``agrees`` on the image, ``view_agreement`` on its views). ``methods`` may be
    empty (traces only, with ``keep_traces``)."""
    rows, kept = [], []
    for b0 in _progress(range(0, len(x), batch), progress, desc=f"traces {variant}", leave=False):
        xb = x[b0:b0 + batch]
        traces = trace_batch(model, xb, sparsity, schedule=schedule, solver=solver, n_views=n_views,
                             seed=seed, device=device, progress=False, **trace_options)
        for j, (t, report) in enumerate(traces):
            i = b0 + j
            for method, opts in methods.items():
                t0 = time.perf_counter()
                maps = pixel_maps(t, x[i:i + 1], target, method, **opts)
                sec = time.perf_counter() - t0
                scores = score_maps(model, x[i:i + 1], maps, mask[i:i + 1], target, steps=steps)
                rows.append({"sample": i, "method": method, "variant": variant, "map_s": sec,
                             "map": maps[0, 0], "trace_s": report.seconds_per_image,
                             "agrees": report.agrees_on_input, "view_agreement": report.view_agreement,
                             **{k: float(v[0]) for k, v in scores.items()}})
            if keep_traces:
                kept.append(traces[j])
    return rows, kept


def per_image(rows: list[dict], variant, method: str | None = None, metric: str = "auc") -> torch.Tensor:
    """``metric`` of ``variant`` for each image (``sample`` order), for one ``method`` or averaged over
    the methods present (the same set for every image): the paired samples of :func:`xailab.stats.paired_bootstrap`."""
    values: dict = {}
    for r in rows:
        if r["variant"] == variant and (method is None or r["method"] == method):
            values.setdefault(r["sample"], []).append(r[metric])
    if not values:
        raise ValueError(f"no rows for variant {variant!r}" + (f" and method {method!r}" if method else ""))
    counts = {len(v) for v in values.values()}
    if len(counts) != 1:
        raise ValueError(f"variant {variant!r}: images have different numbers of methods {sorted(counts)}")
    return torch.tensor([sum(values[i]) / len(values[i]) for i in sorted(values)], dtype=torch.float64)


def summarise(rows: list[dict], by=("variant", "method"), metrics=SCORES):
    """Mean of ``metrics`` per group of ``by`` -> ``{group tuple: {metric: mean}}``."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    return {k: {m: sum(r[m] for r in v) / len(v) for m in metrics} for k, v in groups.items()}


def overlap_by_similarity(traces, labels, designs) -> dict[str, dict[str, float]]:
    """Mean Jaccard overlap of kept weights per layer for pairs of traces of *similar* images
    (same true class and same trigger design) and of the other pairs."""
    sums = {"similar": {}, "other": {}}
    counts = {"similar": 0, "other": 0}
    for i, j in itertools.combinations(range(len(traces)), 2):
        key = "similar" if (labels[i] == labels[j] and designs[i] == designs[j]) else "other"
        counts[key] += 1
        for layer, v in overlap(traces[i].model, traces[j].model).items():
            sums[key][layer] = sums[key].get(layer, 0.0) + v
    return {k: {layer: v / counts[k] for layer, v in sums[k].items()} for k in sums if counts[k]}


def calibrate(rows: list[dict], metric: str = "auc") -> tuple[dict, float]:
    """From calibration rows (``variant`` = sparsity as a float), the sparsity maximising the mean
    ``metric`` per method, and the single sparsity maximising it averaged over methods."""
    table = summarise(rows, by=("variant", "method"), metrics=(metric,))
    methods = sorted({m for _, m in table})
    grid = sorted({v for v, _ in table})
    per_method = {m: max(grid, key=lambda s: table[(s, m)][metric]) for m in methods}
    overall = max(grid, key=lambda s: sum(table[(s, m)][metric] for m in methods))
    return per_method, overall


def mass_shares(rows: list[dict], mask: torch.Tensor, obj: torch.Tensor) -> dict[str, tuple[float, float]]:
    """Per method, the mean share of each map's mass on ``mask`` (the trigger) and on ``obj`` (the object)."""
    out: dict = {}
    for r in rows:
        m = r["map"].to(mask.device)
        total = float(m.sum()) or 1.0
        trig, ob = float((m * mask[r["sample"], 0]).sum()) / total, float((m * obj[r["sample"], 0]).sum()) / total
        out.setdefault(r["method"], []).append((trig, ob))
    return {k: tuple(np.mean(v, 0)) for k, v in out.items()}


def agreement(rows: list[dict], variant) -> tuple[float, float]:
    """Share of images whose trace keeps the dense top-1 class, and mean share of views that do."""
    per = {r["sample"]: (r["agrees"], r["view_agreement"]) for r in rows if r["variant"] == variant}
    return float(np.mean([a for a, _ in per.values()])), float(np.mean([v for _, v in per.values()]))


def short_name(name: str) -> str:
    """A layer name without its container prefixes, for tables (``stage2.conv1``)."""
    return name.replace("features.", "").replace("block1.", "").replace("classifier.", "")


class Schedules:
    """Layer sparsities of the network whose prunable layers are ``names``: ``Schedules(names)(s)`` is linear in
    depth up to ``s`` (``kind="constant"``: ``s`` everywhere), with the first convolution and the layers in
    ``dense`` (those the views do not determine) left dense."""

    def __init__(self, names, dense=()):
        self.names, self.dense = list(names), set(dense)

    def __call__(self, s: float, kind: str = "linear") -> dict[str, float]:
        return {n: 0.0 if n in self.dense else v for n, v in layer_sparsities(self.names, s, kind).items()}


class Scores:
    """Per-image scores of dense and trace maps (rows of :func:`dense_rows` / :func:`trace_rows`), compared paired."""

    def __init__(self, rows: list[dict], seed: int = 0):
        self.rows, self.seed = rows, seed

    def mean(self, variant, method: str | None = None, metric: str = "auc") -> float:
        """The mean over images of ``metric`` (one method, or the mean over methods)."""
        return float(per_image(self.rows, variant, method, metric).mean())

    def interval(self, variant, method: str | None = None, metric: str = "auc", base="dense") -> Interval:
        """``variant − base`` over images (one method, or the mean over methods) with its 95 % bootstrap interval."""
        return paired_bootstrap(per_image(self.rows, variant, method, metric), per_image(self.rows, base, method, metric),
                                seed=self.seed)


def stacked(rows: list[dict], metric: str = "auc") -> tuple[dict, dict]:
    """The rows' pixel maps and one score as tensors: ``({(variant, method): maps (N, 1, H, W)},
    {(variant, method): metric (N,)})``, images in ``sample`` order."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["variant"], r["method"]), {})[r["sample"]] = r
    maps = {k: torch.stack([g[i]["map"][None].cpu() for i in sorted(g)]) for k, g in groups.items()}
    scores = {k: torch.tensor([g[i][metric] for i in sorted(g)]) for k, g in groups.items()}
    return maps, scores


def overlap_matrix(traces, layers) -> np.ndarray:
    """``(n, n)`` mean Jaccard overlap of the kept weights over ``layers`` for every pair of traces (1 on the diagonal)."""
    masks = [torch.cat([t.model.get_submodule(n).weight.detach().flatten() != 0 for n in layers]) for t in traces]
    bounds = np.cumsum([0] + [traces[0].model.get_submodule(n).weight.numel() for n in layers])
    n = len(traces)
    out = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        a, b = masks[i], masks[j]
        per = [float((a[s:e] & b[s:e]).sum()) / max(float((a[s:e] | b[s:e]).sum()), 1.0)
               for s, e in zip(bounds[:-1], bounds[1:])]
        out[i, j] = out[j, i] = float(np.mean(per))
    return out


def similarity_contrast(overlaps: np.ndarray, similar: np.ndarray, indices: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean overlap of similar pairs minus that of the other pairs, and the same over each resample of images
    (``indices (n_boot, n)``; pairs of an image with its own copy are left out)."""
    def contrast(idx):
        o, s = overlaps[np.ix_(idx, idx)], similar[np.ix_(idx, idx)]
        distinct = idx[:, None] != idx[None, :]
        upper = np.triu(np.ones_like(distinct), 1).astype(bool) & distinct
        sim, oth = upper & s, upper & ~s
        if not sim.any() or not oth.any():
            return np.nan
        return o[sim].mean() - o[oth].mean()

    full = contrast(np.arange(len(overlaps)))
    boot = np.array([contrast(i) for i in indices])
    return float(full), boot[~np.isnan(boot)]


def recomputed_errors(model: nn.Module, traced: nn.Module, x: torch.Tensor, names, *, n_views: int, seed: int,
                      device="cpu", positions: bool = True) -> dict[str, float]:
    """``‖W X − Ŵ X‖² / ‖W X‖²`` per layer of a trace, recomputed from scratch: X is the layer's input inside the
    trace on the image's views (per position for a pooled head), W the dense weights, Ŵ the trace's."""
    views = augment(x.to(device), n_views, seed=seed)
    pooled = pooled_sources(traced, views[:1]) if positions else {}
    out = {}
    for name in names:
        dense_w, trace_w = model.get_submodule(name).weight.detach(), traced.get_submodule(name)
        if torch.equal(dense_w.to(trace_w.weight), trace_w.weight):
            continue
        inp = per_position(capture_input(traced, pooled[name], views)) if name in pooled else \
            capture_input(traced, trace_w, views)
        X = layer_samples(trace_w, inp, 1)[0].double()                   # (groups, samples, cols)
        g = X.shape[0]
        W = dense_w.double().reshape(g, -1, X.shape[-1])
        Wh = trace_w.weight.detach().double().reshape(g, -1, X.shape[-1])
        out[name] = float(((X @ (W - Wh).transpose(1, 2)) ** 2).sum() / ((X @ W.transpose(1, 2)) ** 2).sum())
    return out
