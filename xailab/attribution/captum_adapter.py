"""Any Captum attribution class as an xailab method ``method(model, x, target, **options)``.

``captum("Saliency")`` or ``captum(captum.attr.Occlusion)`` returns a method function; extra
options go to the class's ``attribute()``. Our common option names are translated:
``baseline -> baselines``, ``steps -> n_steps``, ``batch_size -> internal_batch_size`` or
``perturbations_per_eval`` (whichever the class takes), ``layer`` (a module name or module) to
the constructor of ``Layer*`` classes and ``GuidedGradCam``, ``seed`` seeds the global torch and
numpy RNGs that Captum draws from, restoring the caller's RNG states afterwards.

Layer attributions ``(N, K, h, w)`` are summed over ``K`` and upsampled bilinearly to x's
``H × W``: one channel ``(N, 1, H, W)``, like ``grad_cam``.

Registered with defaults for small images: ``deeplift``, ``lrp``, ``occlusion`` (window =
H/8 px, stride = window/2), ``lime`` and ``kernel_shap`` (features = square patches of ``patch``
px, default H/8, so 64 features; ``n_samples=256``), ``gradient_shap`` (baselines: black and
white images; ``sigma`` = noise as a fraction of the batch's value range, default 0).

Every call runs under the same guard as our own methods (eval mode required; modes and
``requires_grad`` restored) and removes any hook or attribute Captum left on a module, errors
included.
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.attribution._core import batch_rows, check_input, check_outputs, explaining, targets_for
from xailab.attribution.cam import find_layer
from xailab.attribution.gradients import as_baseline
from xailab.attribution.registry import register
from xailab.utils import forked_rng

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")
_CAPTUM_ATTRS = ("rule", "activations", "activation")
# Captum's informational warnings about what the adapter already handles (hooks it sets and
# removes, inputs it marks as requiring grad, Lime/KernelShap looping over a batch).
_QUIET = ("Input Tensor .* did not already require gradients", "Setting backward hooks",
          "Setting forward, backward hooks", "You are providing multiple inputs for Lime")


@contextlib.contextmanager
def _captum_cleanup(model: nn.Module) -> Iterator[None]:
    """Remove hooks and LRP/DeepLift attributes that appear on modules during the call."""
    before = [(m, {d: set(getattr(m, d, {})) for d in _HOOK_DICTS},
               {a for a in _CAPTUM_ATTRS if a in m.__dict__}) for m in model.modules()]
    try:
        yield
    finally:
        for m, hooks, attrs in before:
            for d, keys in hooks.items():
                table = getattr(m, d, None)
                for key in [k for k in (table or {}) if k not in keys]:
                    del table[key]
            for a in _CAPTUM_ATTRS:
                if a in m.__dict__ and a not in attrs:
                    delattr(m, a)




def _resolve(cls_or_name):
    import captum.attr

    if isinstance(cls_or_name, str):
        cls = getattr(captum.attr, cls_or_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, captum.attr.Attribution)):
            known = sorted(n for n, c in vars(captum.attr).items()
                           if inspect.isclass(c) and issubclass(c, captum.attr.Attribution))
            raise ValueError(f"unknown Captum attribution class {cls_or_name!r}; known: {', '.join(known)}")
        return cls
    if inspect.isclass(cls_or_name) and issubclass(cls_or_name, captum.attr.Attribution):
        return cls_or_name
    raise TypeError(f"expected a Captum attribution class or its name, got {cls_or_name!r}")


def _check_targets(model: nn.Module, x: Tensor, t: Tensor) -> None:
    """Fail early, with our message, when a target is out of the model's output range."""
    with torch.no_grad():
        check_outputs(model(x[:1]), t)


