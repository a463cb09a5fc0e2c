"""SPADE traces: a copy of the network pruned for one input, and explanations computed on it.

A trace is built layer by layer in execution order, as SparseGPT prunes a network: the inputs
captured at layer ``l`` come from the copy whose earlier layers are *already pruned*, and the
layer is asked to reproduce its own dense weights' outputs on those inputs, ``min ‖W X − Ŵ X‖²``.
(The alternative — fitting the dense model's outputs from pruned inputs — is asymmetric and needs
two forward passes per layer; the sequential choice lets each layer correct the drift of the
layers before it as far as its own weights allow.)  Biases are kept; layers at sparsity 0 are
not touched at all, so a trace at sparsity 0 is the dense model.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from xailab.attribution import attribute
from xailab.hooks import model_device
from xailab.papers.spade.augment import as_single_image, augment
from xailab.papers.spade.capture import (PRUNABLE, capture_input, check_supported, execution_order,
                                         layer_hessian, layer_samples, per_position, pooled_sources, swap_in,
                                         weight_matrix)
from xailab.papers.spade.schedule import layer_sparsities
from xailab.papers.spade.solvers import SOLVERS, prune, reconstruction_error
from xailab.utils import check_finite, check_positive, progress as _progress, resolve_device


@dataclass
class LayerReport:
    """What happened to one layer of one trace."""
    name: str
    shape: tuple
    solver: str            # solver that pruned this layer ("-" when left dense)
    scheduled: float       # sparsity the schedule asked for
    achieved: float        # fraction of exactly-zero weights after pruning
    rel_error: float       # ‖WX − ŴX‖² / ‖WX‖² on this layer's captured inputs (0 if untouched)
    capture_s: float       # seconds to capture inputs and build H (shared by a batch of images)
    solve_s: float         # seconds in the solver (shared by a batch of images)
    samples: int = 0       # samples the layer was fitted on per image (views × positions; 0 if untouched)


@dataclass
class TraceReport:
    """Per-layer record of a trace (returned next to the pruned model in a :class:`Trace`), and
    whether the trace still *is* the model it explains: ``agrees_on_input`` (same top-1 class as the
    dense model on the traced image), ``view_agreement`` (share of the augmented views on which the
    two agree) and ``agrees_after_bn`` (the same check after re-estimating the trace's batch-norm
    statistics on its views, the SPADE authors' sanity check; equal to ``agrees_on_input`` without
    batch norm)."""
    solver: str
    n_views: int
    seed: int
    n_images: int                          # images traced together (timings are shared)
    layers: list[LayerReport] = field(default_factory=list)
    agrees_on_input: bool = True
    view_agreement: float = 1.0
    agrees_after_bn: bool = True

    @property
    def capture_seconds(self) -> float:
        return sum(r.capture_s for r in self.layers)

    @property
    def solve_seconds(self) -> float:
        return sum(r.solve_s for r in self.layers)

    @property
    def seconds_per_image(self) -> float:
        return (self.capture_seconds + self.solve_seconds) / self.n_images

    def rows(self) -> list[dict]:
        """One dict per layer (for a pandas DataFrame or a printed table)."""
        return [asdict(r) for r in self.layers]


class Trace(NamedTuple):
    """A SPADE trace: the pruned copy of the network (eval mode) and what happened to each layer.
    Unpacks as ``model, report = trace(...)``."""
    model: nn.Module
    report: TraceReport


def trace_batch(model: nn.Module, xs: torch.Tensor, sparsity=0.7, *, schedule: str = "constant",
                solver: str = "fast", n_views: int = 64, seed: int = 0, device="auto",
                dtype: torch.dtype = torch.float64, damp: float = 0.01, blocksize: int = 32,
                dense_first: bool = True, obc_max_cols: int | None = 600, positions: bool = True,
                augment_options: dict | None = None, progress: bool = True) -> list[Trace]:
    """One SPADE trace per image of ``xs (N, C, H, W)``, built together in one pass per layer.

    Returns ``N`` :class:`Trace` s: pruned deep copies of ``model`` in eval mode on ``device``,
    each with its :class:`TraceReport`. ``model`` itself is never modified. Arguments as in
    :func:`trace`; every image gets the same ``n_views`` random transforms, so its trace equals
    the one :func:`trace` builds for it alone. With ``solver="obc"``, layers with more than
    ``obc_max_cols`` inputs per row (e.g. a 1024-input linear layer: ~10¹¹ flops exact) fall back
    to ``fast``; each layer's report names the solver used (``None``: OBC everywhere). With
    ``positions`` a linear layer fed by global average pooling is fitted on the per-position features
    (see :func:`~xailab.papers.spade.capture.pooled_sources`): its outputs are then reproduced at every
    position of every view, which implies them on the pooled input.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(xs, torch.Tensor) or xs.ndim != 4 or xs.shape[0] < 1:
        raise ValueError(f"xs must be a batch of images (N, C, H, W), got "
                         f"{getattr(xs, 'shape', type(xs).__name__)}")
    check_finite("xs", xs)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    n_views = int(check_positive("n_views", n_views, integer=True))
    if not any(isinstance(m, PRUNABLE) for m in model.modules()):
        raise ValueError("the model has no prunable layers (nn.Conv2d or nn.Linear) to trace")
    dev = resolve_device(device)
    n_img = xs.shape[0]
    work = copy.deepcopy(model).to(dev).eval()
    for p in work.parameters():
        p.requires_grad_(False)
    xs = xs.detach().float().to(dev)
    order = execution_order(work, xs[:1])
    names = [n for n, _ in order]
    for name, module in order:
        check_supported(name, module)
    targets = layer_sparsities(names, sparsity, schedule, dense_first=dense_first,
                               first_is_conv=isinstance(order[0][1], nn.Conv2d) if order else False)
    views = augment(xs, n_views, seed=seed, **(augment_options or {}))
    with torch.no_grad():
        dense_x, dense_views = work(xs).argmax(1), work(views).argmax(1)
    pooled = pooled_sources(work, xs[:1]) if positions else {}
    wrappers = swap_in(work, names, n_img)
    reports = [TraceReport(solver, n_views, int(seed), n_img) for _ in range(n_img)]
    options = {"shared": 1} if solver == "magnitude" else {"damp": damp, "shared": 1}
    if solver == "fast":
        options["blocksize"] = blocksize

    for name, module in _progress(order, progress, desc="SPADE trace", leave=False):
        wrapper, s = wrappers[name], targets[name]
        W = weight_matrix(module).to(dev)
        if s == 0.0:
            achieved = float((W == 0).float().mean())
            for rep in reports:
                rep.layers.append(LayerReport(name, tuple(module.weight.shape), "-", 0.0, achieved,
                                              0.0, 0.0, 0.0))
            continue
        t0 = time.perf_counter()
        inp = (per_position(capture_input(work, pooled[name], views)) if name in pooled
               else capture_input(work, wrapper, views))
        samples = _samples(module, inp, n_img)
        H = layer_hessian(module, inp, n_img, dtype)
        t1 = time.perf_counter()
        W = W.unsqueeze(0).expand(n_img, *W.shape).to(dtype)
        used = solver
        if solver == "obc" and obc_max_cols is not None and W.shape[-1] > obc_max_cols:
            used = "fast"
            options_used = {**options, "blocksize": blocksize}
        else:
            options_used = options
        W_hat = torch.cat([prune(W[b:b + 1], H[b:b + 1], s, used, **options_used)   # per image: bitwise
                           for b in range(n_img)])                                      # whatever the batch
        wrapper.set_matrix(W_hat)
        t2 = time.perf_counter()
        num = reconstruction_error(W, W_hat, H, relative=False).sum(-1)
        den = reconstruction_error(W, torch.zeros_like(W_hat), H, relative=False).sum(-1)
        rel = (num / den.clamp_min(torch.finfo(dtype).tiny)).tolist()
        zero = (W_hat == 0).flatten(1).float().mean(1).tolist()
        for b, rep in enumerate(reports):
            rep.layers.append(LayerReport(name, tuple(module.weight.shape), used, s, zero[b],
                                          rel[b], t1 - t0, t2 - t1, samples))

    with torch.no_grad():                               # the trace must still be the model it explains
        same_x = (work(xs).argmax(1) == dense_x).tolist()
        same_views = (work(views).argmax(1) == dense_views).view(n_img, n_views).float().mean(1).tolist()
    traces = []
    for b, (rep, a, v) in enumerate(zip(reports, same_x, same_views)):
        t = copy.deepcopy(model).to(dev).eval()
        for name in names:
            layer = t.get_submodule(name)
            layer.weight.data.copy_(wrappers[name].weight[b].to(layer.weight.dtype))
        rep.agrees_on_input, rep.view_agreement = bool(a), float(v)
        with torch.no_grad():
            own_views = views[b * n_views:(b + 1) * n_views]
            rep.agrees_after_bn = bool(reestimate_batchnorm(t, own_views)(xs[b:b + 1]).argmax(1) == dense_x[b])
        traces.append(Trace(t, rep))
    return traces


