"""How much the *shape* of a removal leaks the label: a model trained on the removal masks alone.

Removed pixels all receive the same fill, so a retrained ROAR model sees where pixels were removed;
if that pattern depends on the class, retraining can learn the class from it (Rong et al., ICML
2022, call this information leakage). :func:`mask_only_accuracy` measures it directly: a fresh
model sees nothing but the binary removal mask (1 = removed) of every image.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from xailab.data import Data
from xailab.removal import removal_mask

__all__ = ["mask_only_accuracy", "removal_masks"]


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
