"""Generalization of saliency maps: disjoint-split experiment, map consistency, spectral norms, bounds.

Reproduces, at laptop scale, "On the Generalization of Gradient-based Neural Network
Interpretations" (ICLR 2024 submission) and the stability/fidelity analysis of its follow-up,
Ye & Farnia, "Gaussian Smoothing in Saliency Maps: The Stability-Fidelity Trade-Off" (AISTATS 2025,
arXiv 2411.05837).

Four parts, each usable alone:

* **Consistency** of two batches of maps (:func:`consistency`) and of two networks' predictions
  (:func:`prediction_agreement`).
* **The experiment** (:func:`disjoint_split_experiment`): split a training set into k disjoint
  parts, train one network per part, compare their maps on a common test set.
* **Norms**: exact spectral norms of Linear layers, spectral norms of Conv2d layers *as the linear
  operator they compute* on a given input size (power iteration with conv / transposed conv, exact
  FFT for circular padding, dense matrix for checking), (2,1) group norms, Bartlett et al.'s
  spectral complexity R_A and their margin bound.
* **Bound calculators** for the papers' theorems.  The exact constants of the papers' Theorems 1
  and 2 could not be pinned down from the sources available here, so each calculator implements the
  bound's *shape* (which quantities enter and how) and takes the constants as explicit arguments;
  their docstrings say which parts are exact and which are reconstructed.

Nothing here has side effects on import; torch-heavy helpers from other xailab modules are imported
lazily inside the functions that need them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.utils import check_positive, progress, seeded_generator

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

# --------------------------------------------------------------------------------------------
# Consistency of maps and predictions
# --------------------------------------------------------------------------------------------

METRICS = ("spearman", "l2", "cosine", "topk")


def _pixel_maps(maps: Tensor, reduce: str | None) -> Tensor:
    """Flatten a batch of maps to ``(N, P)``; ``reduce="abs-sum"`` first sums absolute values over
    the channel axis of ``(N, C, H, W)`` maps (the pixel relevance every metric here compares)."""
    maps = torch.as_tensor(maps).detach()
    if maps.ndim < 2:
        raise ValueError(f"maps must be batched (N, ...), got shape {tuple(maps.shape)}")
    if reduce == "abs-sum":
        maps = maps.abs().sum(1) if maps.ndim == 4 else maps.abs()
    elif reduce == "abs":
        maps = maps.abs()
    elif reduce is not None:
        raise ValueError(f"reduce must be 'abs-sum', 'abs' or None, got {reduce!r}")
    return maps.reshape(maps.shape[0], -1).double()


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denom = a.norm(dim=-1) * b.norm(dim=-1)
    r = (a * b).sum(-1) / denom.clamp_min(1e-300)
    # a constant map carries no ranking: correlation 0 (neither agreement nor disagreement)
    return torch.where(denom > 0, r, torch.zeros_like(r))


def consistency(map_a, map_b, metric: str = "spearman", *, reduce: str | None = "abs-sum",
                k: float = 0.1) -> Tensor:
    """Per-image consistency of two batches of maps of the same shape; returns a tensor ``(N,)``.

    Maps are first turned into pixel relevance: with ``reduce="abs-sum"`` (default) a ``(N, C, H, W)``
    map becomes ``sum_c |m_c|`` per pixel, other shapes (``(N, H, W)``, ``(N, D)``) become ``|m|``;
    ``reduce=None`` compares the raw signed maps.  Metrics (``k`` only for ``"topk"``):

    * ``"spearman"`` — **normalised Spearman rank correlation** ``(1 + rho) / 2`` in ``[0, 1]``, where
      ``rho`` is Spearman's correlation over the pixels of the two relevance maps (ties get their
      average rank).  1: same pixel ranking; 0.5: unrelated rankings; 0: reversed ranking.  A
      constant map has no ranking and scores 0.5.
    * ``"l2"`` — **normalised L2 distance** ``|| a/||a|| - b/||b|| ||_2``: each map is scaled to unit
      L2 norm per image, so the distance ignores overall scale; it lies in ``[0, 2]`` (``[0, sqrt 2]``
      for non-negative maps).  *Lower* is more consistent.  A zero map is left at zero.
    * ``"cosine"`` — cosine similarity of the two maps in ``[-1, 1]`` (``[0, 1]`` for non-negative
      maps); equals ``1 - l2**2 / 2``.
    * ``"topk"`` — intersection over union of the top-``k`` fraction of pixels of each map.
    """
    a, b = torch.as_tensor(map_a), torch.as_tensor(map_b)
    if a.shape != b.shape:
        raise ValueError(f"map_a and map_b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = _pixel_maps(a, reduce), _pixel_maps(b, reduce)
    if metric == "spearman":
        from xailab.attribution.maps import average_ranks  # ties share their average rank

        return (1.0 + _pearson(average_ranks(a), average_ranks(b))) / 2.0
    if metric in ("l2", "cosine"):
        ua = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        ub = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-300)
        return (ua - ub).norm(dim=-1) if metric == "l2" else (ua * ub).sum(-1)
    if metric == "topk":
        if not 0 < k <= 1:
            raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
        m = max(1, int(round(k * a.shape[1])))
        ta = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(m, dim=1).indices, True)
        tb = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(m, dim=1).indices, True)
        return (ta & tb).sum(1).double() / (ta | tb).sum(1).double()
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def prediction_agreement(logits_a: Tensor, logits_b: Tensor, *, chance_corrected: bool = False) -> float:
    """Fraction of samples on which two networks predict the same class (argmax of the logits).

    This is the x-axis of the paper's Figure 1b (the rebuttal calls it a correlation of the argmax
    predictions and defines it as this fraction).  ``chance_corrected=True`` returns Cohen's kappa
    ``(p_o - p_e) / (1 - p_e)``, with ``p_e`` the agreement expected from the two networks' class
    frequencies alone: 0 at chance, 1 for identical predictions, like a rank correlation of maps."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits_a and logits_b must have the same shape, got {tuple(logits_a.shape)} "
                         f"and {tuple(logits_b.shape)}")
    pa, pb = logits_a.argmax(-1), logits_b.argmax(-1)
    observed = float((pa == pb).double().mean())
    if not chance_corrected:
        return observed
    k = logits_a.shape[-1]
    fa = torch.bincount(pa, minlength=k).double() / pa.numel()
    fb = torch.bincount(pb, minlength=k).double() / pb.numel()
    expected = float((fa * fb).sum())
    return 1.0 if expected >= 1.0 else (observed - expected) / (1.0 - expected)


