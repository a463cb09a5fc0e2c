"""Training and inference: ``fit`` / ``evaluate`` / ``predict`` for one model, ``fit_many`` for K.

Conventions shared by :func:`fit` and :func:`fit_many` (they must agree, so that training K
models at once gives the models one would get one by one):

- optimiser: ``torch.optim.Adam(lr, weight_decay)``, loss: mean cross-entropy per batch;
- order: one ``torch.Generator`` seeded with ``seed`` per model; each epoch draws
  ``torch.randperm(N, generator=g)`` and walks it in batches of ``batch_size`` (the last batch
  may be smaller; nothing is dropped);
- the model is moved to ``device`` and returned in eval mode.

``data`` is anything with tensor fields ``x`` (N, ...) and ``y`` (N,) class indices, such as
``xailab.data.Data``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

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


def _epoch_bar(epochs: int, enabled: bool, desc: str):
    """A tqdm bar over epochs (we need the bar object itself to show loss and accuracy)."""
    from tqdm.auto import tqdm

    return tqdm(range(epochs), desc=desc, disable=not enabled, leave=False)


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Index tensors of one shuffled epoch: the convention shared by ``fit`` and ``fit_many``."""
    perm = torch.randperm(n, generator=generator)
    return perm.split(batch_size)


def fit(model: nn.Module, data, *, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
        weight_decay: float = 0.0, seed: int = 0, device="auto", progress: bool = True) -> nn.Module:
    """Train ``model`` on ``data`` with Adam and cross-entropy; return it in eval mode on ``device``.

    ``seed`` fixes the shuffling order (a local generator; the global RNG is untouched). The model
    is trained in place (moved to ``device``) and also returned. The bar shows the last epoch's
    mean training loss and accuracy.
    """
    epochs, lr, batch_size, weight_decay = _check_hyper(epochs, lr, batch_size, weight_decay)
    x, y = _check_data(data)
    dev = resolve_device(device)
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = seeded_generator(seed)
    n = len(y)
    bar = _epoch_bar(epochs, progress, "fit")
    for _ in bar:
        total_loss, correct = 0.0, 0
        for idx in _batches(n, batch_size, g):
            xb, yb = x[idx].to(dev), y[idx].to(dev)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == yb).sum())
        bar.set_postfix(loss=f"{total_loss / n:.3f}", acc=f"{correct / n:.3f}")
    bar.close()
    return model.eval()


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


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
        dev = _model_device(model)
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


def fit_many(model_fn: Callable[[int], nn.Module], datasets, *, seeds: Sequence[int], epochs: int = 10,
             lr: float = 1e-3, batch_size: int = 64, device="auto", progress: bool = True,
             weight_decay: float = 0.0) -> list[nn.Module]:
    """Train ``len(seeds)`` models, model k = ``model_fn(seeds[k])`` trained on ``datasets[k]``
    (or on the one shared ``datasets``) with shuffling seed ``seeds[k]``.

    Gives the models ``fit(model_fn(s), data_k, seed=s, ...)`` would give one by one.
    """
    epochs, lr, batch_size, weight_decay = _check_hyper(epochs, lr, batch_size, weight_decay)
    datasets, seeds = _check_many(datasets, seeds)
    return [fit(model_fn(s), d, epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay,
                seed=s, device=device, progress=progress) for s, d in zip(seeds, datasets)]
