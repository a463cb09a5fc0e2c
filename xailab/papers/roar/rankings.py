"""Rankings whose quality is known in advance, and what they measure: the controls of ROAR's premises.

- :func:`toy_rankings` — the paper's toy data ranked by its ground truth, at random, and inverted;
- :func:`premise_rankings` — random pixels, the evidence first (the oracle), the object first;
- :func:`share_kept` — the share of the above-chance accuracy a removal leaves;
- :func:`retraining_shift` — what a removal costs the original model beyond a retrained one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from xailab.papers.roar.result import RoarResult

__all__ = ["premise_rankings", "retraining_shift", "share_kept", "toy_rankings"]


def toy_rankings(train, test, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    """``{"ground truth", "random", "inverted": (train ranking, test ranking)}`` of :func:`xailab.data.roar_toy`
    data: its informative features first, an independent uniform ranking per sample (seeded), and the
    uninformative features first."""
    g = torch.Generator().manual_seed(int(seed))
    return {"ground truth": (train.mask, test.mask),
            "random": (torch.rand(train.x.shape, generator=g), torch.rand(test.x.shape, generator=g)),
            "inverted": (1 - train.mask, 1 - test.mask)}


def premise_rankings(train, test, seed: int, *, objects: tuple[Tensor, Tensor] | None = None
                     ) -> dict[str, tuple[Tensor, Tensor]]:
    """Rankings whose quality is known in advance, ``{name: (train ranking, test ranking)}``, for image data with a
    ground-truth evidence mask: ``"random"`` (an independent uniform ranking per image) and ``"oracle"`` (the
    evidence mask as a ranking: evidence pixels first). With ``objects`` (the object masks of the train and test
    images, part of the evidence), also ``"object only"``: the object's pixels first. Ties are broken at random,
    so that what a removal leaves is scattered rather than the bottom rows. Seeded."""
    g = torch.Generator().manual_seed(int(seed))
    shape = (1, *train.x.shape[2:])
    out = {"random": (torch.rand(len(train), *shape, generator=g), torch.rand(len(test), *shape, generator=g)),
           "oracle": tuple(m + 0.5 * torch.rand(m.shape, generator=g) for m in (train.mask, test.mask))}
    if objects is not None:
        out["object only"] = tuple(m + 0.5 * torch.rand(m.shape, generator=g) for m in objects)
    return out


def share_kept(accuracy, base: float, chance: float):
    """The share of the above-chance accuracy a removal leaves: ``(accuracy − chance) / (base − chance)``."""
    return (accuracy - chance) / (base - chance)


def retraining_shift(result: RoarResult, n_test: int, fraction: float = 0.9, estimator: str = "random"
                     ) -> tuple[float, float]:
    """What removing ``fraction`` of the pixels by ``estimator`` costs the original model (``morf``) beyond
    what it costs a retrained one (``roar``), and a margin of two standard errors (retrained: over seeds;
    original model: binomial over the ``n_test`` test images): ``(extra cost, margin)``."""
    kept = result.accuracy(estimator, fraction, variant="morf")
    retrained = list(result.per_seed(estimator, [fraction]).values())
    se = math.sqrt(np.var(retrained, ddof=1) / len(retrained) + kept * (1 - kept) / n_test)
    return float(np.mean(retrained) - kept), float(2 * se)