# --------------------------------------------------------------------------------------------
# The disjoint-split experiment
# --------------------------------------------------------------------------------------------

DEFAULT_METHODS = ("gradient", "integrated_gradients", "smoothgrad", "grad_cam")


def _method_table(methods) -> dict[str, tuple[str, dict]]:
    """Normalise ``methods`` to ``{label: (method_name, options)}``.

    Accepts names (``"gradient"``), or a mapping ``label -> name`` or ``label -> (name, options)``,
    e.g. ``{"SmoothGrad σ=0.3": ("smoothgrad", {"sigma": 0.3})}``."""
    if isinstance(methods, str):
        methods = (methods,)
    if isinstance(methods, Mapping):
        table = {}
        for label, spec in methods.items():
            name, opts = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
            table[str(label)] = (name, opts)
    else:
        table = {str(m): (str(m), {}) for m in methods}
    if not table:
        raise ValueError("methods must name at least one attribution method")
    return table


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


def compute_maps(model: nn.Module, x: Tensor, target, methods, *, batch_size: int = 128,
                 device="auto") -> dict[str, Tensor]:
    """Pixel maps ``(N, 1, H, W)`` (channel-reduced with abs-sum) of ``model`` for each method of
    ``methods`` (see :func:`_method_table`), computed in batches."""
    from xailab.attribution import attribute, reduce_channels
    from xailab.utils import as_targets, resolve_device

    dev = resolve_device(device)
    model = model.to(dev)
    target = as_targets(target, x.shape[0])
    out = {}
    for label, (name, opts) in _method_table(methods).items():
        parts = []
        for i in range(0, x.shape[0], batch_size):
            xb, tb = x[i:i + batch_size].to(dev), target[i:i + batch_size].to(dev)
            attr = attribute(model, xb, tb, method=name, **opts).detach()
            parts.append(reduce_channels(attr, "abs-sum").cpu() if attr.ndim == 4 else attr.abs().cpu())
        out[label] = torch.cat(parts)
    return out


def _logits(model, x, device, batch_size=512):
    from xailab.train import predict

    return predict(model, x, batch_size=batch_size, device=device).detach().cpu()


