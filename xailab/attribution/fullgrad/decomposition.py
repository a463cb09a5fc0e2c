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

Other element-wise activations (tanh, sigmoid, GELU, SiLU, softplus ... :data:`ELEMENTWISE`) are not
homogeneous, but linearised at their input ``z`` each becomes ``sigma'(z) z + c`` with the *implicit
bias* ``c = sigma(z) - sigma'(z) z``. The linearised network has the same value and the same
gradients at ``x`` and is homogeneous in (input, explicit and implicit biases), so adding one term
``grad_a f * c`` per such activation (``a`` its output) keeps the split exact.

A convolution (or linear layer) feeding a batch-norm directly is *one* affine layer: by default
(``merge_batchnorm=True``) its bias term and the batch-norm's are added into a single term,
named after the convolution.  That term is exactly the bias term of the convolution obtained by
folding the batch-norm into it (:func:`xailab.attribution.fullgrad.fold_batchnorm`), so the
decomposition and the saliency maps built from it do not change when batch-norm is folded away.
``merge_batchnorm=False`` keeps two terms, as the authors' code does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from xailab.hooks import hooks_removed
from xailab.utils import as_targets, preserved_state, require_eval

__all__ = ["AFFINE", "ELEMENTWISE", "NOT_HOMOGENEOUS", "FullGradients", "full_gradients", "decomposition_gap",
           "unsupported_modules"]

#: Layers whose bias (explicit, or implicit for batch-norm) enters the decomposition.
AFFINE = (_ConvNd, nn.Linear)

#: Element-wise non-linearities that are not positively homogeneous. Linearised at its input ``z``,
#: each is ``sigma'(z) z + (sigma(z) - sigma'(z) z)``: a slope the gradient already carries plus an
#: *implicit bias* ``sigma(z) - sigma'(z) z`` added after it, which enters the decomposition like any
#: bias (the paper's treatment of general activations). ReLU, leaky ReLU and PReLU have none.
ELEMENTWISE = (
    nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softplus, nn.ELU, nn.SELU, nn.CELU, nn.SiLU, nn.Mish,
    nn.Hardtanh, nn.ReLU6, nn.Hardsigmoid, nn.Hardswish, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink,
    nn.Threshold, nn.Hardshrink, nn.Softshrink,
)

#: Modules the decomposition cannot express: not element-wise and not positively homogeneous
#: (each output mixes several inputs non-linearly), so the terms do not add up to f(x).
NOT_HOMOGENEOUS = (
    nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.LayerNorm, nn.GroupNorm, _InstanceNorm,
    nn.LocalResponseNorm, nn.MultiheadAttention,
)

@dataclass
class FullGradients:
    """The full-gradient decomposition of a batch.

    ``input``: ``grad_x f * x``, shaped like ``x``.  ``bias``: layer name -> ``grad_z f * b``,
    shaped like that layer's output (in call order; a module called k times gives ``name#0`` ...
    ``name#k-1``); an element-wise non-linearity's implicit bias term is ``"<name> (implicit)"``.
    ``output``: the explained logits ``f(x)``, shape ``(N,)``.  ``gradients``:
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
    activations = {m: name or "<model>" for name, m in model.named_modules() if isinstance(m, ELEMENTWISE)}
    calls: list[_Call] = []
    act_calls: list[_Call] = []          # element-wise activations: output, and the input in `inputs`
    inputs: list[Tensor] = []
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

    def act_input(module, args):
        inputs.append(args[0].detach().clone())        # before an in-place activation overwrites it

    def act_output(module, args, output):
        call = _Call(module, activations[module], output, output.clone())
        act_calls.append(call)
        return call.passed_on

    with hooks_removed() as handles:
        with preserved_state(model):
            for p in model.parameters():
                p.requires_grad_(False)
            for m in carriers:
                handles.append(m.register_forward_hook(hook))
            for m in activations:
                handles.append(m.register_forward_pre_hook(act_input))
                handles.append(m.register_forward_hook(act_output))
            xr = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                out = model(xr)
                if out.ndim != 2:
                    raise ValueError(f"model output must be logits (N, K), got shape {tuple(out.shape)}")
                t = as_targets(target, x.shape[0], out.shape[1], device=out.device)
                f = out.gather(1, t[:, None]).squeeze(1)
                every = calls + act_calls
                live = [c.output for c in every if c.output.requires_grad]   # others: constants
                grads = iter(torch.autograd.grad(f.sum(), [xr] + live, allow_unused=True))
                gx = next(grads)
                gz = [next(grads) if c.output.requires_grad else None for c in every]
    gx = gx if gx is not None else torch.zeros_like(x)
    gz = [g if g is not None else torch.zeros_like(c.output) for g, c in zip(gz, calls + act_calls)]
    fg = _assemble(x, gx, gz[:len(calls)], calls, f.detach(), keep_gradients, tuple(unsupported_modules(model)))
    names = _name_calls(act_calls)
    for c, z, g, name in zip(act_calls, inputs, gz[len(calls):], names):
        fg.bias[f"{name} (implicit)"] = (g * _implicit_bias(c.module, z)).detach()
    return fg


def _implicit_bias(module: nn.Module, z: Tensor) -> Tensor:
    """``sigma(z) - sigma'(z) z`` of an element-wise activation at its input ``z`` (the derivative
    by autograd: for an element-wise map, the gradient of the sum is the derivative itself)."""
    zz = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = module(zz.clone())                          # a clone: an in-place activation must not touch zz
        (d,) = torch.autograd.grad(y.sum(), zz)
    return (y - d * zz).detach()


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


def decomposition_gap(model: nn.Module, x: Tensor, target, *, merge_batchnorm: bool = True,
                     strict: bool = True) -> Tensor:
    """Relative completeness error ``|sum of all full-gradient terms - f(x)| / |f(x)|`` per sample.

    Exact (up to rounding) for networks of affine layers, batch-norm in eval mode, ReLU / leaky ReLU /
    PReLU, max- and average-pooling, identity, flatten, dropout in eval mode, residual sums, and any
    element-wise activation *module* (:data:`ELEMENTWISE`: tanh, sigmoid, GELU, SiLU, softplus ...,
    through their implicit biases).  With ``strict=True`` (default) a model containing a module the
    decomposition cannot express (softmax, layer-norm, attention ...) raises a ValueError naming it,
    rather than returning a number that only measures what is missing.  Functional non-linearities
    called inside ``forward`` (``torch.tanh``) cannot be seen; they show up as a large gap.
    """
    bad = unsupported_modules(model)
    if strict and bad:
        raise ValueError("completeness holds for affine layers, eval batch-norm, pooling and element-wise "
                         f"activations; this model has {', '.join(bad)}, which mix several inputs non-linearly. "
                         "Pass strict=False to measure the gap anyway.")
    fg = full_gradients(model, x, target, merge_batchnorm=merge_batchnorm)
    tiny = torch.finfo(fg.output.dtype).tiny
    return (fg.total() - fg.output).abs() / fg.output.abs().clamp_min(tiny)