def _translate(params, options: dict, x: Tensor) -> dict:
    """Our option names -> the names this Captum ``attribute`` takes (others pass through)."""
    out = dict(options)
    if "baseline" in out:
        b = out.pop("baseline")
        out["baselines"] = b if isinstance(b, (int, float)) or b is None else as_baseline(b, x)
    if "steps" in out:
        out["n_steps"] = out.pop("steps")
    if "batch_size" in out:
        rows = batch_rows(out.pop("batch_size"), x)
        if "internal_batch_size" in params:
            out["internal_batch_size"] = rows
        if "perturbations_per_eval" in params:
            # Captum applies each perturbation to the whole batch: one pass holds ppe * N rows.
            out["perturbations_per_eval"] = max(1, rows // max(1, x.shape[0]))
    unknown = [k for k in out if k not in params]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f"unexpected option(s) {', '.join(unknown)}; this method takes "
                        f"{', '.join(p for p in params if p not in ('self', 'inputs', 'target'))}")
    return out


def _upsample(attr: Tensor, x: Tensor) -> Tensor:
    """A layer attribution ``(N, K, h, w)`` -> ``(N, 1, H, W)``: channel sum, bilinear upsampling."""
    if attr.ndim == 4 and x.ndim == 4 and attr.shape[1:] != x.shape[1:]:
        attr = attr.sum(1, keepdim=True)
        if attr.shape[2:] != x.shape[2:]:
            attr = F.interpolate(attr, size=x.shape[2:], mode="bilinear", align_corners=False)
    return attr


def _run(cls, model: nn.Module, x: Tensor, target, init_kwargs: dict, options: dict) -> Tensor:
    check_input(x)
    t = targets_for(target, x)
    options = dict(options)
    seed = options.pop("seed", None)
    layer = options.pop("layer", None)
    takes_layer = "layer" in inspect.signature(cls.__init__).parameters
    if layer is not None and not takes_layer:
        raise TypeError(f"{cls.__name__} takes no layer; layer= is for Layer* classes and GuidedGradCam")
    with explaining(model, cls.__name__), _captum_cleanup(model):
        _check_targets(model, x, t)
        if takes_layer:
            explainer = cls(model, find_layer(model, layer), **init_kwargs)
        else:
            explainer = cls(model, **init_kwargs)
        params = inspect.signature(explainer.attribute).parameters
        kwargs = _translate(params, options, x)
        if "target" in params:  # a few classes (LayerActivation) explain no output
            kwargs["target"] = t
        # Captum draws from the global RNGs (GradientShap's baselines from numpy's): seed them for the call
        seeded = contextlib.nullcontext() if seed is None else forked_rng(seed, x.device, numpy=True)
        with seeded, warnings.catch_warnings():
            for message in _QUIET:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            attr = explainer.attribute(x.detach(), **kwargs)
    if isinstance(attr, tuple):
        attr = attr[0]
    return _upsample(attr.detach().to(x.dtype), x)  # some Captum classes accumulate in float32


def captum(cls_or_name, **init_kwargs) -> Callable:
    """A method ``fn(model, x, target, **options)`` backed by a Captum attribution class.

    ``init_kwargs`` go to the class's constructor (after the model, and the layer for layer
    methods); ``options`` to its ``attribute()`` after translating our common names.
    """
    cls = _resolve(cls_or_name)
    if cls.__name__ == "NoiseTunnel":
        raise TypeError("NoiseTunnel wraps another attribution, not a model: use xailab's ensembles "
                        "(smoothgrad, smoothgrad_sq, vargrad with base=...)")

    def method(model: nn.Module, x: Tensor, target, **options) -> Tensor:
        return _run(cls, model, x, target, init_kwargs, options)

    method.__name__ = method.__qualname__ = f"captum_{cls.__name__}"
    method.__doc__ = f"Captum's ``{cls.__name__}`` through xailab's adapter."
    return method