def reestimate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``model`` in eval mode whose batch-norm layers hold the mean and (unbiased) variance of their
    inputs over all of ``x``, computed in one forward pass (batch-wise running averages would weight batches, not
    samples, and miss the variance between batches); ``model`` is untouched.

    The SPADE authors re-estimate these statistics on a trace before checking that it still predicts like the
    dense network (and only for that check: maps are computed on the trace as pruned)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    out = copy.deepcopy(model)
    for m in out.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None                      # with one batch: exactly that batch's statistics
    out.train()
    with torch.no_grad():
        out(x)
    return out.eval()


def _samples(module: nn.Module, inp: torch.Tensor, n_images: int) -> int:
    """Samples per image a layer is fitted on (views × positions for a convolution or a per-position head)."""
    per = inp.shape[0] // n_images
    if isinstance(module, nn.Linear):
        return per * (inp.shape[1] if inp.ndim == 3 else 1)
    return per * layer_samples(module, inp[:1], 1).shape[-2]


def trace(model: nn.Module, x: torch.Tensor, sparsity=0.7, *, schedule: str = "constant",
          solver: str = "fast", n_views: int = 64, seed: int = 0, device="auto",
          progress: bool = True, **options) -> Trace:
    """A SPADE trace of ``model`` for the single image ``x`` ``(C, H, W)`` or ``(1, C, H, W)``.

    ``sparsity``: a fraction in [0, 1) (constant, or the maximum of ``schedule="linear"``) or a
    mapping ``layer name -> sparsity``; the first convolution stays dense unless
    ``dense_first=False`` (see :mod:`xailab.papers.spade.schedule`). ``solver``: ``"fast"`` (SparseGPT),
    ``"obc"`` (exact, slow on wide layers) or ``"magnitude"`` (baseline). ``n_views`` augmented
    views (seeded) are the data each layer is fitted on. Further options: ``dtype`` (solver
    precision, float64 default), ``damp`` (Hessian damping as a fraction of its mean diagonal,
    0.01), ``blocksize`` (fast solver), ``dense_first``, ``obc_max_cols``, ``augment_options``.

    Returns a :class:`Trace`: a pruned deep copy in eval mode on ``device`` and its report
    (per-layer target/achieved sparsity, relative reconstruction error, seconds); ``model`` is
    untouched.
    """
    x = as_single_image(x)
    return trace_batch(model, x, sparsity, schedule=schedule, solver=solver, n_views=n_views,
                       seed=seed, device=device, progress=progress, **options)[0]


