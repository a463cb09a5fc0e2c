"""The full-gradient decomposition of Srinivas & Fleuret (NeurIPS 2019) and its completeness check.

For a network ``f`` whose only non-linearities are positively homogeneous (ReLU, leaky ReLU,
max-pooling ...), scaling the input *and every bias* by ``a > 0`` scales the output by ``a``.
Euler's theorem for homogeneous functions then splits the output exactly::

    f(x) = <grad_x f, x>  +  sum over layers l of  <grad_{z_l} f, b_l>

where ``z_l`` is the output of layer ``l`` and ``b_l`` its bias broadcast over the layer's output
(one bias per channel, shared by all positions: the gradient with respect to the bias of *each
output neuron* is ``grad_{z_l} f`` itself).  The input term ``grad_x f * x`` and one bias term
``grad_{z_l} f * b_l`` per layer are the *full gradients*.  Batch-norm in eval mode is an affine
map ``gamma (z - mu) / sqrt(var + eps) + beta``; its implicit bias is
``beta - mu gamma / sqrt(var + eps)``.

Layers are found by identity: forward hooks on the Conv / Linear / BatchNorm *module objects*
capture each call's output, so the order in which modules are defined does not matter, residual
connections and modules called several times are fine (one term per call).

A convolution (or linear layer) feeding a batch-norm directly is *one* affine layer: by default
(``merge_batchnorm=True``) its bias term and the batch-norm's are added into a single term,
named after the convolution.  That term is exactly the bias term of the convolution obtained by
folding the batch-norm into it (:func:`fold_batchnorm`), so the decomposition and the saliency
maps built from it do not change when batch-norm is folded away.  ``merge_batchnorm=False``
keeps two terms, as the authors' code does.

Also here: the aggregation into one pixel map (:func:`postprocess`, :func:`layer_maps`,
:func:`aggregate`; the saliency methods themselves are in :mod:`xailab.attribution.fullgrad`),
:func:`fold_batchnorm`, and the paper's and reviewers' evaluations, :func:`pixel_perturbation`
(least / most salient pixels removed) and :func:`flip_test` (digit flipping).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from xailab.utils import as_targets, preserved_state, require_eval

__all__ = [
    "FullGradients", "full_gradients", "completeness_gap", "unsupported_modules",
    "postprocess", "layer_maps", "aggregate", "fold_batchnorm", "pixel_perturbation", "flip_test",
    "POSTS",
]

#: Layers whose bias (explicit, or implicit for batch-norm) enters the decomposition.
AFFINE = (_ConvNd, nn.Linear)

#: Modules that are not positively homogeneous: the network is then not linear in (input, biases)
#: along rays, the implicit biases of these non-linearities are missing, and the terms do not add
#: up to f(x).  (Kinked-away-from-zero units such as ReLU6 / Hardtanh have such implicit biases too.)
NOT_HOMOGENEOUS = (
    nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softplus, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Mish,
    nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
    nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Threshold, nn.Hardshrink, nn.Softshrink,
    nn.LayerNorm, nn.GroupNorm, _InstanceNorm, nn.LocalResponseNorm, nn.MultiheadAttention,
)

#: Post-processing of each term before aggregation (see :func:`postprocess`).
POSTS = ("abs", "signed", "positive", "negative")


@dataclass
class FullGradients:
    """The full-gradient decomposition of a batch.

    ``input``: ``grad_x f * x``, shaped like ``x``.  ``bias``: layer name -> ``grad_z f * b``,
    shaped like that layer's output (in call order; a module called k times gives ``name#0`` ...
    ``name#k-1``).  ``output``: the explained logits ``f(x)``, shape ``(N,)``.  ``gradients``:
    layer name -> ``grad_z f`` (only with ``keep_gradients=True``; used by simple FullGrad).
    ``unsupported``: modules that break completeness (see :data:`NOT_HOMOGENEOUS`).
    """

    input: Tensor
    bias: dict[str, Tensor]
    output: Tensor
    gradients: dict[str, Tensor] = field(default_factory=dict)
    unsupported: tuple[str, ...] = ()

    def total(self) -> Tensor:
        """Sum of every term per sample, shape ``(N,)``: equals ``output`` when complete."""
        s = self.input.flatten(1).sum(1)
        for term in self.bias.values():
            s = s + term.flatten(1).sum(1)
        return s

    def input_share(self) -> Tensor:
        """What the input-gradient alone explains: ``sum(grad_x f * x)`` per sample."""
        return self.input.flatten(1).sum(1)


def unsupported_modules(model: nn.Module) -> list[str]:
    """Names (and types) of the modules for which the decomposition is not complete."""
    return [f"{name or '<model>'} ({type(m).__name__})" for name, m in model.named_modules()
            if isinstance(m, NOT_HOMOGENEOUS)]


def _effective_bias(module: nn.Module) -> Tensor | None:
    """The bias a layer adds to every output neuron, detached; None when it has none."""
    if isinstance(module, _BatchNorm):
        if module.running_mean is None or module.running_var is None:
            raise ValueError(f"{type(module).__name__} without running statistics "
                             "(track_running_stats=False) normalises with batch statistics even in eval "
                             "mode; the full-gradient decomposition needs a fixed affine map")
        scale = torch.rsqrt(module.running_var + module.eps)
        shift = -module.running_mean * scale
        if module.affine:
            shift = shift * module.weight + module.bias
        return shift.detach()
    if isinstance(module, AFFINE) and module.bias is not None:
        return module.bias.detach()
    return None


def _bn_scale(module: _BatchNorm) -> Tensor:
    """The per-channel slope of an eval-mode batch-norm, gamma / sqrt(var + eps)."""
    scale = torch.rsqrt(module.running_var + module.eps)
    return (scale * module.weight if module.affine else scale).detach()


def _broadcast(bias: Tensor, module: nn.Module, like: Tensor) -> Tensor:
    """Shape a per-unit bias to broadcast over a layer output: last dim for Linear, dim 1 else."""
    if isinstance(module, nn.Linear):
        return bias.reshape([1] * (like.ndim - 1) + [-1])
    return bias.reshape([1, -1] + [1] * (like.ndim - 2))


def _bias_carriers(model: nn.Module) -> dict[nn.Module, str]:
    """Bias-carrying modules -> their qualified names (BatchNorm always carries an implicit bias)."""
    carriers = {}
    for name, m in model.named_modules():
        if isinstance(m, (_BatchNorm,) + AFFINE) and m not in carriers:
            carriers[m] = name or "<model>"
    if not any(isinstance(m, _BatchNorm) or getattr(m, "bias", None) is not None for m in carriers):
        raise ValueError("model has no bias-carrying layers (Conv/Linear with a bias, or BatchNorm): "
                         "the full-gradient decomposition reduces to input x gradient; use "
                         "method='input_x_gradient' instead")
    return carriers


@dataclass
class _Call:
    module: nn.Module
    name: str
    output: Tensor              # the tensor the module returned (kept out of in-place edits)
    passed_on: Tensor           # the clone handed to the rest of the network
    feeds_bn_of: int | None = None   # for a BN: index of the affine call whose output it normalises


def _name_calls(calls: list[_Call]) -> list[str]:
    """``name`` for a module called once, ``name#k`` for its k-th call otherwise."""
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.name] = counts.get(c.name, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for c in calls:
        k = seen.get(c.name, 0)
        seen[c.name] = k + 1
        names.append(c.name if counts[c.name] == 1 else f"{c.name}#{k}")
    return names


def full_gradients(model: nn.Module, x: Tensor, target, *, merge_batchnorm: bool = True,
                   keep_gradients: bool = False) -> FullGradients:
    """Decompose the ``target`` logit of ``model`` at ``x`` into its full gradients.

    ``x``: a batch ``(N, ...)``; ``target``: an int or N class indices.  The model must be in eval
    mode (batch statistics would make the decomposition depend on the batch) and have at least one
    bias-carrying layer.  The model is not modified: hooks are removed and ``requires_grad`` flags
    restored on every path, errors included.
    """
    require_eval(model, "full_gradients (batch-norm must use its running statistics)")
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError(f"x must be a batch tensor (N, ...), got {type(x).__name__} "
                         f"of shape {tuple(getattr(x, 'shape', ()))}")
    carriers = _bias_carriers(model)
    calls: list[_Call] = []
    by_tensor: dict[int, int] = {}      # id(passed_on clone) -> call index (for conv -> BN pairs)

    def hook(module, args, output):
        if not isinstance(output, Tensor):
            raise TypeError(f"{carriers[module]} returned {type(output).__name__}, expected a tensor")
        call = _Call(module, carriers[module], output, output.clone())
        if merge_batchnorm and isinstance(module, _BatchNorm) and args and isinstance(args[0], Tensor):
            src = by_tensor.get(id(args[0]))
            if src is not None and calls[src].passed_on is args[0]:
                call.feeds_bn_of = src
        by_tensor[id(call.passed_on)] = len(calls)
        calls.append(call)
        # Hand a copy on, so that in-place ops downstream (ReLU(inplace=True), `out += identity`)
        # never rewrite the tensor whose gradient we ask for.
        return call.passed_on

    handles = []
    try:
        with preserved_state(model):
            for p in model.parameters():
                p.requires_grad_(False)
            for m in carriers:
                handles.append(m.register_forward_hook(hook))
            xr = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = model(xr)
                if out.ndim != 2:
                    raise ValueError(f"model output must be logits (N, K), got shape {tuple(out.shape)}")
                t = as_targets(target, x.shape[0], out.shape[1], device=out.device)
                f = out.gather(1, t[:, None]).squeeze(1)
                live = [c.output for c in calls if c.output.requires_grad]   # others: constants
                grads = iter(torch.autograd.grad(f.sum(), [xr] + live, allow_unused=True))
                gx = next(grads)
                gz = [next(grads) if c.output.requires_grad else None for c in calls]
    finally:
        for h in handles:
            h.remove()
    gx = gx if gx is not None else torch.zeros_like(x)
    gz = [g if g is not None else torch.zeros_like(c.output) for g, c in zip(gz, calls)]
    return _assemble(x, gx, gz, calls, f.detach(), keep_gradients, tuple(unsupported_modules(model)))


def _assemble(x, gx, gz, calls, f, keep_gradients, unsupported) -> FullGradients:
    """Multiply layer gradients by biases, merging each BN's term into the layer it normalises."""
    names = _name_calls(calls)
    merged_into = {c.feeds_bn_of: i for i, c in enumerate(calls) if c.feeds_bn_of is not None}
    bias, gradients = {}, {}
    for i, c in enumerate(calls):
        if c.feeds_bn_of is not None:
            continue                                    # added to its affine layer's term below
        terms, b = [], _effective_bias(c.module)
        if b is not None:
            terms.append(gz[i] * _broadcast(b, c.module, gz[i]))
        grad = gz[i]
        j = merged_into.get(i)
        if j is not None:
            bn = calls[j].module
            terms.append(gz[j] * _broadcast(_effective_bias(bn), bn, gz[j]))
            grad = gz[j]                                # the affine pair's output is the BN's
        if terms:
            bias[names[i]] = terms[0] if len(terms) == 1 else terms[0] + terms[1]
            if keep_gradients:
                gradients[names[i]] = grad.detach()
    return FullGradients(input=(gx * x).detach(), bias={k: v.detach() for k, v in bias.items()},
                         output=f, gradients=gradients, unsupported=unsupported)


def completeness_gap(model: nn.Module, x: Tensor, target, *, merge_batchnorm: bool = True,
                     strict: bool = True) -> Tensor:
    """Relative completeness error ``|sum of all full-gradient terms - f(x)| / |f(x)|`` per sample.

    Exact (up to rounding) for networks that are positively homogeneous in (input, biases): affine
    layers, batch-norm in eval mode, ReLU / leaky ReLU / PReLU, max- and average-pooling, identity,
    flatten, dropout in eval mode, residual sums.  With ``strict=True`` (default) a model containing a
    module that breaks this (sigmoid, tanh, GELU, softplus, layer-norm ...) raises a ValueError
    naming it, rather than returning a number that only measures the missing implicit biases.
    Functional non-linearities called inside ``forward`` cannot be seen; they show up as a large gap.
    """
    bad = unsupported_modules(model)
    if strict and bad:
        raise ValueError("completeness holds only for piecewise-linear networks through zero "
                         "(ReLU, leaky ReLU, max/avg-pool, eval batch-norm); this model has "
                         f"{', '.join(bad)}, whose implicit biases the decomposition does not capture. "
                         "Pass strict=False to measure the gap anyway.")
    fg = full_gradients(model, x, target, merge_batchnorm=merge_batchnorm)
    tiny = torch.finfo(fg.output.dtype).tiny
    return (fg.total() - fg.output).abs() / fg.output.abs().clamp_min(tiny)


# ---------------------------------------------------------------------------------------------
# Aggregation into a saliency map
# ---------------------------------------------------------------------------------------------

def postprocess(term: Tensor, post: str = "abs", normalize: str | None = None) -> Tensor:
    """Post-process one term ``(N, C, ...)`` and sum it over channels: ``(N, 1, ...)``.

    ``post``: ``"abs"`` (the paper), ``"signed"``, ``"positive"`` (positive part) or ``"negative"``
    (magnitude of the negative part).  ``normalize``: ``"minmax"`` rescales the whole term of each
    sample (all channels and positions together, as the authors' code does) to [0, 1];
    ``"maxabs"`` divides by the largest magnitude, keeping zero and signs (the default for
    ``"signed"``, where min-max would move zero); ``"none"`` leaves it.  Default: ``"minmax"``
    except for ``"signed"``.

    Both normalisations are one affine map ``a * t + c`` per sample, with scalars ``a, c`` taken
    over all channels, so it is applied to the channel sum as ``a * sum_c t + C * c``: identical to
    normalising every channel and then summing, without the per-channel tensor.
    """
    if post not in POSTS:
        raise ValueError(f"post must be one of {POSTS}, got {post!r}")
    normalize = normalize or ("maxabs" if post == "signed" else "minmax")
    if normalize not in ("minmax", "maxabs", "none"):
        raise ValueError(f"normalize must be 'minmax', 'maxabs' or 'none', got {normalize!r}")
    if term.ndim < 2:
        raise ValueError(f"term must be (N, C, ...), got shape {tuple(term.shape)}")
    p = {"abs": term.abs, "signed": lambda: term, "positive": lambda: term.clamp_min(0),
         "negative": lambda: (-term).clamp_min(0)}[post]()
    s = p.sum(1, keepdim=True)
    if normalize == "none":
        return s
    flat = p.flatten(1)
    view = [-1] + [1] * (s.ndim - 1)
    tiny = torch.finfo(p.dtype).tiny
    if normalize == "minmax":
        lo, hi = flat.amin(1), flat.amax(1)
        rng = hi - lo
        out = (s - p.shape[1] * lo.view(view)) / rng.clamp_min(tiny).view(view)
        return torch.where(rng.view(view) > 0, out, torch.zeros_like(out))
    m = flat.abs().amax(1).view(view)
    return s / m.clamp_min(tiny)


def _resize(m: Tensor, size) -> Tensor:
    """Bilinear upsampling of a (N, 1, h, w) map to ``size`` (a no-op when sizes agree)."""
    if tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)