def _patches(x: Tensor, patch: int | None) -> Tensor:
    """Feature ids of square patches (shared by the channels), shaped like x; (N, D): one id each."""
    if x.ndim == 2:
        return torch.arange(x.shape[1], device=x.device).expand_as(x)
    h, w = x.shape[2:]
    p = max(1, h // 8) if patch is None else int(patch)
    rows = torch.arange(h, device=x.device) // p
    cols = torch.arange(w, device=x.device) // p
    ids = rows[:, None] * (int(cols.max()) + 1) + cols[None, :]
    return ids.expand_as(x)


@register("deeplift")
def deeplift(model: nn.Module, x: Tensor, target, *, baseline=0.0, **options) -> Tensor:
    """DeepLIFT (Shrikumar et al. 2017, Rescale rule) via Captum; baseline default 0."""
    return _run(_resolve("DeepLift"), model, x, target, {}, {"baseline": baseline, **options})


@register("lrp")
def lrp(model: nn.Module, x: Tensor, target, **options) -> Tensor:
    """Layer-wise relevance propagation (Bach et al. 2015) via Captum's LRP (its default rules:
    epsilon rule for Conv/Linear). The model must consist of layers Captum has rules for."""
    return _run(_resolve("LRP"), model, x, target, {}, options)


@register("occlusion")
def occlusion(model: nn.Module, x: Tensor, target, *, window: int | None = None, stride: int | None = None,
              baseline=0.0, batch_size: int | None = None, **options) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014): score drop when a ``window``-px square (all channels) is
    replaced by ``baseline``; windows slide by ``stride``. Defaults: window H/8, stride window/2."""
    check_input(x)
    if x.ndim == 4:
        win = max(1, x.shape[2] // 8) if window is None else int(window)
        step = max(1, win // 2) if stride is None else int(stride)
        shapes, strides = (x.shape[1], win, win), (x.shape[1], step, step)
    else:
        shapes, strides = (1 if window is None else int(window),), (1 if stride is None else int(stride),)
    return _run(_resolve("Occlusion"), model, x, target, {},
                {"sliding_window_shapes": shapes, "strides": strides, "baseline": baseline,
                 "batch_size": batch_size, **options})


@register("lime", options=("n_samples",))
def lime(model: nn.Module, x: Tensor, target, *, patch: int | None = None, n_samples: int = 256,
         batch_size: int | None = None, seed: int = 0, interpretable_model=None, **options) -> Tensor:
    """LIME (Ribeiro et al. 2016) via Captum over square-patch features (``patch`` px, default
    H/8): a linear model fitted to ``n_samples`` random on/off patch masks per input, weighted by
    their similarity to x. Default surrogate: ridge regression (alpha 1, as the LIME package);
    Captum's default lasso zeroes every weight when the score barely moves."""
    options.setdefault("feature_mask", _patches(x, patch) if isinstance(x, Tensor) else None)
    from captum._utils.models.linear_model import SkLearnRidge

    init = {"interpretable_model": interpretable_model or SkLearnRidge(alpha=1.0)}
    return _run(_resolve("Lime"), model, x, target, init,
                {"n_samples": n_samples, "batch_size": batch_size, "seed": seed, **options})


@register("kernel_shap", options=("n_samples",))
def kernel_shap(model: nn.Module, x: Tensor, target, *, patch: int | None = None, n_samples: int = 256,
                batch_size: int | None = None, seed: int = 0, **options) -> Tensor:
    """Kernel SHAP (Lundberg & Lee 2017) via Captum over square-patch features (as ``lime``)."""
    options.setdefault("feature_mask", _patches(x, patch) if isinstance(x, Tensor) else None)
    return _run(_resolve("KernelShap"), model, x, target, {},
                {"n_samples": n_samples, "batch_size": batch_size, "seed": seed, **options})


@register("gradient_shap", options=("sigma", "n_samples"))
def gradient_shap(model: nn.Module, x: Tensor, target, *, baseline=None, n_samples: int = 16,
                  sigma: float = 0.0, seed: int = 0, **options) -> Tensor:
    """Gradient SHAP (expected gradients with noise) via Captum. ``baseline``: a tensor of
    baseline samples ``(B, *x.shape[1:])`` (default: an all-min and an all-max image of the
    batch); ``sigma``: noise std as a fraction of the batch's value range (Captum's ``stdevs``)."""
    check_input(x)
    lo, hi = x.min().item(), x.max().item()
    if baseline is None:
        baseline = torch.stack([torch.full_like(x[0], lo), torch.full_like(x[0], hi)])
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    return _run(_resolve("GradientShap"), model, x, target, {},
                {"baselines": baseline, "n_samples": n_samples, "stdevs": float(sigma) * (hi - lo),
                 "seed": seed, **options})
