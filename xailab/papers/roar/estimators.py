"""ROAR's estimators, the relevance of whole data sets, and the on-disk relevance cache.

An *estimator* is a method name of :mod:`xailab.attribution.specs` (``"gradient"``,
``"vargrad(integrated_gradients)"``, ``"gradient²"`` ...) with options, or a pair of precomputed
relevance tensors. Squaring changes the ranking of signed maps (the paper's code ranks signed
values: ``reduce="sum"``); with the default ``abs-sum`` pixel ranking it only re-weights channels.

The 18 estimators of the paper are :data:`PAPER_ESTIMATORS`: for each base (gradient, guided
backprop, integrated gradients) the base alone, its square, SmoothGrad, SmoothGrad squared
(``smoothgrad(base)²``), SmoothGrad² (``smoothgrad_sq(base)``, the mean of squares) and VarGrad.
The squared variants are only formed for the signed maps: squaring a non-negative map
(SmoothGrad², VarGrad) does not change its ranking.  :data:`CONTROLS` are ``random`` and ``sobel``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from xailab.attribution import TARGETS, MethodSpec, method_maps, method_table
from xailab.attribution.fullgrad import fullgrad
from xailab.attribution.specs import SQUARED, same_options
from xailab.hooks import model_device
from xailab.utils import atomic_file

BASES = ("gradient", "guided_backprop", "integrated_gradients")
CONTROLS = ("random", "sobel")
PAPER_ESTIMATORS = tuple(
    name for base in BASES for name in (
        base, base + SQUARED, f"smoothgrad({base})", f"smoothgrad({base}){SQUARED}",
        f"smoothgrad_sq({base})", f"vargrad({base})"))
CACHE_VERSION = 2

__all__ = ["PAPER_ESTIMATORS", "CONTROLS", "BASES", "relevance_maps", "signed_fullgrad_maps", "cache_key", "atomic_save",
           "model_fingerprint"]


# --------------------------------------------------------------------------- cache
def _hash_tensor(h, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    # reshape first: a 0-d tensor (batch-norm's num_batches_tracked) cannot be viewed as bytes
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's class and every parameter and buffer."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, t)
    return h.hexdigest()


def _hash_options(h, options: Mapping) -> None:
    plain = {k: v for k, v in options.items() if not isinstance(v, Tensor)}
    h.update(json.dumps(plain, sort_keys=True, default=repr).encode())
    for k in sorted(k for k, v in options.items() if isinstance(v, Tensor)):
        h.update(k.encode())
        _hash_tensor(h, options[k])


def cache_key(model_hash: str, spec: MethodSpec, data_x: Tensor, data_y: Tensor, target: str, seed: int) -> str:
    """Key of one cached relevance map: model weights, raw method name and options, the data,
    the explained class and the seed."""
    h = hashlib.sha256(f"roar-relevance-v{CACHE_VERSION}|{model_hash}|{spec.raw}|{target}|{seed}|".encode())
    _hash_options(h, spec.options)
    _hash_tensor(h, data_x)
    _hash_tensor(h, data_y)
    return h.hexdigest()[:32]


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` through :func:`xailab.utils.atomic_file`: a reader sees the old file or the
    complete new one, never a partial write (an interrupted sweep leaves no corrupt cache entry)."""
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable entry (older format, foreign file): recompute and overwrite
        return None


# --------------------------------------------------------------------------- computation
def relevance_maps(model: nn.Module, data, estimators, *, target: str = "label", defaults=None,
                   seed: int = 0, batch_size: int = 128, cache_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> dict[str, Tensor]:
    """Relevance of every sample of ``data`` for each estimator, shaped like ``data.x`` (float32).

    ``estimators``: a method table (names, or ``{label: name | (name, options)}``); ``defaults``:
    per-method option defaults (``{"integrated_gradients": {"steps": 16}, "ensemble":
    {"n_samples": 15}}``). ``target``: explain the true ``"label"`` or the model's ``"predicted"``
    class (the reference code's choice). Maps are computed with
    :func:`xailab.attribution.method_maps` (batch ``b`` seeded from ``seed``). With ``cache_dir``
    (a folder the caller chooses) raw maps are cached under ``cache_dir/roar/`` keyed by
    :func:`cache_key`, squares formed on load; ``None`` (default) caches nothing.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    table = method_table(estimators, defaults)
    raws: dict[str, MethodSpec] = {}      # one raw (unsquared) map per distinct method and options
    raw_of: dict[str, str] = {}
    for label, spec in table.items():
        key = next((k for k, r in raws.items() if r.raw == spec.raw and same_options(r.options, spec.options)),
                   None)
        if key is None:
            key = f"{spec.raw}#{len(raws)}"
            raws[key] = MethodSpec(spec.method, spec.stat, False, spec.options)
        raw_of[label] = key
    model_hash = model_fingerprint(model) if cache_dir is not None else None
    cache = Path(cache_dir) / "roar" if cache_dir is not None else None
    found: dict[str, Tensor] = {}
    paths: dict[str, Path] = {}
    for key, spec in raws.items():
        if cache is None:
            continue
        paths[key] = cache / f"{cache_key(model_hash, spec, data.x, data.y, target, seed)}.pt"
        entry = _load(paths[key]) if paths[key].exists() else None
        if entry is not None:
            found[key] = entry
    missing = {key: spec for key, spec in raws.items() if key not in found}
    if missing:
        maps = method_maps(model, data.x, target, missing, labels=data.y, batch_size=batch_size, seed=seed,
                           progress=progress, desc="relevance")
        for key, m in maps.items():
            m = m.float()
            if m.shape[0] != data.x.shape[0] or m.shape[2:] != data.x.shape[2:]:
                raise ValueError(f"estimator {missing[key].raw!r} returned shape {tuple(m.shape)} for inputs "
                                 f"{tuple(data.x.shape)}")
            found[key] = m
            if cache is not None:
                atomic_save(m, paths[key])
    out = {}
    for label, spec in table.items():
        raw = found[raw_of[label]]
        out[label] = raw ** 2 if spec.squared else raw
    return out


def signed_fullgrad_maps(model: nn.Module, data, *, batch_size: int = 256) -> Tensor:
    """Signed FullGrad of each image's predicted class as a ROAR ranking, most positive first: each image's signed
    map (``post="signed"``) shifted so that its minimum is zero, ``(N, 1, H, W)`` on the CPU. The shift keeps the
    order and makes ``abs-sum`` pixel ranking rank by the signed value."""
    device = model_device(model)
    out = []
    for i in range(0, len(data), batch_size):
        x = data.x[i:i + batch_size].to(device)
        with torch.no_grad():
            target = model(x).argmax(1)
        out.append(fullgrad(model, x, target, post="signed").cpu())
    m = torch.cat(out)
    return m - m.amin(dim=(1, 2, 3), keepdim=True)
