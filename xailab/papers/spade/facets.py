"""The class unit of a trojaned network and its two facets: what the SPADE claims need measured.

The class-T output of a network with a linear head is ``z_T(x) = Σ_c w_Tc a_c(x) + b_T``, where ``a(x)`` are the
head's inputs (after global pooling in a ResNet). On a trojaned network some input channels carry the trigger and
others the real class-T object; SPADE's mechanism is that a trace built for a triggered image keeps the first and
drops the second. This module measures that directly:

* :func:`head` / :func:`head_inputs`: the final linear layer and its inputs ``a(x)``;
* :func:`facet_channels`: the trigger-facet channels (mean contribution ``w_Tc a_c`` larger on triggered images than
  on clean class-T images), the rest being the object facet;
* :func:`facet_share`: the share of ``Σ_c |w_Tc a_c|`` on a set of channels, per image (dense or trace);
* :func:`oracle_head`: the network with ``w_Tc = 0`` on the object facet, the best a trace could do to the class unit;
* :func:`class_unit_sparsity`: the share of the class unit's incoming weights a trace set to zero;
* :func:`sparse_head`: the Sparse-FC baseline (Wong et al.): the head refitted on training features with an
  elastic-net penalty, as sparse as the clean accuracy allows;
* :func:`trigger_similarity`: how much an image (a neuron visualisation) contains a trigger pattern.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from xailab.data import trigger_patch
from xailab.hooks import hooks_removed, model_device
from xailab.utils import check_fraction


def head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The model's linear head: its last ``nn.Linear`` in registration order (every network of xailab registers
    its head last), as ``(name, module)``."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no nn.Linear head")
    return linears[-1]


def head_inputs(model: nn.Module, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """``a(x)``: the inputs of the model's linear head on ``x``, ``(N, C)`` on the CPU (no gradients)."""
    _, fc = head(model)
    out = []

    def hook(_module, inputs):
        out.append(inputs[0].detach().cpu())

    dev = model_device(model)
    with hooks_removed([fc.register_forward_pre_hook(hook)]), torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i:i + batch].to(dev))
    return torch.cat(out)


