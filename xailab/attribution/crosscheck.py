"""The engine's identities, as measurements a notebook can show (register ATTR-2, ATTR-3, ATTR-4).

- :func:`captum_agreement` — every method shared with Captum against Captum's own, on the same inputs
  (SmoothGrad's NoiseTunnel fed the same noise);
- :func:`ensemble_agreement` — SmoothGrad, SmoothGrad² and VarGrad against their definitions, computed by hand
  from the same noisy inputs;
- :func:`controls_unchanged` — the random and Sobel controls, bitwise, along a cascading re-initialisation.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.attribution.cam import find_layer
from xailab.attribution.ensembles import ensemble, noise_scale
from xailab.attribution.registry import attribute
from xailab.attribution.targets import resolve_target
from xailab.utils import seeded_generator

__all__ = ["captum_agreement", "controls_unchanged", "ensemble_agreement"]


def _relative(ours: Tensor, theirs: Tensor) -> float:
    return float((ours.detach() - theirs.detach()).abs().max() / theirs.detach().abs().max().clamp_min(1e-30))


@contextlib.contextmanager
def _noise_tunnel_draws(draws: Tensor):
    """Make Captum's NoiseTunnel add ``draws`` (n_samples, N, ...) instead of its own noise; restored on exit."""
    from captum.attr import NoiseTunnel

    original = NoiseTunnel.__dict__["_add_noise_to_input"]

    def same_noise(inp, stdev, nt_samples_partition):
        # Captum's layout: each input repeated nt_samples times in a row (sample index fastest)
        n = draws.shape[0]
        return inp.repeat_interleave(n, 0) + stdev * draws.transpose(0, 1).reshape(-1, *inp.shape[1:])

    NoiseTunnel._add_noise_to_input = staticmethod(same_noise)
    try:
        yield
    finally:
        NoiseTunnel._add_noise_to_input = original


def captum_agreement(model: nn.Module, x: Tensor, target, *, ig_steps: int = 32, n_samples: int = 5,
                     seed: int = 0) -> dict[str, float]:
    """``{method: max |ours − Captum's| / max |Captum's|}`` for Gradient, Input×Gradient, Integrated
    Gradients (Gauss–Legendre, ``ig_steps``), Guided Backprop, Grad-CAM, Guided Grad-CAM (last convolution)
    and SmoothGrad (``n_samples`` draws, the same in both). Each image of ``x`` is shifted to span [0, 1] so
    that SmoothGrad's σ as a fraction of the range equals Captum's absolute ``stdevs``."""
    from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerGradCam,
                             NoiseTunnel, Saliency)

    x = x.detach().clone()
    lo = x.flatten(1).amin(1).view(-1, *[1] * (x.ndim - 1))
    hi = x.flatten(1).amax(1).view(-1, *[1] * (x.ndim - 1))
    x = (x - lo) / (hi - lo)
    t = resolve_target(target, x)
    layer = find_layer(model, None)
    name = next(n for n, m in model.named_modules() if m is layer)
    out = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.enable_grad())
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message="Setting backward hooks", category=UserWarning)
        out["gradient"] = _relative(attribute(model, x, t, method="gradient"),
                                    Saliency(model).attribute(x.clone().requires_grad_(), target=t, abs=False))
        out["input_x_gradient"] = _relative(attribute(model, x, t, method="input_x_gradient"),
                                            InputXGradient(model).attribute(x.clone().requires_grad_(), target=t))
        out["integrated_gradients"] = _relative(
            attribute(model, x, t, method="integrated_gradients", steps=ig_steps),
            IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=ig_steps))
        out["guided_backprop"] = _relative(attribute(model, x, t, method="guided_backprop"),
                                           GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t))
        cam = F.interpolate(LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True),
                            size=x.shape[2:], mode="bilinear", align_corners=False)
        out["grad_cam"] = _relative(attribute(model, x, t, method="grad_cam"), cam)
        out["guided_grad_cam"] = _relative(
            attribute(model, x, t, method="guided_grad_cam", layer=name),
            GuidedGradCam(model, layer).attribute(x.clone().requires_grad_(), target=t, interpolate_mode="bilinear"))
        draws = torch.randn(n_samples, *x.shape, generator=seeded_generator(seed), dtype=x.dtype)
        ours = ensemble(model, x, t, sigma=0.15, n_samples=n_samples, draws=draws)["smoothgrad"]
        stack.enter_context(_noise_tunnel_draws(draws))
        theirs = NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=n_samples, stdevs=0.15,
                                                        target=t, abs=False)
        out["smoothgrad"] = _relative(ours, theirs)
    return out


def ensemble_agreement(model: nn.Module, x: Tensor, target, *, base: str = "gradient", sigma: float = 0.15,
                       n_samples: int = 8, seed: int = 0) -> dict[str, float]:
    """The three statistics of one :func:`~xailab.attribution.ensemble` call against their definitions from the
    base maps at the same noisy inputs: ``{"smoothgrad": max |SG − mean| / max |mean|, "vargrad": max |VarGrad −
    (SG² − SG ⊙ SG)| / max |SG²|}``."""
    draws = torch.randn(n_samples, *x.shape, generator=seeded_generator(seed), dtype=x.dtype)
    stats = ensemble(model, x, target, base=base, sigma=sigma, n_samples=n_samples, draws=draws)
    scale = noise_scale(x, sigma)
    each = torch.stack([attribute(model, x + scale * d, target, method=base) for d in draws])
    mean, sq = each.mean(0), (each ** 2).mean(0)
    return {"smoothgrad": _relative(stats["smoothgrad"], mean),
            "smoothgrad_sq": _relative(stats["smoothgrad_sq"], sq),
            "vargrad": float((stats["vargrad"] - (stats["smoothgrad_sq"] - stats["smoothgrad"] ** 2)).abs().max()
                             / stats["smoothgrad_sq"].abs().max().clamp_min(1e-30))}


def controls_unchanged(model: nn.Module, x: Tensor, target, stages, *, seed: int = 0) -> bool:
    """Whether the random (same ``seed``) and Sobel maps are bitwise identical for ``model`` and for every model
    of ``stages`` (an iterable of models, e.g. the steps of a cascading re-initialisation)."""
    ref = {m: attribute(model, x, target, method=m, **({"seed": seed} if m == "random" else {}))
           for m in ("random", "sobel")}
    return all(torch.equal(ref[m], attribute(other, x, target, method=m, **({"seed": seed} if m == "random" else {})))
               for other in stages for m in ref)
