"""SmoothGrad over a grid of σ for two networks trained on disjoint data: consistency, and the follow-up
paper's stability and fidelity errors (Ye & Farnia, "Gaussian Smoothing in Saliency Maps: The
Stability-Fidelity Trade-Off", AISTATS 2025), from one set of maps per σ and network."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from xailab.attribution import attribute
from xailab.metrics import consistency
from xailab.papers.generalization.pairs import land, ship
from xailab.utils import check_positive, derive_seed

__all__ = ["AnalyticScore", "sigma_sweep", "sweep_pairs", "unbiasedness"]


def sigma_sweep(model_a: nn.Module, model_b: nn.Module, x: Tensor, target, sigmas: Sequence[float], *,
                n_samples: int | Sequence[int] = 100, seed: int = 0, floor: bool = True) -> dict[str, list[float]]:
    """Per σ of ``sigmas`` (a fraction of each image's value range), means over the images of ``x``:

    * ``spearman``, ``l2``: normalised Spearman and normalised L2 of the two networks' SmoothGrad maps
      (channel-summed |map|), the register's consistency metrics;
    * ``stability``: the plain ℓ2 distance of the two networks' *signed* SmoothGrad maps, drawn with independent
      noise (the follow-up's stability error; lower is more stable);
    * ``fidelity``: the ℓ2 distance of each network's signed SmoothGrad map from its own gradient, the mean of the
      two (the follow-up's fidelity error; lower is more faithful);
    * ``floor``, ``floor_spearman``, ``floor_l2``: network A's SmoothGrad against itself with fresh noise (the
      Monte-Carlo floor) in the same three measures (left out with ``floor=False``: a third of the cost);
    * ``norm``: the mean ℓ2 norm of the signed SmoothGrad maps (part of a falling stability error is maps shrinking).

    Plus ``gradient``: the stability of the plain gradients (σ = 0), for reference. ``n_samples`` noisy copies
    per map (the follow-up's code uses 100), one count for every σ or one per σ; noise seeded from ``seed``.
    """
    sigmas = [check_positive("sigma", s) for s in sigmas]
    counts = [n_samples] * len(sigmas) if isinstance(n_samples, int) else list(n_samples)
    if len(counts) != len(sigmas):
        raise ValueError(f"n_samples must be one count or one per sigma ({len(sigmas)}), got {len(counts)}")
    counts = [int(check_positive("n_samples", n, integer=True)) for n in counts]
    grads = [attribute(m, x, target, method="gradient").detach() for m in (model_a, model_b)]
    keys = ("spearman", "l2", "stability", "fidelity", "norm") + (("floor", "floor_spearman", "floor_l2") if floor else ())
    out = {key: [] for key in keys}
    out["sigma"], out["n_samples"] = list(sigmas), counts
    out["gradient"] = float(consistency(grads[0], other=grads[1], measure="distance", reduce=None).mean())
    for s, n in zip(sigmas, counts):
        opts = dict(method="smoothgrad", sigma=s, n_samples=n)
        sg = [attribute(m, x, target, seed=derive_seed(seed, s, k), **opts).detach() for k, m in enumerate((model_a, model_b))]
        for measure in ("spearman", "l2"):
            out[measure].append(float(consistency(sg[0], other=sg[1], measure=measure).mean()))
        out["stability"].append(float(consistency(sg[0], other=sg[1], measure="distance", reduce=None).mean()))
        if floor:
            again = attribute(model_a, x, target, seed=derive_seed(seed, s, "again"), **opts).detach()
            for measure in ("spearman", "l2"):
                out[f"floor_{measure}"].append(float(consistency(sg[0], other=again, measure=measure).mean()))
            out["floor"].append(float(consistency(sg[0], other=again, measure="distance", reduce=None).mean()))
        out["fidelity"].append(float(sum(consistency(u, other=g, measure="distance", reduce=None).mean()
                                         for u, g in zip(sg, grads)) / 2))
        out["norm"].append(float(sum(u.flatten(1).norm(dim=1).mean() for u in sg) / 2))
    return out


def _sweep_unit(task: dict) -> dict:
    return sigma_sweep(land(task["a"]), land(task["b"]), task["x"], task["target"], task["sigmas"], n_samples=task["n_samples"],
                       seed=task["seed"], floor=task["floor"])


def sweep_pairs(pairs: Sequence[tuple[nn.Module, nn.Module]], x: Tensor, target, sigmas: Sequence[float], *,
                n_samples: int | Sequence[int] = 100, seed: int = 0, floor_pairs: int | None = None,
                executor=None) -> list[dict]:
    """:func:`sigma_sweep` for every pair ``(A, B)`` of networks from :func:`train_pairs` (pair ``i`` seeded from
    ``(seed, i)``), on ``executor`` when given. The Monte-Carlo floor is measured on the first ``floor_pairs``
    pairs (all by default), as :func:`~xailab.papers.generalization.pairs.compare_pairs` does."""
    tasks = [dict(a=ship(a), b=ship(b), x=x, target=target, sigmas=list(sigmas), n_samples=n_samples, seed=derive_seed(seed, i),
                  floor=floor_pairs is None or i < floor_pairs) for i, (a, b) in enumerate(pairs)]
    return [_sweep_unit(t) for t in tasks] if executor is None else list(executor.map(_sweep_unit, tasks))


class AnalyticScore(nn.Module):
    """A model whose single logit is a closed-form function ``f`` of a flat input, ``(N, D) → (N, 1)``: the
    SmoothGrad estimator can be checked against the exact gradient of the smoothed ``f`` (GEN-9)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.f(x).reshape(-1, 1)


def unbiasedness(model: nn.Module, x0: Tensor, exact: Tensor, sigma: float, *, estimates: int = 1000,
                 n_samples: int = 100, seed: int = 0) -> float:
    """How far the mean of ``estimates`` independent ``n_samples``-sample SmoothGrad estimates at the single
    input ``x0`` (shape ``(1, D)``) lies from ``exact``, the gradient of the Gaussian-smoothed score: the largest
    deviation over coordinates in standard errors of that mean. ``sigma`` is the ABSOLUTE noise standard
    deviation (the estimator's relative σ is ``sigma`` over ``x0``'s value range)."""
    sigma = check_positive("sigma", sigma)
    if x0.ndim != 2 or x0.shape[0] != 1:
        raise ValueError(f"x0 must be one flat input shaped (1, D), got {tuple(x0.shape)}")
    value_range = float(x0.max() - x0.min())
    if value_range <= 0:
        raise ValueError("x0 must not be constant: SmoothGrad's σ is a fraction of the input's value range")
    x = x0.repeat(int(check_positive("estimates", estimates, integer=True)), 1)
    est = attribute(model, x, 0, method="smoothgrad", sigma=sigma / value_range, n_samples=n_samples,
                    seed=seed).detach()
    se = est.std(0) / est.shape[0] ** 0.5
    return float(((est.mean(0) - exact.to(est)).abs() / se).max())