def disjoint_split_experiment(model_fn: Callable[[int], nn.Module], train, test, *,
                              split_factors: Sequence[int] = (2, 4, 8), methods=DEFAULT_METHODS,
                              epochs: int | Mapping[int, int] = 10, seeds: Sequence[int] = (0,), lr: float = 1e-3,
                              batch_size: int = 64, pairs="disjoint", init_from=None,
                              metrics: Sequence[str] = ("spearman", "l2"), keep_maps: int = 8,
                              target: str = "label", device="auto", progress_bar: bool = True,
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

    ``methods``: names or ``{label: (name, options)}`` (see :func:`_method_table`); maps are
    reduced to pixel relevance with abs-sum.  ``target``: ``"label"`` explains the true class,
    ``"pred"`` each network's own prediction.  ``pairs``: ``"disjoint"`` (independent pairs (0,1),
    (2,3), ...), ``"all"`` or an int.  Returns a :class:`SplitResults`.
    """
    split_factors = [int(k) for k in split_factors]
    if not split_factors:
        raise ValueError("split_factors must hold at least one split factor")
    for k in split_factors:  # fail before any training
        check_split_factor(len(train), k, num_classes=train.num_classes, batch_size=batch_size)
        if isinstance(epochs, Mapping) and k not in epochs:
            raise ValueError(f"epochs has no entry for split factor {k}")
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metrics must be among {METRICS}, got {m!r}")
    table = _method_table(methods)
    if target not in ("label", "pred"):
        raise ValueError(f"target must be 'label' or 'pred', got {target!r}")
    from xailab.data import disjoint_splits
    from xailab.train import fit_many

    state = init_from.state_dict() if isinstance(init_from, nn.Module) else init_from

    def build(seed: int) -> nn.Module:
        net = model_fn(seed)
        if state is not None:
            net.load_state_dict(state)
        return net

    res = SplitResults()
    jobs = [(s, k) for s in seeds for k in split_factors]
    for rep, k in progress(jobs, progress_bar, desc="split factors"):
        parts = disjoint_splits(train, k, seed=rep)
        net_seeds = [1000 * rep + 100 * k + i for i in range(k)]
        ep = epochs[k] if isinstance(epochs, Mapping) else epochs
        nets = fit_many(build, parts, seeds=net_seeds, epochs=ep, lr=lr, batch_size=batch_size,
                        device=device, progress=False)
        logits = [_logits(n, test.x, device) for n in nets]
        accs = [float((lg.argmax(-1) == test.y).double().mean()) for lg in logits]
        res.models.setdefault(k, []).extend(nets)
        res.accuracy.setdefault(k, []).extend(accs)
        maps = []
        for net, lg in zip(nets, logits):
            tgt = test.y if target == "label" else lg.argmax(-1)
            maps.append(compute_maps(net, test.x, tgt, table, device=device))
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


# --------------------------------------------------------------------------------------------
# Spectral norms and group norms of layers
# --------------------------------------------------------------------------------------------

def linear_spectral_norm(layer_or_weight) -> float:
    """Exact spectral norm (largest singular value) of a Linear layer's weight or of a matrix."""
    w = layer_or_weight.weight if isinstance(layer_or_weight, nn.Module) else layer_or_weight
    return float(torch.linalg.matrix_norm(w.detach().double(), ord=2))


def _conv_args(conv: nn.Conv2d) -> dict:
    if isinstance(conv.padding, str):
        raise ValueError("conv layers with string padding ('same'/'valid') are not supported; "
                         "give the padding as integers")
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


def _conv_operator(conv: nn.Conv2d, input_size):
    """The layer without bias as a pair of functions (A, A^T) on tensors ``(B, C, H, W)``, float64.

    A pads as the layer does (zeros or its padding mode) and convolves with the layer's stride and
    dilation.  For zero padding A^T is ``conv_transpose2d`` with the output padding that restores
    the input size (a strided conv drops the last rows/columns that no window reaches); for other
    padding modes A^T is obtained by automatic differentiation (a vector-Jacobian product)."""
    h, w = _hw(input_size)
    weight = conv.weight.detach().double()
    a = _conv_args(conv)
    if conv.padding_mode == "zeros":
        def A(x):
            return F.conv2d(x, weight, **a)
        out = A(torch.zeros(1, conv.in_channels, h, w, dtype=torch.float64))
        oh, ow = out.shape[-2:]
        op = []
        for size, o, k, s, p, d in zip((h, w), (oh, ow), conv.kernel_size, a["stride"], a["padding"],
                                       a["dilation"]):
            op.append(size - ((o - 1) * s - 2 * p + d * (k - 1) + 1))

        def AT(y):
            return F.conv_transpose2d(y, weight, stride=a["stride"], padding=a["padding"],
                                      output_padding=tuple(op), groups=a["groups"], dilation=a["dilation"])
        return A, AT
    ph, pw = a["padding"]
    mode = {"circular": "circular", "reflect": "reflect", "replicate": "replicate"}[conv.padding_mode]
    flat = dict(a, padding=0)

    def A(x):
        return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode=mode), weight, **flat)

    def AT(y):
        x0 = torch.zeros(y.shape[0], conv.in_channels, h, w, dtype=torch.float64)
        return torch.func.vjp(A, x0)[1](y)[0]
    return A, AT


def _hw(input_size) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    size = tuple(int(s) for s in input_size)
    if len(size) < 2:
        raise ValueError(f"input_size must be an int or (..., H, W), got {input_size!r}")
    return size[-2], size[-1]


def conv_dense_matrix(conv: nn.Conv2d, input_size) -> Tensor:
    """The dense matrix of the layer (bias removed) on inputs of ``input_size``, built by applying
    the layer to every basis input: column j is A e_j.  For checking; size (out numel, in numel)."""
    h, w = _hw(input_size)
    A, _ = _conv_operator(conv, (h, w))
    n = conv.in_channels * h * w
    basis = torch.eye(n, dtype=torch.float64).reshape(n, conv.in_channels, h, w)
    return A(basis).reshape(n, -1).T