def layer_maps(terms: FullGradients | dict[str, Tensor], x_shape, *, post: str = "abs",
               normalize: str | None = None, include_input: bool = True) -> dict[str, Tensor]:
    """One post-processed pixel map per term, upsampled to the input's size: name -> (N, 1, H, W).

    ``terms``: a :class:`FullGradients` (its ``input`` term is called ``"input"``) or a plain dict
    name -> tensor (e.g. ``FullGradients.gradients`` for simple FullGrad).  Terms without the
    input's spatial layout (outputs of Linear layers, pooled vectors) have no place in the image
    and are skipped, as in the paper.  For tabular inputs ``(N, D)`` only the input term is mapped,
    element-wise, shape ``(N, D)``.
    """
    x_shape = tuple(x_shape)
    if isinstance(terms, FullGradients):
        named = ({"input": terms.input} if include_input else {}) | terms.bias
    else:
        named = dict(terms)
    maps = {}
    if len(x_shape) == 2:                               # tabular: element-wise input term only
        if "input" in named:
            p = postprocess(named["input"][:, None, :], post, normalize)
            maps["input"] = p[:, 0]
        return maps
    if len(x_shape) != 4:
        raise ValueError(f"x must be images (N, C, H, W) or tabular (N, D), got shape {x_shape}")
    for name, t in named.items():
        if t.ndim == 4:
            maps[name] = _resize(postprocess(t, post, normalize), x_shape[-2:])
    return maps


