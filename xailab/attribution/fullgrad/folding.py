"""Folding eval-mode batch-norm into the convolution (or linear layer) before it.

A network and its folded copy compute the same function; with ``merge_batchnorm=True`` (the
default of :func:`~xailab.attribution.fullgrad.full_gradients`) they also get the same FullGrad
map, because a convolution and the batch-norm after it form one affine layer with one bias term.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from xailab.attribution.fullgrad.decomposition import AFFINE, _bn_scale, _effective_bias
from xailab.hooks import hooks_removed
from xailab.utils import require_eval

__all__ = ["fold_batchnorm"]


def _pairs_by_trace(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """(affine, batch-norm) name pairs where the BN's input *is* the affine layer's output."""
    names = {m: n for n, m in model.named_modules()}
    produced, pairs, counts = {}, [], {}

    def post_hook(module, args, output):
        counts[module] = counts.get(module, 0) + 1
        produced[id(output)] = (module, output)
        if isinstance(module, _BatchNorm) and args:
            src = produced.get(id(args[0]))
            if src is not None and src[1] is args[0] and isinstance(src[0], AFFINE):
                pairs.append((src[0], module))

    with hooks_removed() as handles, torch.no_grad():
        for m in model.modules():
            if isinstance(m, AFFINE + (_BatchNorm,)):
                handles.append(m.register_forward_hook(post_hook))
        model(example)
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