def conv_spectral_norm(conv: nn.Conv2d, input_size, *, method: str = "auto", n_iter: int = 2000,
                       tol: float = 1e-12, seed: int = 0) -> float:
    """Spectral norm of a Conv2d layer as the linear operator it computes on ``input_size`` inputs
    (its padding, padding mode, stride, dilation and groups included; the bias is ignored).

    ``method``: ``"power"`` (power iteration on A^T A with conv / transposed conv, float64, until
    the estimate changes by less than ``tol`` relatively), ``"fft"`` (exact for circular padding,
    stride 1 and an output the size of the input: the operator is block-circulant, so its singular
    values are those of the ``C_out x C_in`` matrices of the kernel's 2-D DFT at each frequency,
    Sedghi et al. 2019), ``"dense"`` (SVD of :func:`conv_dense_matrix`; small layers only) or
    ``"auto"`` (fft when it applies, else power).

    Note: this is the operator norm, not the norm of the reshaped kernel matrix that
    ``torch.nn.utils.spectral_norm`` normalises; the two differ by up to a factor of the kernel size.
    """
    h, w = _hw(input_size)
    fft_ok = (conv.padding_mode == "circular" and conv.stride == (1, 1) and conv.dilation == (1, 1)
              and conv.groups == 1 and all(2 * p == k - 1 for p, k in zip(conv.padding, conv.kernel_size)))
    if method == "auto":
        method = "fft" if fft_ok else "power"
    if method == "fft":
        if not fft_ok:
            raise ValueError("method='fft' needs circular padding, stride 1, dilation 1, groups 1 and "
                             "padding (k-1)/2 (an output the size of the input)")
        return _conv_norm_fft(conv, h, w)
    if method == "dense":
        return float(torch.linalg.matrix_norm(conv_dense_matrix(conv, (h, w)), ord=2))
    if method != "power":
        raise ValueError(f"method must be 'auto', 'power', 'fft' or 'dense', got {method!r}")
    A, AT = _conv_operator(conv, (h, w))
    g = seeded_generator(seed)
    v = torch.randn(1, conv.in_channels, h, w, generator=g, dtype=torch.float64)
    v /= v.norm()
    est = 0.0
    for _ in range(n_iter):
        u = AT(A(v))
        norm = u.norm()
        if norm == 0:
            return 0.0
        v = u / norm
        new = math.sqrt(float(norm))  # ||A^T A v|| -> sigma_max^2 for the converged unit v
        if abs(new - est) <= tol * max(new, 1e-300):
            est = new
            break
        est = new
    return float(A(v).norm())


def _conv_norm_fft(conv: nn.Conv2d, h: int, w: int) -> float:
    k = conv.weight.detach().double()  # (out, in, kh, kw); cross-correlation with circular wrap
    kh, kw = k.shape[-2:]
    ph, pw = conv.padding
    # place tap (a, b) at offset (a - ph, b - pw) modulo the image: the circulant's generating kernel
    full = torch.zeros(k.shape[0], k.shape[1], h, w, dtype=torch.float64)
    for a in range(kh):
        for b in range(kw):
            full[:, :, (a - ph) % h, (b - pw) % w] += k[:, :, a, b]
    spec = torch.fft.fft2(full)  # (out, in, h, w)
    mats = spec.permute(2, 3, 0, 1)  # (h, w, out, in): one small matrix per frequency
    return float(torch.linalg.matrix_norm(mats, ord=2).max())


