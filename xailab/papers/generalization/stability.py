"""Measured stability and fidelity of SmoothGrad (the follow-up paper's trade-off in sigma)."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from xailab.attribution import attribute
from xailab.metrics import consistency
from xailab.utils import check_positive

__all__ = ["stability_fidelity"]


def stability_fidelity(model_a: nn.Module, model_b: nn.Module, x: Tensor, target, sigmas: Sequence[float], *,
                       n_samples: int = 100, seed: int = 0, measure: str = "distance", reduce: str | None = None
                       ) -> dict[str, list[float]]:
    """Measured stability and fidelity of SmoothGrad over a grid of noise levels, as the follow-up
    paper's code measures them, for two networks trained on disjoint data.

    * ``stability[i]``: mean over images of ``consistency(SG_a, other=SG_b, measure=measure)`` at ``sigmas[i]``,
      the two networks' maps drawn with *independent* noise (default measure: the plain ℓ2 distance
      of the signed maps; lower is more stable);
    * ``fidelity[i]``: mean of ``consistency(SG_m, other=grad_m, measure=measure)`` over both networks ``m`` — how
      far each SmoothGrad map is from its own network's plain gradient (lower is more faithful);
    * ``floor[i]``: the Monte-Carlo floor — network A's SmoothGrad drawn twice with independent
      noise; ``stability`` means something only where it stands above it;
    * ``gradient``: the stability of the plain gradient (sigma = 0), for reference.

    ``sigma`` is a fraction of each image's value range; ``n_samples`` noisy copies per map (the
    follow-up's code uses 100).
    """
    sigmas = [check_positive("sigma", s) for s in sigmas]
    grads = [attribute(m, x, target, method="gradient").detach() for m in (model_a, model_b)]
    out = {"sigma": list(sigmas), "stability": [], "fidelity": [], "floor": [],
           "gradient": float(consistency(grads[0], other=grads[1], measure=measure, reduce=reduce).mean())}
    for s in sigmas:
        opts = dict(method="smoothgrad", sigma=s, n_samples=n_samples)
        sg = [attribute(m, x, target, seed=seed + i, **opts).detach() for i, m in enumerate((model_a, model_b))]
        again = attribute(model_a, x, target, seed=seed + 2, **opts).detach()
        out["stability"].append(float(consistency(sg[0], other=sg[1], measure=measure, reduce=reduce).mean()))
        out["floor"].append(float(consistency(sg[0], other=again, measure=measure, reduce=reduce).mean()))
        fid = [consistency(s_m, other=g_m, measure=measure, reduce=reduce).mean() for s_m, g_m in zip(sg, grads)]
        out["fidelity"].append(float(sum(fid) / 2))
    return out
