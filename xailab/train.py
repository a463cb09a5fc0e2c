"""Training and inference: ``fit`` / ``evaluate`` / ``predict`` for one model, ``fit_many`` for K.

Conventions shared by :func:`fit` and :func:`fit_many` (they must agree, so that training K
models at once gives the models one would get one by one):

- optimiser: ``torch.optim.Adam(lr, weight_decay)`` (default) or ``torch.optim.SGD(lr, momentum,
  weight_decay)``; the learning rate constant or, with ``lr_schedule="cosine"``, decayed to 0 over
  the run; loss: mean cross-entropy per batch;
- order: one ``torch.Generator`` seeded with ``seed`` per model; each epoch draws
  ``torch.randperm(N, generator=g)`` and walks it in batches of ``batch_size`` (the last batch
  may be smaller; nothing is dropped); ``steps=`` trains for that many batches instead of
  ``epochs`` passes (the last epoch may stop part-way);
- the model is moved to ``device`` and returned in eval mode.

``data`` is anything with tensor fields ``x`` (N, ...) and ``y`` (N,) class indices, such as
``xailab.data.Data``.
"""
from __future__ import annotations

import copy
import itertools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from xailab.hooks import hooks_removed, model_device
from xailab.models import MLP, SmallCNN
from xailab.utils import check_positive, preserved_state, resolve_device, seeded_generator

__all__ = ["fit", "fit_many", "evaluate", "predict"]