def group_norm_21(layer_or_weight, reference=None, *, input_size=None) -> float:
    """Bartlett et al.'s ``||A^T - M^T||_{2,1}``: the sum over output units of the L2 norm of each
    unit's incoming weights (rows of A - M), with reference weights ``M`` (None: zero).

    For a Conv2d layer (``input_size`` required) A is the full operator: each output channel at
    each output position is a row; its norm counts only the taps that fall inside the (zero-padded)
    input, computed exactly by convolving an all-ones input with the squared kernel."""
    layer = layer_or_weight if isinstance(layer_or_weight, nn.Module) else None
    w = (layer.weight if layer is not None else layer_or_weight).detach().double()
    if reference is not None:
        ref = reference.weight if isinstance(reference, nn.Module) else reference
        ref = torch.as_tensor(ref).detach().double()
        if ref.shape != w.shape:
            raise ValueError(f"reference weights have shape {tuple(ref.shape)}, the layer {tuple(w.shape)}")
        w = w - ref
    if isinstance(layer, nn.Conv2d):
        if input_size is None:
            raise ValueError("input_size is needed for the (2,1) norm of a conv layer")
        h, wd = _hw(input_size)
        ones = torch.ones(1, layer.in_channels, h, wd, dtype=torch.float64)
        if layer.padding_mode == "zeros":
            sq = F.conv2d(ones, w * w, **_conv_args(layer))
            return float(sq.clamp_min(0).sqrt().sum())
        if layer.padding_mode == "circular" and all(h0 >= k for h0, k in zip((h, wd), layer.kernel_size)):
            # taps wrap onto distinct pixels: every row holds the whole kernel of its channel
            ph, pw = layer.padding
            sq = F.conv2d(F.pad(ones, (pw, pw, ph, ph), value=1.0), w * w, **dict(_conv_args(layer), padding=0))
            return float(sq.clamp_min(0).sqrt().sum())
        # reflect / replicate padding fold several taps onto one pixel: rows = A^T e_r, in chunks
        delta = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=False,
                          padding_mode=layer.padding_mode)
        delta.weight.data = w
        A, AT = _conv_operator(delta, (h, wd))
        out_shape = A(torch.zeros(1, layer.in_channels, h, wd, dtype=torch.float64)).shape[1:]
        m = math.prod(out_shape)
        total = 0.0
        for i in range(0, m, 256):
            eye = torch.zeros(min(256, m - i), m, dtype=torch.float64)
            eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1.0
            total += float(AT(eye.reshape(-1, *out_shape)).flatten(1).norm(dim=1).sum())
        return total
    if w.ndim != 2:
        raise ValueError(f"expected a matrix or a Linear/Conv2d layer, got weights of shape {tuple(w.shape)}")
    return float(w.norm(dim=1).sum())


def _linear_layers(model: nn.Module, input_size) -> list[tuple[str, nn.Module, tuple]]:
    """Linear and Conv2d layers of ``model`` in forward order with the shape of their input
    (found by one forward pass on zeros of shape ``(1, *input_size)``)."""
    found = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name: found.append((name, mod, tuple(inp[0].shape))))
             for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            was = model.training
            model.eval()
            model(torch.zeros(1, *input_size, dtype=p.dtype, device=p.device))
            model.train(was)
    finally:
        for hk in hooks:
            hk.remove()
    return found


def layer_norms(model: nn.Module, input_size, *, reference=None, n_iter: int = 500) -> list[dict]:
    """Per Linear/Conv2d layer of ``model`` (forward order): name, spectral norm (operator norm on
    the layer's actual input size) and ``||A^T - M^T||_{2,1}``.  ``input_size``: ``(C, H, W)`` or
    ``(D,)``.  ``reference``: None / ``"zero"`` (M = 0) or a model of the same architecture / its
    state dict (M = e.g. the initial weights)."""
    layers = _linear_layers(model, tuple(input_size))
    refs = {}
    if reference is not None and reference != "zero":
        if isinstance(reference, nn.Module):
            ref_layers = _linear_layers(reference, tuple(input_size))
            refs = {name: mod.weight for name, mod, _ in ref_layers}
        else:
            missing = [name + ".weight" for name, _, _ in layers if name + ".weight" not in reference]
            if missing:
                raise ValueError(f"reference state dict lacks {missing}; for spectral-normed models pass the "
                                 "reference model itself (its .weight is the normalised weight)")
            refs = {name: reference[name + ".weight"] for name, _, _ in layers}
    rows = []
    for name, mod, shape in layers:
        if isinstance(mod, nn.Conv2d):
            s = conv_spectral_norm(mod, shape[-2:], n_iter=n_iter)
            b = group_norm_21(mod, refs.get(name), input_size=shape[-2:])
        else:
            s = linear_spectral_norm(mod)
            b = group_norm_21(mod, refs.get(name))
        rows.append(dict(name=name, kind=type(mod).__name__, input_shape=shape, spectral=s, group21=b))
    return rows


def spectral_complexity(spectral_norms: Sequence[float], group_norms: Sequence[float],
                        lipschitz: float | Sequence[float] = 1.0) -> float:
    """Bartlett, Foster & Telgarsky (2017) spectral complexity

        R_A = (prod_i rho_i ||A_i||_sigma) * (sum_i ||A_i^T - M_i^T||_{2,1}^{2/3} / ||A_i||_sigma^{2/3})^{3/2}

    from the layers' spectral norms ``||A_i||_sigma``, their (2,1) distances to the reference
    matrices, and the Lipschitz constants ``rho_i`` of the activations (1 for ReLU, max-pooling and
    identity).  Exact as in the paper (their eq. 1.2)."""
    s = torch.as_tensor(spectral_norms, dtype=torch.float64)
    b = torch.as_tensor(group_norms, dtype=torch.float64)
    if s.ndim != 1 or s.shape != b.shape or s.numel() == 0:
        raise ValueError(f"spectral_norms and group_norms must be equal-length sequences, got {tuple(s.shape)} "
                         f"and {tuple(b.shape)}")
    rho = torch.as_tensor(lipschitz, dtype=torch.float64).expand_as(s)
    if (s < 0).any() or (b < 0).any() or (rho < 0).any():
        raise ValueError("norms and Lipschitz constants must be non-negative")
    if (s == 0).any():
        return 0.0
    return float(torch.prod(rho * s) * ((b / s) ** (2 / 3)).sum() ** 1.5)


