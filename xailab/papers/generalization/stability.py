"""Measured stability and fidelity of SmoothGrad (the follow-up paper's trade-off in sigma)."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from xailab.attribution import attribute
from xailab.metrics import consistency
from xailab.utils import check_positive

__all__ = ["stability_fidelity"]


def stability_fidelity(model_a: nn.Module, model_b: nn.Module, x: Tensor, target, sigmas: Sequence[float], *,
                       n_samples: int = 16, seed: int = 0, metric: str = "l2", reduce: str | None = None
                       ) -> dict[str, list[float]]:
    """Measured stability and fidelity of SmoothGrad over a grid of noise levels (the follow-up
    paper's trade-off), for two networks trained on disjoint data.

    * ``stability[i]``: mean over images of ``consistency(SG_a, SG_b, metric)`` at ``sigmas[i]`` —
      how far apart the two networks' SmoothGrad maps are (for ``"l2"``: lower is more stable);
    * ``fidelity[i]``: mean of ``consistency(SG_m, grad_m, metric)`` over both networks m — how far
      each SmoothGrad map is from its own network's plain gradient (lower is more faithful);
    * ``gradient``: the stability of the plain gradient (sigma = 0), for reference.

    Both are computed on signed maps by default (``reduce=None``), as in the follow-up paper.
    Every sigma uses the same noise seed for both networks, so the Monte-Carlo noise of SmoothGrad
    is common to the pair and does not inflate their difference.
    """
    sigmas = [check_positive("sigma", s) for s in sigmas]
    grads = [attribute(m, x, target, method="gradient").detach() for m in (model_a, model_b)]
    out = {"sigma": list(sigmas), "stability": [], "fidelity": [],
           "gradient": float(consistency(grads[0], grads[1], metric, reduce=reduce).mean())}
    for s in sigmas:
        sg = [attribute(m, x, target, method="smoothgrad", sigma=s, n_samples=n_samples, seed=seed).detach()
              for m in (model_a, model_b)]
        out["stability"].append(float(consistency(sg[0], sg[1], metric, reduce=reduce).mean()))
        fid = [consistency(s_m, g_m, metric, reduce=reduce).mean() for s_m, g_m in zip(sg, grads)]
        out["fidelity"].append(float(sum(fid) / 2))
    return out