def _check_data(data, name: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` tensors of ``data``, with a clear error when they do not fit together."""
    x, y = getattr(data, "x", None), getattr(data, "y", None)
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} must have tensor fields .x and .y (e.g. xailab.data.Data), "
                        f"got {type(data).__name__}")
    if y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}.x and {name}.y must hold the same number of samples with y of shape "
                         f"(N,), got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError(f"{name} is empty")
    return x, y


def _check_hyper(epochs, lr, batch_size, weight_decay) -> tuple[int, float, int, float]:
    epochs = check_positive("epochs", epochs, integer=True)
    lr = check_positive("lr", lr)
    batch_size = check_positive("batch_size", batch_size, integer=True)
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    return epochs, lr, batch_size, float(weight_decay)


OPTIMISERS = ("adam", "sgd")
LR_SCHEDULES = (None, "cosine")


def _check_recipe(optimiser: str, momentum: float, lr_schedule, steps, warmup: int = 0) -> int | None:
    if optimiser not in OPTIMISERS:
        raise ValueError(f"optimiser must be one of {OPTIMISERS}, got {optimiser!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    if int(warmup) != warmup or warmup < 0:
        raise ValueError(f"warmup must be a number of steps >= 0, got {warmup!r}")
    return None if steps is None else int(check_positive("steps", steps, integer=True))


def _optimiser(params, optimiser: str, lr: float, momentum: float, weight_decay: float):
    if optimiser == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _plan(n: int, batch_size: int, epochs: int, steps: int | None) -> tuple[int, int]:
    """(epochs to loop over, total optimisation steps) for ``epochs`` passes or ``steps`` batches."""
    per_epoch = math.ceil(n / batch_size)
    if steps is None:
        return epochs, epochs * per_epoch
    return math.ceil(steps / per_epoch), steps


def _set_lr(opt, lr: float, lr_schedule, step: int, total: int, warmup: int = 0) -> None:
    """The learning rate of ``step``: a linear warm-up over the first ``warmup`` steps, then constant or cosine."""
    if step < warmup:
        rate = lr * (step + 1) / warmup
    elif lr_schedule == "cosine":
        rate = 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    else:
        rate = lr
    for group in opt.param_groups:
        group["lr"] = rate


def _autocast(enabled: bool, dev: torch.device):
    """bf16 autocast on the CPU (oneDNN's bf16 kernels) or the GPU when ``enabled``; a no-op otherwise."""
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bool(enabled))


def _epoch_bar(epochs: int, enabled: bool, desc: str):
    """A tqdm bar over epochs (we need the bar object itself to show loss and accuracy)."""
    from tqdm.auto import tqdm

    return tqdm(range(epochs), desc=desc, disable=not enabled, leave=False)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Index tensors of one shuffled epoch: the convention shared by ``fit`` and ``fit_many``."""
    perm = torch.randperm(n, generator=generator)
    return perm.split(batch_size)


def fit(model: nn.Module, data, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
        weight_decay: float = 0.0, seed: int = 0, device="auto", progress: bool = True,
        optimiser: str = "adam", momentum: float = 0.9, lr_schedule: str | None = None,
        steps: int | None = None, warmup: int = 0, autocast: bool = False) -> nn.Module:
    """Train ``model`` on ``data`` with cross-entropy; return it in eval mode on ``device``.

    ``optimiser``: ``"adam"`` or ``"sgd"`` (with ``momentum``); ``lr_schedule="cosine"`` decays the
    learning rate to 0 over the run, after a linear warm-up of ``warmup`` steps; ``steps`` trains for
    that many batches instead of ``epochs`` passes; ``autocast=True`` computes the forward pass in
    bfloat16 (weights and optimiser stay float32). ``seed`` fixes the shuffling order (a local generator; the global RNG is untouched).
    The model is trained in place (moved to ``device``) and also returned. The bar shows the last
    epoch's mean training loss and accuracy.
    """
    epochs, lr, batch_size, weight_decay = _check_hyper(epochs, lr, batch_size, weight_decay)
    steps = _check_recipe(optimiser, momentum, lr_schedule, steps, warmup)
    x, y = _check_data(data)
    dev = resolve_device(device)
    model.to(dev).train()
    opt = _optimiser(model.parameters(), optimiser, lr, momentum, weight_decay)
    g = seeded_generator(seed)
    n = len(y)
    epochs, total = _plan(n, batch_size, epochs, steps)
    layout = _layout(model, x[:1].to(dev))
    step = 0
    bar = _epoch_bar(epochs, progress, "fit")
    for _ in bar:
        seen, total_loss, correct = 0, 0.0, 0
        for idx in _batches(n, batch_size, g):
            if step == total:
                break
            _set_lr(opt, lr, lr_schedule, step, total, warmup)
            xb, yb = x[idx].to(dev).contiguous(memory_format=layout), y[idx].to(dev)
            with _autocast(autocast, dev):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx)
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
        bar.set_postfix(loss=f"{total_loss / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
    bar.close()
    return model.eval()


def _layout(model: nn.Module, x: torch.Tensor) -> torch.memory_format:
    """Channels-last for image batches on a CPU when ``model`` takes that layout (small convolutions train
    1.5–2x faster; values change only by float rounding), else the ordinary layout."""
    if x.ndim != 4 or x.device.type != "cpu":
        return torch.contiguous_format
    try:
        with torch.no_grad(), preserved_state(model):
            model.eval()(x.contiguous(memory_format=torch.channels_last))
    except RuntimeError:   # e.g. a .view() of its activations
        return torch.contiguous_format
    return torch.channels_last


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device="auto") -> torch.Tensor:
    """Logits ``(N, num_classes)`` of ``model`` on ``x``, computed in eval mode in batches without
    gradients; the model's train/eval modes are restored afterwards.

    ``device="auto"`` computes where the model already is; another device moves the model there
    (as :func:`fit` does). The logits are returned on ``x``'s device.
    """
    batch_size = check_positive("batch_size", batch_size, integer=True)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if device is None or device == "auto":
        dev = model_device(model)
    else:
        dev = resolve_device(device)
        model.to(dev)
    with preserved_state(model):
        model.eval()
        out = [model(xb.to(dev)).to(x.device) for xb in x.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0, 0, device=x.device)


def evaluate(model: nn.Module, data, *, batch_size: int = 512, device="auto") -> float:
    """Accuracy of ``model`` on ``data`` (a fraction in [0, 1]); see :func:`predict` for ``device``."""
    x, y = _check_data(data)
    logits = predict(model, x, batch_size=batch_size, device=device)
    return float((logits.argmax(1) == y.to(logits.device)).float().mean())


def _check_many(datasets, seeds) -> tuple[list, list[int]]:
    """One dataset per model (a shared one repeated) and the seeds as ints, with clear errors."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds must name at least one model, got an empty sequence")
    if hasattr(datasets, "x") and hasattr(datasets, "y"):
        datasets = [datasets] * len(seeds)
    else:
        datasets = list(datasets)
        if len(datasets) != len(seeds):
            raise ValueError(f"datasets must be one Data shared by all models or one per seed: got "
                             f"{len(datasets)} datasets for {len(seeds)} seeds")
    sizes = [len(_check_data(d, f"datasets[{k}]")[1]) for k, d in enumerate(datasets)]
    if len(set(sizes)) > 1:
        raise ValueError(f"datasets must all have the same number of samples, got sizes {sizes}")
    return datasets, seeds



# ---------------------------------------------------------------------------------------------
# fit_many: K models at once.
#
# Two exact strategies (same maths as K calls of `fit`, up to float summation order):
#   "fused"      K plain CNNs/MLPs as ONE network: grouped convolutions (groups=K, the K models'
#                channels side by side), batch-norm over the K*C channels (per-channel statistics
#                are per model anyway), batched linear layers (one bmm). Each model sees its own
#                batch: model k's images occupy channel block k of the input. The loss is the sum
#                of the K per-model mean losses, so model k's gradient is its own loss's gradient,
#                and Adam is elementwise, so one Adam over the fused tensors is K Adams.
#   "sequential" a loop of `fit`.
# "auto" picks "fused" whenever the architecture allows it (SmallCNN without spectral norm, MLP),
# the fastest here (bench/train_many.py); otherwise "sequential".
# Where exactness can only be approximate: Adam divides by sqrt(v), so a parameter whose true
# gradient is ~0 (a conv bias feeding batch-norm, a dead unit) turns float noise into ~lr steps;
# such parameters differ between strategies while the rest agree to ~1e-6 relative.
# ---------------------------------------------------------------------------------------------

STRATEGIES = ("auto", "fused", "sequential")
_FLATTEN = "flatten"  # marker for the torch.flatten in SmallCNN.forward


def _plain_layers(model: nn.Module) -> list | None:
    """The layers ``model.forward`` applies one after the other, when the model is a plain chain
    the fused strategy can reproduce exactly (SmallCNN without spectral norm, MLP); else None."""
    if type(model) is SmallCNN and model.log_scale is None:
        layers = list(model.features) + [_FLATTEN] + list(model.classifier)
    elif type(model) is MLP:
        layers = list(model.features) + list(model.classifier)
    else:
        return None
    for m in layers:
        if m is _FLATTEN or isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.MaxPool2d)):
            continue
        if parametrize.is_parametrized(m):
            return None
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.bias is not None and m.padding_mode == "zeros":
            continue
        if isinstance(m, nn.Linear) and m.bias is not None:
            continue
        if isinstance(m, nn.BatchNorm2d) and m.affine and m.track_running_stats:
            continue
        return None
    return layers


def strategy_for(model: nn.Module) -> str:
    """The strategy ``fit_many(strategy="auto")`` uses for models like ``model``."""
    return "fused" if _plain_layers(model) is not None else "sequential"


class _FusedConv(nn.Conv2d):
    """K ``Conv2d`` as one grouped convolution (output block k = model k)."""

    def __init__(self, convs: list[nn.Conv2d]):
        c, k = convs[0], len(convs)
        super().__init__(k * c.in_channels, k * c.out_channels, c.kernel_size, c.stride, c.padding,
                         c.dilation, groups=k, bias=True, device=c.weight.device)
        with torch.no_grad():
            self.weight.copy_(torch.cat([m.weight for m in convs]))
            self.bias.copy_(torch.cat([m.bias for m in convs]))

    @torch.no_grad()
    def unfuse(self, convs: list[nn.Conv2d]) -> None:
        for m, w, b in zip(convs, self.weight.chunk(len(convs)), self.bias.chunk(len(convs))):
            m.weight.copy_(w)
            m.bias.copy_(b)


class _FusedBatchNorm(nn.BatchNorm2d):
    """K ``BatchNorm2d`` as one over K*C channels: statistics are per channel, hence per model."""

    _TENSORS = ("weight", "bias", "running_mean", "running_var")

    def __init__(self, bns: list[nn.BatchNorm2d]):
        b = bns[0]
        super().__init__(len(bns) * b.num_features, eps=b.eps, momentum=b.momentum,
                         device=b.weight.device)
        with torch.no_grad():
            for name in self._TENSORS:
                getattr(self, name).copy_(torch.cat([getattr(m, name) for m in bns]))
            self.num_batches_tracked.copy_(b.num_batches_tracked)

    @torch.no_grad()
    def unfuse(self, bns: list[nn.BatchNorm2d]) -> None:
        for name in self._TENSORS:
            for m, t in zip(bns, getattr(self, name).chunk(len(bns))):
                getattr(m, name).copy_(t)
        for m in bns:
            m.num_batches_tracked.copy_(self.num_batches_tracked)


class _FusedLinear(nn.Module):
    """K ``Linear`` layers on ``(K, B, in)``: one batched matrix product."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in linears]).clone())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in linears]).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    @torch.no_grad()
    def unfuse(self, linears: list[nn.Linear]) -> None:
        for k, m in enumerate(linears):
            m.weight.copy_(self.weight[k])
            m.bias.copy_(self.bias[k])


class _Fused(nn.Module):
    """K models with the same plain chain of layers as one network.

    Input as :func:`_fused_input` builds it, output logits ``(K, B, classes)``. Image activations
    live as ``(B, K*C, H, W)`` in channels-last memory (oneDNN's grouped convolutions and
    max-pooling are much faster in it), vectors as ``(K, B, F)``.
    ``ReLU -> MaxPool`` is evaluated as ``MaxPool -> ReLU``: the same function (ReLU is monotone,
    so it commutes with max) and the same gradient (both route it to the window's arg-max when
    that is positive and give zero otherwise; only exactly tied positive maxima could differ), on
    a tensor four times smaller. The same holds for a leaky ReLU (strictly increasing: the arg-max
    is the same, and the gradient is scaled by its slope there either way)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.k = len(models)
        chains = [_plain_layers(m) for m in models]
        self.per_layer = list(zip(*chains))  # layer i of every model
        ops = []
        for group in self.per_layer:
            m = group[0]
            if m is _FLATTEN:
                ops.append(nn.Identity())
            elif isinstance(m, nn.Conv2d):
                ops.append(_FusedConv(list(group)))
            elif isinstance(m, nn.BatchNorm2d):
                ops.append(_FusedBatchNorm(list(group)))
            elif isinstance(m, nn.Linear):
                ops.append(_FusedLinear(list(group)))
            elif isinstance(m, nn.MaxPool2d):  # acts per channel: nothing to fuse
                ops.append(nn.MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation,
                                        ceil_mode=m.ceil_mode))
            else:  # ReLU or LeakyReLU: stateless, one module serves every model
                ops.append(copy.deepcopy(m))
        self.ops = nn.ModuleList(ops)
        self.flatten_at = next((i for i, m in enumerate(chains[0]) if m is _FLATTEN), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b = self.k, x.shape[0] if x.ndim == 4 else x.shape[1]
        ops, i = list(self.ops), 0
        while i < len(ops):
            op = ops[i]
            if i == self.flatten_at:  # (B, K*C, h, w) -> (K, B, C*h*w), torch.flatten's order
                x = x.contiguous().reshape(b, k, -1).transpose(0, 1)
            elif isinstance(op, (nn.ReLU, nn.LeakyReLU)) and i + 1 < len(ops) and isinstance(ops[i + 1], nn.MaxPool2d):
                x = op(ops[i + 1](x))
                i += 1
            else:
                x = op(x)
            i += 1
        return x

    def unfuse(self) -> None:
        """Copy the trained tensors back into the K original models."""
        for op, group in zip(self.ops, self.per_layer):
            if hasattr(op, "unfuse"):
                op.unfuse(list(group))


# Models are fused in chunks whose largest activation stays near this budget, and the chunks run one after the
# other. Two limits set it: activations over glibc's largest mmap threshold (32 MB) are mapped and faulted in afresh
# at every step, and two workers sharing a 32 MB L3 cache each train about a sixth faster with chunks of about 8 MB
# than with 24 MB (bench/train_many.py --chunks).
_CHUNK_BYTES = 8 * 2 ** 20


class _FusedChunks(nn.Module):
    """``_Fused`` networks over consecutive chunks of the K models; same input/output as one.

    The chunks are as equal as possible and each holds at least the budget's share, so no model is left alone in
    a chunk of its own when K > 1: a grouped convolution of one group takes another kernel, whose rounding differs,
    while with two or more groups the rounding did not depend on their number (oneDNN on x86: the same weights
    whatever the chunking)."""

    def __init__(self, models: list[nn.Module], batch_size: int, sample_shape: tuple):
        super().__init__()
        size = _largest_activation(models[0], batch_size, sample_shape)
        k = len(models)
        parts = max(1, k // max(1, _CHUNK_BYTES // max(size, 1)))   # each chunk holds at least the budget's share
        self.sizes = [k // parts + (i < k % parts) for i in range(parts)]
        ends = list(itertools.accumulate(self.sizes))
        self.spans = [slice(end - n, end) for n, end in zip(self.sizes, ends)]   # the models of each chunk
        self.parts = nn.ModuleList([_Fused(models[span]) for span in self.spans])

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        """``xs``: model k's batch at k (images as ``(B, H, W, C)``); logits ``(K, B, classes)``."""
        return torch.cat([part(_fused_input(xs[span])) for part, span in zip(self.parts, self.spans)])

    def unfuse(self) -> None:
        for part in self.parts:
            part.unfuse()


def _fused_input(xs: list[torch.Tensor]) -> torch.Tensor:
    """The batches of K models as one fused network takes them, in one copy: images ``(B, H, W, C)`` each become
    ``(B, K*C, H, W)`` in channels-last memory (model k's channels are block k), vectors ``(B, F)`` ``(K, B, F)``."""
    if xs[0].ndim == 4:
        b, h, w, c = xs[0].shape
        return torch.stack(xs, dim=3).view(b, h, w, len(xs) * c).permute(0, 3, 1, 2)
    return torch.stack(xs)


def _batch_layout(x: torch.Tensor, autocast: bool) -> torch.Tensor:
    """A data set as the fused loop gathers its batches: images channels-last ``(N, H, W, C)``, so that a batch
    is gathered and fused in one copy each, and in bfloat16 when the first convolution casts them to it anyway
    (the same rounding, once instead of at every step); vectors as they are."""
    if x.ndim != 4:
        return x
    return x.permute(0, 2, 3, 1).contiguous().to(torch.bfloat16 if autocast else x.dtype)


def _largest_activation(model: nn.Module, batch_size: int, sample_shape: tuple) -> int:
    """Bytes of the largest activation of one model on a batch (measured with hooks on a
    meta-device copy: no memory, no computation)."""
    sizes = [batch_size * math.prod(sample_shape) * 4]
    meta = copy.deepcopy(model).to("meta")
    with hooks_removed() as handles, torch.no_grad():
        handles += [m.register_forward_hook(lambda mod, i, o: sizes.append(o.numel() * o.element_size()))
                    for m in meta.modules() if not list(m.children())]
        meta(torch.empty(batch_size, *sample_shape, device="meta"))
    return max(sizes)


def _train_together(models, datasets, seeds, *, epochs, lr, batch_size, weight_decay, dev, progress,
                    optimiser, momentum, lr_schedule, steps, warmup, autocast) -> None:
    """The "fused" training loop; same order, loss, optimiser and lr_schedule as `fit` for each model."""
    k = len(models)
    for m in models:
        m.to(dev).train()
    fused = _FusedChunks(models, batch_size, tuple(_check_data(datasets[0])[0].shape[1:])).to(dev).train()
    opt = _optimiser(list(fused.parameters()), optimiser, lr, momentum, weight_decay)
    laid_out, xs = {}, []   # each data set once, also when the models share it (datasets keeps the tensors alive)
    for d in datasets:
        x = _check_data(d)[0]
        if id(x) not in laid_out:
            laid_out[id(x)] = _batch_layout(x.to(dev), autocast)
        xs.append(laid_out[id(x)])
    ys = [_check_data(d)[1] for d in datasets]
    gens = [seeded_generator(s) for s in seeds]
    n = len(ys[0])
    epochs, total = _plan(n, batch_size, epochs, steps)
    done = 0
    bar = _epoch_bar(epochs, progress, f"fit_many[fused, K={k}]")
    for _ in bar:
        seen, total_loss, correct = 0, 0.0, 0
        orders = [_batches(n, batch_size, g) for g in gens]
        for batch in zip(*orders):
            if done == total:
                break
            _set_lr(opt, lr, lr_schedule, done, total, warmup)
            yb = torch.stack([y[i] for y, i in zip(ys, batch)]).to(dev)
            with _autocast(autocast, dev):
                logits = fused([x[i.to(dev)] for x, i in zip(xs, batch)]).float()  # (K, B, classes)
            # sum over models of each model's mean loss: model k's gradient is its own
            loss = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="sum") / yb.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            seen += yb.numel()
            total_loss += float(loss.detach()) * yb.shape[1]
            correct += int((logits.detach().argmax(-1) == yb).sum())
        bar.set_postfix(loss=f"{total_loss / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
    bar.close()
    fused.unfuse()


def fit_many(model_fn: Callable[[int], nn.Module], datasets, *, seeds: Sequence[int], epochs: int = 10,
             lr: float = 1e-3, batch_size: int = 64, device="auto", progress: bool = True,
             weight_decay: float = 0.0, strategy: str = "auto", optimiser: str = "adam", momentum: float = 0.9,
             lr_schedule: str | None = None, steps: int | None = None, warmup: int = 0, autocast: bool = False,
             init_seeds: Sequence[int] | None = None) -> list[nn.Module]:
    """Train ``K = len(seeds)`` models at once and return them (eval mode, on ``device``).

    Model k is ``model_fn(init_seeds[k])`` (default: ``seeds[k]``), trained on ``datasets[k]`` (or on
    ``datasets`` when it is one shared Data) with shuffling seed ``seeds[k]``: the same models as
    ``fit(model_fn(init_seeds[k]), datasets[k], seed=seeds[k], ...)`` one by one, up to float
    summation order (see the equivalence test). ``datasets`` must all have the same size; the same
    initialisation with another order is ``init_seeds[j] == init_seeds[k]``, ``seeds[j] != seeds[k]``.

    ``strategy``: ``"fused"`` (K plain SmallCNN/MLP as one network with grouped convolutions and
    batched linear layers), ``"sequential"`` (a loop of :func:`fit`), or ``"auto"``: "fused" when
    the architecture allows it, else "sequential" (:func:`strategy_for` tells which).
    bench/train_many.py measures the gain. ``optimiser``, ``momentum``, ``lr_schedule``, ``steps``,
    ``warmup`` and ``autocast`` as in :func:`fit`.
    """
    epochs, lr, batch_size, weight_decay = _check_hyper(epochs, lr, batch_size, weight_decay)
    steps = _check_recipe(optimiser, momentum, lr_schedule, steps, warmup)
    recipe = dict(optimiser=optimiser, momentum=momentum, lr_schedule=lr_schedule, steps=steps, warmup=warmup,
                  autocast=autocast)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    datasets, seeds = _check_many(datasets, seeds)
    init_seeds = seeds if init_seeds is None else [int(s) for s in init_seeds]
    if len(init_seeds) != len(seeds):
        raise ValueError(f"init_seeds must give one initialisation per model: {len(init_seeds)} for {len(seeds)}")
    models = [model_fn(s) for s in init_seeds]
    if strategy == "auto":
        strategy = strategy_for(models[0])
    if strategy == "fused" and any(_plain_layers(m) is None for m in models):
        raise ValueError("strategy='fused' needs SmallCNN (without spectral norm) or MLP models; "
                         "use strategy='sequential'")
    dev = resolve_device(device)
    if strategy == "sequential":
        return [fit(m, d, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=s,
                    device=dev, progress=progress, **recipe) for m, d, s in zip(models, datasets, seeds)]
    shapes = {tuple((n, tuple(t.shape)) for n, t in m.state_dict().items()) for m in models}
    if len(shapes) > 1:
        raise ValueError("model_fn must build models of one architecture (same parameter shapes) "
                         "for every seed")
    _train_together(models, datasets, seeds, epochs=epochs, lr=lr, batch_size=batch_size,
                    weight_decay=weight_decay, dev=dev, progress=progress, **recipe)
    return [m.eval() for m in models]
