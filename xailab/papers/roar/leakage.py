"""How much the *shape* of a removal leaks the label: a model trained on the removal masks alone.

Removed pixels all receive the same fill, so a retrained ROAR model sees where pixels were removed;
if that pattern depends on the class, retraining can learn the class from it (Rong et al., ICML
2022, call this information leakage). :func:`mask_only_accuracy` measures it directly: a fresh
model sees nothing but the binary removal mask (1 = removed) of every image. Whether a retrained
model can *see* that mask in the modified images depends on the fill: :func:`pattern_visibility`
trains a detector of removed pixels on the modified images themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.data import Data
from xailab.metrics import saliency_auc
from xailab.papers.roar.sweep import roar
from xailab.removal import dataset_mean, fill_removed, removal_mask
from xailab.train import evaluate, fit, fit_many
from xailab.utils import check_positive, forked_rng, resolve_device, seeded_generator

__all__ = ["LeakStudy", "leak_study", "mask_only_accuracies", "mask_only_accuracy", "removal_masks",
           "pattern_visibility"]


def removal_masks(data, maps: Tensor, fraction: float, *, rank_by: str = "pixel",
                  reduce: str = "abs-sum") -> Data:
    """``data`` with every image replaced by its removal mask (one channel, 1 = removed)."""
    m = removal_mask(maps, fraction, rank_by=rank_by, reduce=reduce).float()
    return Data(m, data.y, None, data.classes)


def mask_only_accuracy(model_fn: Callable[[int], nn.Module], train, test, maps: tuple[Tensor, Tensor],
                       fraction: float, *, rank_by: str = "pixel", reduce: str = "abs-sum", epochs: int = 8,
                       lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device="auto") -> float:
    """Test accuracy of ``model_fn(seed)`` (one input channel) trained on the removal masks of
    ``train`` and tested on those of ``test``, for the top ``fraction`` by ``maps`` (a
    ``(train, test)`` pair). Chance accuracy means the removal pattern carries no label."""
    maps_train, maps_test = maps
    how = dict(rank_by=rank_by, reduce=reduce)
    net = fit(model_fn(seed), removal_masks(train, maps_train, fraction, **how), epochs=epochs, lr=lr,
              batch_size=batch_size, seed=seed, device=device, progress=False)
    return evaluate(net, removal_masks(test, maps_test, fraction, **how), device=device)


def mask_only_accuracies(model_fn: Callable[[int], nn.Module], train, test, rankings: dict, fractions, *,
                         seed: int = 0, device="auto", **fit_options) -> dict[tuple[str, float], float]:
    """:func:`mask_only_accuracy` for every ranking of ``rankings`` (``{name: (train maps, test maps)}``) and
    fraction, ``{(name, fraction): accuracy}``: the models are trained together (:func:`xailab.train.fit_many`,
    one per pattern, all from ``model_fn(seed)`` with data order ``seed``)."""
    keys = [(k, f) for k in rankings for f in fractions]
    masks = {key: (removal_masks(train, rankings[key[0]][0], key[1]), removal_masks(test, rankings[key[0]][1], key[1]))
             for key in keys}
    nets = fit_many(model_fn, [masks[k][0] for k in keys], seeds=[seed] * len(keys), device=device, progress=False,
                    **fit_options)
    return {key: evaluate(net, masks[key][1], device=device) for key, net in zip(keys, nets)}


def _detector(channels: int, width: int, seed: int) -> nn.Module:
    """A small fully convolutional network scoring every pixel: was it removed?"""
    with forked_rng(seed):
        return nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 1))


def pattern_visibility(train_images: Tensor, train_removed: Tensor, test_images: Tensor, test_removed: Tensor, *,
                       epochs: int = 4, width: int = 16, lr: float = 3e-3, batch_size: int = 64, seed: int = 0,
                       device="auto") -> float:
    """How visible the removal is in the modified images themselves: a small fully convolutional
    detector is trained to tell removed from kept pixels on ``train_images`` (masks
    ``train_removed``, ``(N, 1, H, W)`` bool) and scored on the test pair by the mean per-image
    ROC-AUC of its pixel scores (0.5: removed pixels look like any other; 1: every removed pixel
    stands out). A retrained model can only read a removal *pattern* it can see."""
    epochs = int(check_positive("epochs", epochs, integer=True))
    dev = resolve_device(device)
    net = _detector(train_images.shape[1], width, seed).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = seeded_generator(seed)
    target = train_removed.float()
    pos = float(target.mean())
    weight = torch.tensor((1 - pos) / max(pos, 1e-6), device=dev)   # balance removed and kept pixels
    for _ in range(epochs):
        for idx in torch.randperm(len(train_images), generator=g).split(batch_size):
            loss = F.binary_cross_entropy_with_logits(net(train_images[idx].to(dev)), target[idx].to(dev),
                                                      pos_weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(xb.to(dev)).cpu() for xb in test_images.split(256)])
    auc = saliency_auc(scores, mask=test_removed.float())
    return float(auc[~auc.isnan()].mean())


@dataclass
class LeakStudy:
    """What the removal pattern tells about the label, three ways (see :func:`leak_study`).

    ``mask_only[(ranking, fraction)]``: accuracy from the binary removal masks alone;
    ``object_free[fill]``: a :class:`~xailab.papers.roar.RoarResult` of models retrained on the same patterns
    applied to the images *without* their object; ``visibility[(fill, ranking)]``: how visible the removed
    pixels are in the filled images (ROC-AUC of a trained detector; 0.5 invisible)."""
    mask_only: dict
    object_free: dict
    visibility: dict


def leak_study(model_fn: Callable[[int], nn.Module], mask_model_fn: Callable[[int], nn.Module], train, test,
               blank_train, blank_test, rankings: dict, *, fractions, fills: dict, roar_options: dict,
               class_free=("random",), visible=(), visible_fraction: float = 0.5, seed: int = 0,
               fit_options: dict | None = None, visibility_epochs: int = 3, device="auto") -> LeakStudy:
    """Measure the removal-pattern leak of ``rankings`` (``{name: (train maps, test maps)}``).

    ``mask_model_fn`` (one input channel) learns from the removal masks alone (``fit_options``); ``model_fn``
    is retrained, with :func:`~xailab.papers.roar.roar` and ``roar_options``, on the same patterns applied to
    ``blank_train`` / ``blank_test`` (the same images drawn without their object: same labels and masks), for
    each of ``fills`` (``{name: roar's fill options}``); rankings in ``class_free`` (random) are left out of
    it, their pattern being class-free by construction. ``visible``: the rankings whose pattern visibility is
    measured at ``visible_fraction`` under each fill.
    """
    if not torch.equal(blank_train.y, train.y) or not torch.equal(blank_train.mask, train.mask):
        raise ValueError("blank_train must be train drawn without its objects (same labels and masks)")
    fit_options = dict(fit_options or {})
    mask_only = {(k, f): mask_only_accuracy(mask_model_fn, train, test, rankings[k], f, seed=seed, device=device,
                                            **fit_options)
                 for k in rankings for f in fractions}
    informative = {k: v for k, v in rankings.items() if k not in class_free}
    object_free = {name: roar(model_fn, blank_train, blank_test, informative, fractions=fractions, variants=("roar",),
                              **roar_options, **fill)
                   for name, fill in fills.items()}
    visibility = {}
    for name, fill in fills.items():
        fill_kw = {"fill": dataset_mean(train.x)} if not fill else {"fill": fill["fill"], **fill.get("fill_options", {})}
        for k in visible:
            m_tr, m_te = (removal_mask(m, visible_fraction) for m in rankings[k])
            visibility[(name, k)] = pattern_visibility(fill_removed(train.x, m_tr, **fill_kw), m_tr,
                                                       fill_removed(test.x, m_te, **fill_kw), m_te, seed=seed,
                                                       device=device, epochs=visibility_epochs)
    return LeakStudy(mask_only, object_free, visibility)
