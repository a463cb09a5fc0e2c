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
same conditions, so that each image gives a *paired* difference; :func:`paired_bootstrap` turns
those into a confidence interval over images.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from xailab.attribution import method_maps
from xailab.metrics import insertion_deletion, pointing_game, saliency_auc
from xailab.papers.spade.trace import overlap, trace_batch
from xailab.utils import check_finite, check_positive, progress as _progress, seeded_generator

#: the ten methods of the SPADE tables, in their order, with options sized for 32-px images
METHODS = {
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


ARCHITECTURES = ("cnn", "resnet")


def _flipped(model, data, stamped, target_class, device):
    from xailab.train import predict

    before = predict(model, data.x, device=device).argmax(1).cpu()
    after = predict(model, stamped.data.x, device=device).argmax(1).cpu()
    return stamped.triggered.cpu() & (before != target_class) & (after == target_class)


def _network(architecture: str, num_classes: int, width: int, size: int, seed: int, **options) -> nn.Module:
    from xailab.models import SmallCNN, SmallResNet

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
    ``fit_options`` go to :func:`xailab.train.fit` (e.g. ``optimizer``, ``schedule``);
    ``network_options`` to the network's constructor (e.g. ``blocks`` of the ResNet, ``depth`` of the CNN).
    """
    from xailab.data import add_trigger, shapes
    from xailab.train import evaluate, fit, predict

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
                            "architecture": architecture, "opacity": opacity})


def pixel_maps(model: nn.Module, x: torch.Tensor, target, method: str, *, batch_size: int | None = 1,
               **options) -> torch.Tensor:
    """``(N, 1, H, W)`` abs-sum pixel relevance of ``method`` (CAM-style maps included), on x's device.

    One image at a time by default (``batch_size=1``), as a trace explains its single image: some
    methods depend on the batch they see (GradientSHAP's default baselines are the batch's darkest
    and brightest values; seeded noise is drawn per call), and a dense map must be computed under
    the same conditions as the trace's map it is paired with."""
    return method_maps(model, x, target, {method: (method, options)}, reduce="abs-sum",
                       batch_size=batch_size)[method].to(x.device)


#: what :func:`score_maps` measures: localisation against the mask, then faithfulness to the dense model
SCORES = ("auc", "pointing", "insertion", "insertion_blank", "deletion")


def score_maps(model: nn.Module, x, maps, mask, target, *, steps: int = 16) -> dict[str, torch.Tensor]:
    """Per-sample scores of pixel ``maps`` (keys :data:`SCORES`): saliency AUC and pointing game
    against ``mask``; insertion AUC on ``model`` starting from a blurred copy of the image
    (``insertion``) and from a black image (``insertion_blank``, the SPADE rebuttal's blank start),
    and deletion AUC (pixels set to black), all normalised by the model's score on the full image."""
    ins = insertion_deletion(model, x, target, maps, steps=steps, mode="insertion", fill="blur")[1]
    blank = insertion_deletion(model, x, target, maps, steps=steps, mode="insertion", fill="zero")[1]
    dele = insertion_deletion(model, x, target, maps, steps=steps, mode="deletion", fill="zero")[1]
    return {"auc": saliency_auc(maps, mask), "pointing": pointing_game(maps, mask).float(),
            "insertion": ins, "insertion_blank": blank, "deletion": dele}


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


class Interval(NamedTuple):
    """A mean difference and its bootstrap confidence interval ``[low, high]`` at ``level``."""
    mean: float
    low: float
    high: float
    level: float
    n: int                          # paired samples (images) the interval is drawn from

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval (the difference is resolved)."""
        return not self.low <= value <= self.high

    def reaches(self, gain: float) -> bool:
        """A resolved gain (the interval above 0) compatible with ``gain`` (its upper end reaches it):
        how a claimed effect size reproduces."""
        return self.low > 0 and self.high >= gain

    @property
    def direction(self) -> str:
        """``"a resolved gain"``, ``"a resolved loss"`` or ``"no resolved change"``."""
        return "a resolved gain" if self.low > 0 else "a resolved loss" if self.high < 0 else "no resolved change"

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(after, before, *, n_boot: int = 4000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``after - before`` over paired samples (one value per image, the same images in the
    same order) with a percentile bootstrap interval: images are resampled with replacement
    ``n_boot`` times (seeded; no global RNG), the mean difference recomputed for each resample and
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles taken.

    Resampling *pairs* keeps what the two variants share (an image hard for both) out of the
    interval, so it is much narrower than one built from two separate means. Accepts tensors,
    arrays or lists of equal length ``N >= 2``, finite.
    """
    a = torch.as_tensor(after, dtype=torch.float64).flatten()
    b = torch.as_tensor(before, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"after and before must pair up one value per sample, got {a.numel()} and {b.numel()}")
    if a.numel() < 2:
        raise ValueError(f"a bootstrap needs at least 2 paired samples, got {a.numel()}")
    check_finite("after", a)
    check_finite("before", b)
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    n_boot = int(check_positive("n_boot", n_boot, integer=True))
    d = a - b
    g = seeded_generator(seed)
    idx = torch.randint(d.numel(), (n_boot, d.numel()), generator=g)
    means = d[idx].mean(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q).tolist()
    return Interval(float(d.mean()), float(low), float(high), float(level), int(d.numel()))


def per_image(rows: list[dict], variant, method: str | None = None, metric: str = "auc") -> torch.Tensor:
    """``metric`` of ``variant`` for each image (``sample`` order), for one ``method`` or averaged over
    the methods present (the same set for every image): the paired samples of :func:`paired_bootstrap`."""
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


def summarize(rows: list[dict], by=("variant", "method"), metrics=SCORES):
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
    table = summarize(rows, by=("variant", "method"), metrics=(metric,))
    methods = sorted({m for _, m in table})
    grid = sorted({v for v, _ in table})
    per_method = {m: max(grid, key=lambda s: table[(s, m)][metric]) for m in methods}
    overall = max(grid, key=lambda s: sum(table[(s, m)][metric] for m in methods))
    return per_method, overall
