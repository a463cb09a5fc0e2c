"""The bounds of the generalization paper and of its stability/fidelity follow-up, as calculators.

The exact constants of the papers' Theorems 1 and 2 could not be pinned down from the sources
available here, so each calculator implements the bound's *shape* (which quantities enter and how)
and takes the constants as explicit arguments; the docstrings say which parts are exact and which
are reconstructed.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from xailab.papers.generalization.norms import layer_norms, linear_layers, spectral_complexity
from xailab.utils import check_positive

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

__all__ = ["SQRT_2_OVER_PI", "margin_bound", "gradient_map_complexity", "gradient_bound", "smoothgrad_lipschitz",
           "smoothgrad_bound", "sgd_parameter_divergence", "stability_bound", "fidelity_bound",
           "balancing_sigma", "crossing_point", "bound_inputs", "complexity_factor"]


def margin_bound(spectral_complexity: float, *, n: int, data_norm: float, margin: float,
                 width: int, delta: float = 0.05, empirical_margin_risk: float = 0.0,
                 c_complexity: float = 72.0, c_small: float = 8.0, c_conf: float = 3.0) -> float:
    """Bartlett et al. (2017) margin bound on the test error (their Theorem 3.1 shape, fixed norms):

        P[argmax f(x) != y] <= R_gamma + c_small / n^{3/2}
                               + c_complexity * ||X||_2 * R_A * ln(2W) * ln(n) / (gamma * n)
                               + c_conf * sqrt(ln(1/delta) / (2n))

    ``data_norm`` is ``||X||_2 = sqrt(sum_i ||x_i||^2)`` over the n training inputs, ``width`` W the
    largest layer width, ``margin`` gamma, ``empirical_margin_risk`` R_gamma the fraction of training
    points with margin <= gamma.  The constants (72, 8, 3) are as we read their theorem; they are
    arguments so they can be changed.  Values above 1 are vacuous (and typical for real networks).
    """
    check_positive("n", n, integer=True)
    check_positive("margin", margin)
    check_positive("width", width, integer=True)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    complexity = c_complexity * data_norm * spectral_complexity * math.log(2 * width) * math.log(n) / (margin * n)
    return empirical_margin_risk + c_small / n ** 1.5 + complexity + c_conf * math.sqrt(math.log(1 / delta) / (2 * n))



def gradient_map_complexity(spectral_norms: Sequence[float], group_norms: Sequence[float],
                            group_norms_T: Sequence[float] | None = None, *,
                            lipschitz: float | Sequence[float] = 1.0,
                            smoothness: float | Sequence[float] = 1.0) -> float:
    """Spectral complexity of the *gradient map* ``x -> grad_x f(x)`` (Theorem 1's complexity term,
    reconstructed; constant-free).

    The gradient is computed by a forward pass through A_1..A_L followed by a backward pass through
    A_L^T..A_1^T gated by the activations' derivatives.  Counting it as a 2L-layer network in
    Bartlett's complexity gives layers (A_1..A_L, A_L^T..A_1^T) with Lipschitz constants
    (rho_1..rho_L, beta_L..beta_1), where beta_i bounds the Lipschitz constant of the i-th
    activation's *derivative* (smoothness; infinite for ReLU, so ReLU networks need a smooth
    surrogate, e.g. softplus with beta = its sharpness / 4).  Its product term is the square of
    R_A's: this is the sense in which the paper finds that interpretation needs more data than
    classification.  ``group_norms_T``: ``||A_i - M_i||_{2,1}`` of the transposed layers (defaults
    to ``group_norms``)."""
    s = list(spectral_norms)
    b = list(group_norms)
    bt = list(group_norms_T) if group_norms_T is not None else b
    L = len(s)
    rho = list(torch.as_tensor(lipschitz, dtype=torch.float64).expand(L).tolist())
    beta = list(torch.as_tensor(smoothness, dtype=torch.float64).expand(L).tolist())
    return spectral_complexity(s + s[::-1], b + bt[::-1], rho + beta[::-1])


def _bound_tail(n: int, delta: float, c_conf: float) -> float:
    check_positive("n", n, integer=True)
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    return c_conf * math.sqrt(math.log(1 / delta) / (2 * n))


def gradient_bound(gradient_complexity: float, *, n: int, data_norm: float, width: int,
                   delta: float = 0.05, constant: float = 1.0, c_conf: float = 3.0) -> float:
    """Theorem 1 of the ICLR paper (shape; Simple-Grad and Integrated Gradients): the generalization
    gap of the interpretation loss is at most

        constant * ||X||_2 * R_grad * ln(2W) * ln(n) / n + c_conf * sqrt(ln(1/delta) / (2n))

    with ``R_grad`` from :func:`gradient_map_complexity`.  The covering-number argument is
    Bartlett et al.'s applied to the gradient network; the constant (72 in Bartlett's theorem, times
    the Lipschitz constant and range of the interpretation loss) could not be pinned down from the
    paper and is an explicit argument.  For IG, multiply ``data_norm`` by the largest
    ``||x - baseline||_inf`` (IG is the path-averaged gradient times ``x - baseline``)."""
    return constant * data_norm * gradient_complexity * math.log(2 * width) * math.log(n) / n \
        + _bound_tail(n, delta, c_conf)


def smoothgrad_lipschitz(sigma: float) -> float:
    """sqrt(2/pi) / sigma: the Lipschitz constant of f -> grad(f * N(0, sigma^2 I)) from
    (bounded functions, sup norm) to (vectors, L2 norm), at any point and in any dimension.

    By Stein's lemma grad(f * phi_sigma)(x) = E[f(x + eps) eps] / sigma^2, so for two functions with
    sup|f - g| <= D and any unit vector u, |u . (grad f_s - grad g_s)| <= D E|u . eps| / sigma^2
    = D sigma sqrt(2/pi) / sigma^2.  The constant is attained (1-D step functions)."""
    sigma = check_positive("sigma", sigma)
    return SQRT_2_OVER_PI / sigma


def smoothgrad_bound(sigma: float, spectral_complexity: float, *, n: int, data_norm: float,
                     width: int, delta: float = 0.05, constant: float = 1.0, c_conf: float = 3.0) -> float:
    """Theorem 2 of the ICLR paper (shape; SmoothGrad with noise sigma): the generalization gap of
    the SmoothGrad interpretation loss is at most

        constant * (sqrt(2/pi) / sigma) * ||X||_2 * R_A * ln(2W) * ln(n) / n + c_conf * sqrt(ln(1/delta) / (2n))

    Smoothing turns a cover of the *networks* (complexity R_A, not the gradient network's) into a
    cover of their SmoothGrad maps at a scale multiplied by :func:`smoothgrad_lipschitz`; hence the
    1/sigma factor.  The sqrt(2/pi) factor is derived (exact); the overall constant is an argument.
    Raises a ValueError for sigma <= 0."""
    return constant * smoothgrad_lipschitz(sigma) * data_norm * spectral_complexity * math.log(2 * width) \
        * math.log(n) / n + _bound_tail(n, delta, c_conf)


def complexity_factor(*, n: int, data_norm: float, width: int, sigma: float | None = None,
                      constant: float = 1.0) -> float:
    """What multiplies the complexity in :func:`gradient_bound` (``sigma=None``) or in
    :func:`smoothgrad_bound`: ``constant · ||X||_2 · ln(2W) · ln(n) / n``, times ``√(2/π)/σ`` for SmoothGrad.
    A bound can only fail to fall with ``n`` where the measured complexity grows faster than this shrinks."""
    factor = constant * data_norm * math.log(2 * width) * math.log(n) / n
    return factor if sigma is None else smoothgrad_lipschitz(sigma) * factor


def sgd_parameter_divergence(n: int, *, lipschitz: float, step_sizes: Sequence[float]) -> float:
    """Hardt, Recht & Singer (2016, Thm 3.8) bound on E||w_T - w'_T|| for SGD on convex,
    ``lipschitz``-Lipschitz, smooth losses with steps alpha_t <= 2/beta, for training sets that
    differ in one of n examples: ``2 L sum_t alpha_t / n``.  The follow-up paper's stability
    analysis starts from this kind of parameter stability."""
    check_positive("n", n, integer=True)
    return 2.0 * lipschitz * float(sum(step_sizes)) / n


def stability_bound(method: str, *, param_divergence: float, sigma: float | None = None,
                    weight_lipschitz: float = 1.0, gradient_weight_lipschitz: float = 1.0,
                    input_range: float = 1.0) -> float:
    """Stability error of a saliency map (follow-up paper's analysis; shape with explicit constants):
    how far the map moves when the training set changes, ``E||map_w(x) - map_w'(x)||``, given the
    parameter divergence ``E||w - w'||``:

    * ``"gradient"``: ``L_grad,w * div`` (``gradient_weight_lipschitz``: Lipschitz constant of
      grad_x f_w in w; unbounded for ReLU networks);
    * ``"integrated_gradients"``: ``input_range * L_grad,w * div`` (IG = path-averaged gradient times
      x - baseline, ``input_range`` = max |x - baseline|);
    * ``"smoothgrad"``: ``sqrt(2/pi)/sigma * L_f,w * div`` (``weight_lipschitz``: Lipschitz
      constant of f_w(x) in w, uniformly in x), by :func:`smoothgrad_lipschitz` — falls like 1/sigma.
    """
    if method == "gradient":
        return gradient_weight_lipschitz * param_divergence
    if method == "integrated_gradients":
        return input_range * gradient_weight_lipschitz * param_divergence
    if method == "smoothgrad":
        if sigma is None:
            raise ValueError("sigma is required for method='smoothgrad'")
        return smoothgrad_lipschitz(sigma) * weight_lipschitz * param_divergence
    raise ValueError(f"method must be 'gradient', 'integrated_gradients' or 'smoothgrad', got {method!r}")


def fidelity_bound(sigma: float, *, hessian_bound: float, dim: int) -> float:
    """Fidelity error of SmoothGrad to the plain gradient (follow-up paper's trade-off; shape):
    if grad f is H-Lipschitz in x then ``||E grad f(x + eps) - grad f(x)|| <= H E||eps|| <=
    H sigma sqrt(d)`` — grows linearly in sigma."""
    sigma = check_positive("sigma", sigma)
    check_positive("dim", dim, integer=True)
    return hessian_bound * sigma * math.sqrt(dim)


def balancing_sigma(stability_coef: float, fidelity_coef: float) -> float:
    """The sigma minimising ``stability_coef / sigma + fidelity_coef * sigma`` (a stability bound
    falling like 1/sigma plus a fidelity bound growing like sigma): ``sqrt(a / b)``."""
    check_positive("stability_coef", stability_coef)
    check_positive("fidelity_coef", fidelity_coef)
    return math.sqrt(stability_coef / fidelity_coef)


def crossing_point(xs: Sequence[float], ys_down: Sequence[float], ys_up: Sequence[float]) -> float:
    """The x where a decreasing curve meets an increasing one, by linear interpolation between the
    grid points (the ends of ``xs`` when they do not cross) — marks the balancing sigma of measured
    stability and fidelity curves."""
    d = [a - b for a, b in zip(ys_down, ys_up)]
    if len(d) != len(xs) or not d:
        raise ValueError("xs, ys_down and ys_up must be non-empty and of equal length")
    for i in range(len(d) - 1):
        if d[i] == 0:
            return float(xs[i])
        if d[i] * d[i + 1] < 0:
            t = d[i] / (d[i] - d[i + 1])
            return float(xs[i] + t * (xs[i + 1] - xs[i]))
    return float(xs[-1] if d[-1] > 0 else xs[0])


def bound_inputs(model: nn.Module, x: Tensor, *, reference=None, smoothness: float = 1.0,
                 n_iter: int = 200) -> dict:
    """What the bound calculators need, measured on a trained ``model`` and its training inputs
    ``x``: R_A (Bartlett, ReLU/max-pool 1-Lipschitz), the gradient-map complexity (with
    ``smoothness`` standing in for the activation derivative's Lipschitz constant, which is infinite
    for ReLU), the widest layer W, ``||X||_2`` and n."""
    rows = layer_norms(model, tuple(x.shape[1:]), reference=reference, n_iter=n_iter)
    s = [r["spectral"] for r in rows]
    b = [r["group21"] for r in rows]
    width = 0
    for name, mod, shape in linear_layers(model, tuple(x.shape[1:])):
        width = max(width, math.prod(shape[1:]), mod.out_features if isinstance(mod, nn.Linear) else 0)
    return dict(R_A=spectral_complexity(s, b), R_grad=gradient_map_complexity(s, b, smoothness=smoothness),
                spectral=s, group21=b, width=int(width), data_norm=float(x.double().norm()), n=int(x.shape[0]))
