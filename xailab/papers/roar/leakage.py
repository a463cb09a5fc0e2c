"""How much the *shape* of a removal leaks the label: a model trained on the removal masks alone.

Removed pixels all receive the same fill, so a retrained ROAR model sees where pixels were removed;
if that pattern depends on the class, retraining can learn the class from it (Rong et al., ICML
2022, call this information leakage). :func:`mask_only_accuracy` measures it directly: a fresh
model sees nothing but the binary removal mask (1 = removed) of every image. Whether a retrained
model can *see* that mask in the modified images depends on the fill: :func:`pattern_visibility`
trains a detector of removed pixels on the modified images themselves.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from xailab.data import Data
from xailab.removal import removal_mask

__all__ = ["mask_only_accuracy", "removal_masks", "pattern_visibility"]


def removal_masks(data, relevance: Tensor, fraction: float, *, rank_by: str = "pixel",
                  reduce: str = "abs-sum") -> Data:
    """``data`` with every image replaced by its removal mask (one channel, 1 = removed)."""
    m = removal_mask(relevance, fraction, rank_by=rank_by, reduce=reduce).float()
    return Data(m, data.y, None, data.classes)


def mask_only_accuracy(model_fn: Callable[[int], nn.Module], train, test, relevance: tuple[Tensor, Tensor],
                       fraction: float, *, rank_by: str = "pixel", reduce: str = "abs-sum", epochs: int = 8,
                       lr: float = 1e-3, batch_size: int = 64, seed: int = 0, device="auto") -> float:
    """Test accuracy of ``model_fn(seed)`` (one input channel) trained on the removal masks of
    ``train`` and tested on those of ``test``, for the top ``fraction`` by ``relevance`` (a
    ``(train, test)`` pair). Chance accuracy means the removal pattern carries no label."""
    from xailab.train import evaluate, fit

    rel_train, rel_test = relevance
    how = dict(rank_by=rank_by, reduce=reduce)
    net = fit(model_fn(seed), removal_masks(train, rel_train, fraction, **how), epochs=epochs, lr=lr,
              batch_size=batch_size, seed=seed, device=device, progress=False)
    return evaluate(net, removal_masks(test, rel_test, fraction, **how), device=device)


def _detector(channels: int, width: int, seed: int) -> nn.Module:
    """A small fully convolutional network scoring every pixel: was it removed?"""
    from xailab.utils import forked_rng

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
    import torch.nn.functional as F

    from xailab.metrics import saliency_auc
    from xailab.utils import check_positive, resolve_device, seeded_generator

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
    auc = saliency_auc(scores, test_removed.float())
    return float(auc[~auc.isnan()].mean())