def aggregate(terms: FullGradients | dict[str, Tensor], x_shape, *, post: str = "abs",
              normalize: str | None = None, include_input: bool = True) -> Tensor:
    """The FullGrad saliency: the sum of :func:`layer_maps`, ``(N, 1, H, W)`` (``(N, D)`` tabular)."""
    maps = layer_maps(terms, x_shape, post=post, normalize=normalize, include_input=include_input)
    if not maps:
        raise ValueError("no term has the input's spatial layout; nothing to aggregate")
    return torch.stack(list(maps.values())).sum(0)


# ---------------------------------------------------------------------------------------------
# Folding batch-norm into the preceding layer
# ---------------------------------------------------------------------------------------------

def _pairs_by_trace(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """(affine, batch-norm) name pairs where the BN's input *is* the affine layer's output."""
    names = {m: n for n, m in model.named_modules()}
    produced, pairs, counts = {}, [], {}
    handles = []

    def post_hook(module, args, output):
        counts[module] = counts.get(module, 0) + 1
        produced[id(output)] = (module, output)
        if isinstance(module, _BatchNorm) and args:
            src = produced.get(id(args[0]))
            if src is not None and src[1] is args[0] and isinstance(src[0], AFFINE):
                pairs.append((src[0], module))

    try:
        for m in model.modules():
            if isinstance(m, AFFINE + (_BatchNorm,)):
                handles.append(m.register_forward_hook(post_hook))
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return [(names[a], names[b]) for a, b in pairs if counts[a] == 1 and counts[b] == 1]


def _pairs_by_order(model: nn.Module) -> list[tuple[str, str]]:
    """Fallback without an example: an affine child registered right before a BN child."""
    pairs = []
    for parent_name, parent in model.named_modules():
        kids = list(parent.named_children())
        for (na, a), (nb, b) in zip(kids, kids[1:]):
            if isinstance(a, AFFINE) and isinstance(b, _BatchNorm):
                prefix = f"{parent_name}." if parent_name else ""
                pairs.append((prefix + na, prefix + nb))
    return pairs


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) with every batch-norm folded into the Conv/Linear before it.

    ``W' = W * s``, ``b' = (b - mu) * s + beta`` with ``s = gamma / sqrt(var + eps)`` per output
    channel; the batch-norm becomes ``nn.Identity``.  With an ``example`` batch, pairs are found by
    tracing a forward pass (the BN's input is the layer's output tensor) and the copy's outputs are
    checked against the original's; without one, an affine child registered right before a BN
    child is taken to feed it (true for ``nn.Sequential`` and torchvision's ResNets).  The original
    model is not modified.
    """
    require_eval(model, "fold_batchnorm (folding uses the running statistics)")
    folded = copy.deepcopy(model)
    pairs = _pairs_by_trace(folded, example) if example is not None else _pairs_by_order(folded)
    for lin_name, bn_name in pairs:
        lin, bn = folded.get_submodule(lin_name), folded.get_submodule(bn_name)
        if isinstance(lin, nn.modules.conv._ConvTransposeNd):
            continue                                   # output channels are not dim 0 there
        if torch.nn.utils.parametrize.is_parametrized(lin) or hasattr(lin, "weight_orig"):
            raise ValueError(f"cannot fold {bn_name} into {lin_name}: its weight is re-parametrised "
                             "(e.g. spectral norm)")
        _effective_bias(bn)                            # raises without running statistics
        s = _bn_scale(bn)
        lin.weight.mul_(s.reshape([-1] + [1] * (lin.weight.ndim - 1)))
        b = lin.bias if lin.bias is not None else torch.zeros_like(bn.running_mean)
        new_bias = (b - bn.running_mean) * s + (bn.bias if bn.affine else 0.0)
        lin.bias = nn.Parameter(new_bias.detach().clone(), requires_grad=lin.weight.requires_grad)
        _set_module(folded, bn_name, nn.Identity())
    folded.eval()
    if example is not None:
        ref, new = model(example), folded(example)
        scale = ref.abs().max().clamp_min(1.0)
        if not torch.allclose(ref, new, rtol=1e-4, atol=1e-4 * float(scale)):
            raise RuntimeError("folding batch-norm changed the model's outputs (largest difference "
                               f"{(ref - new).abs().max():.3g}); a folded layer's output must feed "
                               "something besides its batch-norm")
    return folded


# ---------------------------------------------------------------------------------------------
# The paper's evaluations
# ---------------------------------------------------------------------------------------------

def _pixel_scores(saliency: Tensor, x: Tensor, reduce: str) -> Tensor:
    """Pixel maps ``(N, 1, H, W)`` from a saliency shaped like ``x`` or with one channel."""
    if saliency.ndim == 3:
        saliency = saliency[:, None]
    if saliency.shape[0] != x.shape[0] or saliency.shape[2:] != x.shape[2:]:
        raise ValueError(f"saliency must be shaped like x {tuple(x.shape)} or (N, 1, H, W), "
                         f"got {tuple(saliency.shape)}")
    if saliency.shape[1] > 1:
        from xailab.attribution import reduce_channels

        saliency = reduce_channels(saliency, how=reduce)
    return saliency


def _fill_value(x: Tensor, fill, blur_sigma: float):
    """What removed pixels become: each image's channel means, its blurred self, or zeros."""
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    if fill == "blur":
        from torchvision.transforms.functional import gaussian_blur

        half = min(int(round(3 * blur_sigma)), min(x.shape[-2:]) - 1)   # reflect padding < image size
        k = 2 * half + 1
        return gaussian_blur(x, [k, k], [blur_sigma, blur_sigma])
    if fill == "zero":
        return torch.zeros_like(x)
    raise ValueError(f"fill must be 'mean', 'blur' or 'zero', got {fill!r}")


@torch.no_grad()
def pixel_perturbation(model: nn.Module, x: Tensor, saliency: Tensor, target, fractions=(0.1, 0.3, 0.5),
                       *, most_salient: bool = False, fill: str = "mean", blur_sigma: float = 2.0,
                       reduce: str = "abs-sum") -> Tensor:
    """The paper's pixel-perturbation test: replace the k % *least* salient pixels of each image
    (``most_salient=True``: the most salient) and measure ``|f(x') - f(x)| / |f(x)|``, the relative
    change of the ``target`` logit.  Removing unimportant pixels should change little: lower is
    better for least-salient removal, higher for most-salient removal.

    ``saliency``: ``(N, 1, H, W)`` pixel maps, or shaped like ``x`` (reduced over channels with
    ``reduce``; the choice is the caller's).  ``fill``: ``"mean"`` (each image's channel means),
    ``"blur"`` (a Gaussian blur of the image, std ``blur_sigma`` px: no sharp edges) or ``"zero"``.
    Pixels are ranked with :func:`xailab.roar.removal_mask` (exact counts, deterministic ties).
    Returns ``(len(fractions), N)``.
    """
    from xailab.roar import replace_features

    require_eval(model, "pixel_perturbation")
    scores = _pixel_scores(saliency, x, reduce)
    value = _fill_value(x, fill, blur_sigma)
    t = as_targets(target, x.shape[0], device=x.device)
    base = model(x).gather(1, t[:, None]).squeeze(1)
    rows = []
    for k in fractions:
        xk = replace_features(x, scores, k, top=most_salient, fill_value=value)
        out = model(xk).gather(1, t[:, None]).squeeze(1)
        rows.append((out - base).abs() / base.abs().clamp_min(torch.finfo(base.dtype).tiny))
    return torch.stack(rows)


@torch.no_grad()
def flip_test(model: nn.Module, x: Tensor, map_a: Tensor, map_b: Tensor | None, a, b,
              fractions=(0.05, 0.1, 0.2), *, fill: float = 0.0) -> Tensor:
    """Digit-flipping test (Shrikumar et al. 2017): erase the pixels that most support class ``a``
    over class ``b`` and measure how far the logit difference ``f_a - f_b`` falls.

    Pixels are ranked by ``map_a - map_b`` (``map_b=None``: by ``map_a`` alone), both ``(N, 1, H, W)``
    or shaped like ``x`` (channels summed, signs kept); the top k % are set to ``fill`` (the digits'
    background).  Returns the drop ``(f_a - f_b)(x) - (f_a - f_b)(x')`` per fraction and image,
    ``(len(fractions), N)``: larger means the map told which pixels make an ``a`` rather than a ``b``.
    """
    from xailab.roar import replace_features

    require_eval(model, "flip_test")
    score = _pixel_scores(map_a, x, "sum") - (0 if map_b is None else _pixel_scores(map_b, x, "sum"))
    ta = as_targets(a, x.shape[0], device=x.device)
    tb = as_targets(b, x.shape[0], device=x.device)

    def margin(z):
        out = model(z)
        return out.gather(1, ta[:, None]).squeeze(1) - out.gather(1, tb[:, None]).squeeze(1)

    m0 = margin(x)
    return torch.stack([m0 - margin(replace_features(x, score, k, top=True, reduce="sum", fill_value=fill))
                        for k in fractions])