def explain(model: nn.Module, x: torch.Tensor, target, method: str = "gradient", *, sparsity=0.7,
            schedule: str = "constant", solver: str = "fast", n_views: int = 64, seed: int = 0,
            device="auto", progress: bool = False, trace_options: dict | None = None,
            **options) -> torch.Tensor:
    """Attribution of ``model``'s class ``target`` at the single image ``x`` computed on its SPADE
    trace: ``xailab.attribute(trace(model, x, ...), x, target, method, **options)``.

    Returns a tensor shaped like ``x`` as a batch of one (``(1, C, H, W)``, or one channel for
    CAM-style methods); ``options`` go to the attribution method, ``trace_options`` to :func:`trace`.
    """
    x1 = as_single_image(x)
    t = trace(model, x1, sparsity, schedule=schedule, solver=solver, n_views=n_views, seed=seed,
              device=device, progress=progress, **(trace_options or {})).model
    return attribute(t, x1.to(model_device(t)), target, method=method, **options)


def kept_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{layer name: bool mask of non-zero weights}`` for every prunable layer."""
    return {n: m.weight.detach() != 0 for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


def overlap(a: nn.Module, b: nn.Module, layers=None) -> dict[str, float]:
    """Jaccard overlap ``|K_a ∩ K_b| / |K_a ∪ K_b|`` of the kept weights of two traces, per layer
    (``layers``: names to compare, default every prunable layer pruned in either trace)."""
    ka, kb = kept_masks(a), kept_masks(b)
    out = {}
    for name in layers or ka:
        A, B = ka[name], kb[name]
        if layers is None and bool(A.all()) and bool(B.all()):
            continue                                  # dense in both: nothing to compare
        union = (A | B).sum().item()
        out[name] = (A & B).sum().item() / union if union else 1.0
    return out


def layer_conditioning(model: nn.Module, x: torch.Tensor, *, n_views: int = 64, seed: int = 0, damp: float = 0.01,
                       device="auto", positions: bool = True, augment_options: dict | None = None) -> list[dict]:
    """How well the views of one image pin down each prunable layer's least-squares problem.

    For every Conv2d / Linear layer of the dense ``model`` (in execution order): ``cols`` (inputs per
    output row: what the solver fits), ``samples`` (views × positions the layer sees), ``live`` (inputs
    that are non-zero on some view; a dead input, e.g. a ReLU channel that never fires on these views,
    costs nothing to drop and the solvers prune it first), the numerical ``rank`` of the Hessian
    ``H = 2/n XᵀX`` (eigenvalues above 1e-6 of the largest: H is summed from float32 products),
    ``deficit`` = ``live - rank`` (directions among the live inputs that the views leave unconstrained,
    held only by the damping), and the condition numbers of ``H`` restricted to the live inputs, without
    and with the solver's damping (``damp`` × mean diagonal). The layer is *determined* by the views
    when ``deficit == 0``. Grouped convolutions report their worst group. With ``positions`` (as in
    :func:`trace_batch`) a linear layer fed by global average pooling is measured on per-position features.
    """
    x = as_single_image(x)
    check_finite("x", x)
    dev = resolve_device(device)
    work = copy.deepcopy(model).to(dev).eval()
    views = augment(x.to(dev), int(check_positive("n_views", n_views, integer=True)), seed=seed,
                    **(augment_options or {}))
    pooled = pooled_sources(work, views[:1]) if positions else {}
    rows = []
    for name, module in execution_order(work, views[:1]):
        inp = (per_position(capture_input(work, pooled[name], views)) if name in pooled
               else capture_input(work, module, views))
        H = layer_hessian(module, inp, 1, torch.float64)[0]   # (groups, cols, cols)
        live, rank, deficit, cond, cond_damped = [], [], [], [], []
        for h in H:
            alive = torch.diagonal(h) > 0
            sub = h[alive][:, alive]
            eig = torch.linalg.eigvalsh(sub) if len(sub) else torch.ones(1, dtype=h.dtype, device=h.device)
            top = eig[-1].clamp_min(torch.finfo(torch.float64).tiny)
            r = int((eig > 1e-6 * top).sum()) if len(sub) else 0
            damped = eig + damp * torch.diagonal(h).mean()
            live.append(int(alive.sum()))
            rank.append(r)
            deficit.append(int(alive.sum()) - r)
            cond.append(float(top / eig[0].clamp_min(1e-300)))
            cond_damped.append(float(damped[-1] / damped[0]))
        samples = _samples(module, inp, 1)
        rows.append(dict(name=name, cols=H.shape[-1], samples=samples, live=min(live), rank=min(rank),
                         deficit=max(deficit), condition=max(cond), condition_damped=max(cond_damped)))
    return rows