def model_spectral_complexity(model: nn.Module, input_size, *, reference=None, lipschitz=1.0,
                              n_iter: int = 500) -> float:
    """R_A of ``model`` from :func:`layer_norms` (biases are left out, as in Bartlett et al.'s
    bias-free networks; ReLU and max-pooling are 1-Lipschitz)."""
    rows = layer_norms(model, input_size, reference=reference, n_iter=n_iter)
    return spectral_complexity([r["spectral"] for r in rows], [r["group21"] for r in rows], lipschitz)


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """Multiclass margins ``f(x)_y - max_{j != y} f(x)_j`` per sample (negative when misclassified)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf")).max(1).values
    return true - others


def margin_bound(spectral_complexity: float, *, n: int, data_norm: float, margin: float,
                 width: int, delta: float = 0.05, empirical_margin_risk: float = 0.0,
                 c_complexity: float = 72.0, c_small: float = 8.0, c_conf: float = 3.0) -> float:
    """Bartlett et al. (2017) margin bound on the test error (their Theorem 3.1 shape, fixed norms):

        P[argmax f(x) != y] <= R_gamma + c_small / n^{3/2}
                               + c_complexity * ||X||_2 * R_A * ln(2W) * ln(n) / (gamma * n)
                               + c_conf * sqrt(ln(1/delta) / (2n))

    ``data_norm`` is ``||X||_2 = sqrt(sum_i ||x_i||^2)`` over the n training inputs, ``width`` W the
    largest layer width, ``margin`` gamma, ``empirical_margin_risk`` R_gamma the fraction of training
    points with margin <= gamma.  The constants (72, 8, 3) are as we read their theorem; they are
    arguments so they can be changed.  Values above 1 are vacuous (and typical for real networks).
    """
    check_positive("n", n, integer=True)
    check_positive("margin", margin)
    check_positive("width", width, integer=True)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    complexity = c_complexity * data_norm * spectral_complexity * math.log(2 * width) * math.log(n) / (margin * n)
    return empirical_margin_risk + c_small / n ** 1.5 + complexity + c_conf * math.sqrt(math.log(1 / delta) / (2 * n))


# --------------------------------------------------------------------------------------------
# The papers' bounds
# --------------------------------------------------------------------------------------------

def gradient_map_complexity(spectral_norms: Sequence[float], group_norms: Sequence[float],
                            group_norms_T: Sequence[float] | None = None, *,
                            lipschitz: float | Sequence[float] = 1.0,
                            smoothness: float | Sequence[float] = 1.0) -> float:
    """Spectral complexity of the *gradient map* ``x -> grad_x f(x)`` (Theorem 1's complexity term,
    reconstructed; constant-free).

    The gradient is computed by a forward pass through A_1..A_L followed by a backward pass through
    A_L^T..A_1^T gated by the activations' derivatives.  Counting it as a 2L-layer network in
    Bartlett's complexity gives layers (A_1..A_L, A_L^T..A_1^T) with Lipschitz constants
    (rho_1..rho_L, beta_L..beta_1), where beta_i bounds the Lipschitz constant of the i-th
    activation's *derivative* (smoothness; infinite for ReLU, so ReLU networks need a smooth
    surrogate, e.g. softplus with beta = its sharpness / 4).  Its product term is the square of
    R_A's: this is the sense in which the paper finds that interpretation needs more data than
    classification.  ``group_norms_T``: ``||A_i - M_i||_{2,1}`` of the transposed layers (defaults
    to ``group_norms``)."""
    s = list(spectral_norms)
    b = list(group_norms)
    bt = list(group_norms_T) if group_norms_T is not None else b
    L = len(s)
    rho = list(torch.as_tensor(lipschitz, dtype=torch.float64).expand(L).tolist())
    beta = list(torch.as_tensor(smoothness, dtype=torch.float64).expand(L).tolist())
    return spectral_complexity(s + s[::-1], b + bt[::-1], rho + beta[::-1])


def _bound_tail(n: int, delta: float, c_conf: float) -> float:
    check_positive("n", n, integer=True)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    return c_conf * math.sqrt(math.log(1 / delta) / (2 * n))


def gradient_bound(gradient_complexity: float, *, n: int, data_norm: float, width: int,
                   delta: float = 0.05, constant: float = 1.0, c_conf: float = 3.0) -> float:
    """Theorem 1 of the ICLR paper (shape; Simple-Grad and Integrated Gradients): the generalization
    gap of the interpretation loss is at most

        constant * ||X||_2 * R_grad * ln(2W) * ln(n) / n + c_conf * sqrt(ln(1/delta) / (2n))

    with ``R_grad`` from :func:`gradient_map_complexity`.  The covering-number argument is
    Bartlett et al.'s applied to the gradient network; the constant (72 in Bartlett's theorem, times
    the Lipschitz constant and range of the interpretation loss) could not be pinned down from the
    paper and is an explicit argument.  For IG, multiply ``data_norm`` by the largest
    ``||x - baseline||_inf`` (IG is the path-averaged gradient times ``x - baseline``)."""
    return constant * data_norm * gradient_complexity * math.log(2 * width) * math.log(n) / n \
        + _bound_tail(n, delta, c_conf)


def smoothgrad_lipschitz(sigma: float) -> float:
    """sqrt(2/pi) / sigma: the Lipschitz constant of f -> grad(f * N(0, sigma^2 I)) from
    (bounded functions, sup norm) to (vectors, L2 norm), at any point and in any dimension.

    By Stein's lemma grad(f * phi_sigma)(x) = E[f(x + eps) eps] / sigma^2, so for two functions with
    sup|f - g| <= D and any unit vector u, |u . (grad f_s - grad g_s)| <= D E|u . eps| / sigma^2
    = D sigma sqrt(2/pi) / sigma^2.  The constant is attained (1-D step functions)."""
    sigma = check_positive("sigma", sigma)
    return SQRT_2_OVER_PI / sigma


def smoothgrad_bound(sigma: float, spectral_complexity: float, *, n: int, data_norm: float,
                     width: int, delta: float = 0.05, constant: float = 1.0, c_conf: float = 3.0) -> float:
    """Theorem 2 of the ICLR paper (shape; SmoothGrad with noise sigma): the generalization gap of
    the SmoothGrad interpretation loss is at most

        constant * (sqrt(2/pi) / sigma) * ||X||_2 * R_A * ln(2W) * ln(n) / n + c_conf * sqrt(ln(1/delta) / (2n))

    Smoothing turns a cover of the *networks* (complexity R_A, not the gradient network's) into a
    cover of their SmoothGrad maps at a scale multiplied by :func:`smoothgrad_lipschitz`; hence the
    1/sigma factor.  The sqrt(2/pi) factor is derived (exact); the overall constant is an argument.
    Raises a ValueError for sigma <= 0."""
    return constant * smoothgrad_lipschitz(sigma) * data_norm * spectral_complexity * math.log(2 * width) \
        * math.log(n) / n + _bound_tail(n, delta, c_conf)


def sgd_parameter_divergence(n: int, *, lipschitz: float, step_sizes: Sequence[float]) -> float:
    """Hardt, Recht & Singer (2016, Thm 3.8) bound on E||w_T - w'_T|| for SGD on convex,
    ``lipschitz``-Lipschitz, smooth losses with steps alpha_t <= 2/beta, for training sets that
    differ in one of n examples: ``2 L sum_t alpha_t / n``.  The follow-up paper's stability
    analysis starts from this kind of parameter stability."""
    check_positive("n", n, integer=True)
    return 2.0 * lipschitz * float(sum(step_sizes)) / n


def stability_bound(method: str, *, param_divergence: float, sigma: float | None = None,
                    weight_lipschitz: float = 1.0, gradient_weight_lipschitz: float = 1.0,
                    input_range: float = 1.0) -> float:
    """Stability error of a saliency map (follow-up paper's analysis; shape with explicit constants):
    how far the map moves when the training set changes, ``E||map_w(x) - map_w'(x)||``, given the
    parameter divergence ``E||w - w'||``:

    * ``"gradient"``: ``L_grad,w * div`` (``gradient_weight_lipschitz``: Lipschitz constant of
      grad_x f_w in w; unbounded for ReLU networks);
    * ``"integrated_gradients"``: ``input_range * L_grad,w * div`` (IG = path-averaged gradient times
      x - baseline, ``input_range`` = max |x - baseline|);
    * ``"smoothgrad"``: ``sqrt(2/pi)/sigma * L_f,w * div`` (``weight_lipschitz``: Lipschitz
      constant of f_w(x) in w, uniformly in x), by :func:`smoothgrad_lipschitz` — falls like 1/sigma.
    """
    if method == "gradient":
        return gradient_weight_lipschitz * param_divergence
    if method == "integrated_gradients":
        return input_range * gradient_weight_lipschitz * param_divergence
    if method == "smoothgrad":
        if sigma is None:
            raise ValueError("sigma is required for method='smoothgrad'")
        return smoothgrad_lipschitz(sigma) * weight_lipschitz * param_divergence
    raise ValueError(f"method must be 'gradient', 'integrated_gradients' or 'smoothgrad', got {method!r}")


def fidelity_bound(sigma: float, *, hessian_bound: float, dim: int) -> float:
    """Fidelity error of SmoothGrad to the plain gradient (follow-up paper's trade-off; shape):
    if grad f is H-Lipschitz in x then ``||E grad f(x + eps) - grad f(x)|| <= H E||eps|| <=
    H sigma sqrt(d)`` — grows linearly in sigma."""
    sigma = check_positive("sigma", sigma)
    check_positive("dim", dim, integer=True)
    return hessian_bound * sigma * math.sqrt(dim)


def balancing_sigma(stability_coef: float, fidelity_coef: float) -> float:
    """The sigma minimising ``stability_coef / sigma + fidelity_coef * sigma`` (a stability bound
    falling like 1/sigma plus a fidelity bound growing like sigma): ``sqrt(a / b)``."""
    check_positive("stability_coef", stability_coef)
    check_positive("fidelity_coef", fidelity_coef)
    return math.sqrt(stability_coef / fidelity_coef)


def crossing_point(xs: Sequence[float], ys_down: Sequence[float], ys_up: Sequence[float]) -> float:
    """The x where a decreasing curve meets an increasing one, by linear interpolation between the
    grid points (the ends of ``xs`` when they do not cross) — marks the balancing sigma of measured
    stability and fidelity curves."""
    d = [a - b for a, b in zip(ys_down, ys_up)]
    if len(d) != len(xs) or not d:
        raise ValueError("xs, ys_down and ys_up must be non-empty and of equal length")
    for i in range(len(d) - 1):
        if d[i] == 0:
            return float(xs[i])
        if d[i] * d[i + 1] < 0:
            t = d[i] / (d[i] - d[i + 1])
            return float(xs[i] + t * (xs[i + 1] - xs[i]))
    return float(xs[-1] if d[-1] > 0 else xs[0])


# --------------------------------------------------------------------------------------------
# Measured counterparts of the bounds
# --------------------------------------------------------------------------------------------

def stability_fidelity(model_a: nn.Module, model_b: nn.Module, x: Tensor, target, sigmas: Sequence[float], *,
                       n_samples: int = 16, seed: int = 0, metric: str = "l2", reduce: str | None = None
                       ) -> dict[str, list[float]]:
    """Measured stability and fidelity of SmoothGrad over a grid of noise levels (the follow-up
    paper's trade-off), for two networks trained on disjoint data.

    * ``stability[i]``: mean over images of ``consistency(SG_a, SG_b, metric)`` at ``sigmas[i]`` —
      how far apart the two networks' SmoothGrad maps are (for ``"l2"``: lower is more stable);
    * ``fidelity[i]``: mean of ``consistency(SG_m, grad_m, metric)`` over both networks m — how far
      each SmoothGrad map is from its own network's plain gradient (lower is more faithful);
    * ``gradient``: the stability of the plain gradient (sigma = 0), for reference.

    Both are computed on signed maps by default (``reduce=None``), as in the follow-up paper.
    Every sigma uses the same noise seed for both networks, so the Monte-Carlo noise of SmoothGrad
    is common to the pair and does not inflate their difference.
    """
    from xailab.attribution import attribute

    sigmas = [check_positive("sigma", s) for s in sigmas]
    grads = [attribute(m, x, target, method="gradient").detach() for m in (model_a, model_b)]
    out = {"sigma": list(sigmas), "stability": [], "fidelity": [],
           "gradient": float(consistency(grads[0], grads[1], metric, reduce=reduce).mean())}
    for s in sigmas:
        sg = [attribute(m, x, target, method="smoothgrad", sigma=s, n_samples=n_samples, seed=seed).detach()
              for m in (model_a, model_b)]
        out["stability"].append(float(consistency(sg[0], sg[1], metric, reduce=reduce).mean()))
        fid = [consistency(s_m, g_m, metric, reduce=reduce).mean() for s_m, g_m in zip(sg, grads)]
        out["fidelity"].append(float(sum(fid) / 2))
    return out


def bound_inputs(model: nn.Module, x: Tensor, *, reference=None, smoothness: float = 1.0,
                 n_iter: int = 200) -> dict:
    """What the bound calculators need, measured on a trained ``model`` and its training inputs
    ``x``: R_A (Bartlett, ReLU/max-pool 1-Lipschitz), the gradient-map complexity (with
    ``smoothness`` standing in for the activation derivative's Lipschitz constant, which is infinite
    for ReLU), the widest layer W, ``||X||_2`` and n."""
    rows = layer_norms(model, tuple(x.shape[1:]), reference=reference, n_iter=n_iter)
    s = [r["spectral"] for r in rows]
    b = [r["group21"] for r in rows]
    width = 0
    for name, mod, shape in _linear_layers(model, tuple(x.shape[1:])):
        width = max(width, math.prod(shape[1:]), mod.out_features if isinstance(mod, nn.Linear) else 0)
    return dict(R_A=spectral_complexity(s, b), R_grad=gradient_map_complexity(s, b, smoothness=smoothness),
                spectral=s, group21=b, width=int(width), data_norm=float(x.double().norm()), n=int(x.shape[0]))