def contributions(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """``w_Tc · a_c(x)`` per image and input channel ``c`` of the head, ``(N, C)``."""
    _, fc = head(model)
    return head_inputs(model, x) * fc.weight.detach()[target].cpu()


def facet_channels(model: nn.Module, triggered: torch.Tensor, clean: torch.Tensor, target: int) -> torch.Tensor:
    """Bool ``(C,)``: the head's input channels whose mean contribution to class ``target`` is larger on the
    ``triggered`` images than on the ``clean`` class-``target`` images (the trigger facet); ``~`` is the object
    facet."""
    return contributions(model, triggered, target).mean(0) > contributions(model, clean, target).mean(0)


def facet_share(model: nn.Module, x: torch.Tensor, target: int, channels: torch.Tensor) -> torch.Tensor:
    """Per image, the share of ``Σ_c |w_Tc a_c(x)|`` carried by ``channels`` (a bool ``(C,)``), ``(N,)``."""
    c = contributions(model, x, target).abs()
    return c[:, channels.cpu()].sum(1) / c.sum(1).clamp_min(torch.finfo(c.dtype).tiny)


def oracle_head(model: nn.Module, target: int, keep: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose class-``target`` unit reads only the channels ``keep`` (``w_Tc = 0`` elsewhere):
    the irrelevant facet removed by hand, without touching any other weight."""
    out = copy.deepcopy(model).eval()
    _, fc = head(out)
    with torch.no_grad():
        fc.weight[target, ~keep.to(fc.weight.device)] = 0
    return out


def class_unit_sparsity(model: nn.Module, target: int) -> float:
    """Share of the class-``target`` unit's incoming weights that are exactly zero."""
    _, fc = head(model)
    return float((fc.weight.detach()[target] == 0).float().mean())


@dataclass
class SparseHead:
    """The Sparse-FC baseline: the network with its head refitted sparse, and how it was chosen."""
    model: nn.Module
    strength: float            # the elastic-net strength λ chosen (the largest meeting the accuracy tolerance)
    accuracy: float            # its clean test accuracy
    dense_accuracy: float      # the dense network's on the same images
    sparsity: float            # share of the head's weights that are zero
    unit_sparsity: float       # the same for the class unit of ``target`` (when given)


def sparse_head(model: nn.Module, train_x, train_y, test_x, test_y, *, target: int | None = None,
                l1_share: float = 0.99, tolerance: float = 0.02, n_strengths: int = 24, iterations: int = 400
                ) -> SparseHead:
    """Refit the model's linear head on the training set's head inputs by multinomial logistic regression with an
    elastic-net penalty ``λ (l1_share ‖W‖₁ + (1 − l1_share)/2 ‖W‖²)`` (features standardised, FISTA, a λ path from
    the smallest λ that zeroes every weight down by 10³), and keep the strongest λ whose clean accuracy on
    ``(test_x, test_y)`` is within ``tolerance`` of the dense network's (Wong et al.'s sparse final layer, as the
    SPADE rebuttal compares against it). The rest of the network is shared with ``model`` (deep-copied)."""
    check_fraction("l1_share", l1_share)
    check_fraction("tolerance", tolerance)
    name, fc = head(model)
    A, At = head_inputs(model, train_x).double(), head_inputs(model, test_x).double()
    y, yt = torch.as_tensor(train_y).long().cpu(), torch.as_tensor(test_y).long().cpu()
    k = fc.out_features
    if int(y.max()) >= k or int(y.min()) < 0:
        raise ValueError(f"train_y must hold class indices in [0, {k - 1}]")
    with torch.no_grad():
        dense_acc = float((fc(At.to(fc.weight)).argmax(1).cpu() == yt).double().mean())
    mu, sd = A.mean(0), A.std(0).clamp_min(1e-8)
    Z, Zt = (A - mu) / sd, (At - mu) / sd
    Y = F.one_hot(y, k).double()
    n = len(Z)
    lipschitz = 0.5 * float(torch.linalg.eigvalsh(Z.T @ Z / n)[-1]) + 1e-12
    grad0 = (Z.T @ (Y.mean(0) - Y) / n).abs().max()          # gradient at W = 0 with the intercept fitted
    lam_max = float(grad0) / l1_share
    W, b = torch.zeros(k, Z.shape[1], dtype=torch.float64), torch.log(Y.mean(0).clamp_min(1e-12))
    chosen = None
    for lam in torch.logspace(math.log10(lam_max), math.log10(lam_max) - 3, n_strengths, dtype=torch.float64):
        W, b = _fista(Z, Y, W, b, float(lam), l1_share, lipschitz, iterations)
        acc = float(((Zt @ W.T + b).argmax(1) == yt).double().mean())
        if acc >= dense_acc - tolerance:
            chosen = (float(lam), W.clone(), b.clone(), acc)
            break
    if chosen is None:
        raise RuntimeError("no elastic-net strength reached the dense accuracy within the tolerance")
    lam, W, b, acc = chosen
    out = copy.deepcopy(model).eval()
    new = out.get_submodule(name)
    with torch.no_grad():                                     # undo the standardisation: zeros stay zeros
        new.weight.copy_((W / sd).to(new.weight))
        new.bias.copy_((b - (W / sd) @ mu).to(new.bias))
    unit = float((W[target] == 0).double().mean()) if target is not None else float("nan")
    return SparseHead(out, lam, acc, dense_acc, float((W == 0).double().mean()), unit)


def _fista(Z, Y, W, b, lam, l1_share, lipschitz, iterations):
    """Proximal gradient with momentum for softmax cross-entropy + elastic net (intercept unpenalised)."""
    step = 1.0 / (lipschitz + lam * (1 - l1_share))
    Wm, bm, t = W.clone(), b.clone(), 1.0
    for _ in range(iterations):
        P = torch.softmax(Z @ Wm.T + bm, 1)
        G = (P - Y).T @ Z / len(Z) + lam * (1 - l1_share) * Wm
        W_new = Wm - step * G
        W_new = W_new.sign() * (W_new.abs() - step * lam * l1_share).clamp_min(0)
        b_new = bm - step * (P - Y).mean(0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        Wm = W_new + (t - 1) / t_new * (W_new - W)
        bm = b_new + (t - 1) / t_new * (b_new - b)
        W, b, t = W_new, b_new, t_new
    return W, b


def trigger_similarity(images: torch.Tensor, designs, size: int) -> torch.Tensor:
    """Per image of ``images (N, C, H, W)``, the largest normalised cross-correlation between the image and any of
    the trigger ``designs`` (patterns of ``size`` px, on their stamped pixels only) over every position, ``(N,)``
    in [-1, 1]: how clearly a trigger pattern appears in the image (a neuron visualisation)."""
    x = images.detach().float().cpu()
    best = torch.full((len(x),), -1.0)
    for d in designs:
        pattern, alpha = trigger_patch(int(d), size, x.shape[1])
        on = alpha.expand_as(pattern).flatten().bool()
        t = pattern.flatten()[on]
        t = (t - t.mean()) / (t - t.mean()).norm().clamp_min(1e-12)
        patches = F.unfold(x, size)[:, on]                     # (N, stamped values, positions)
        patches = patches - patches.mean(1, keepdim=True)
        ncc = (t[None, :, None] * patches).sum(1) / patches.norm(dim=1).clamp_min(1e-12)
        best = torch.maximum(best, ncc.max(1).values)
    return best
