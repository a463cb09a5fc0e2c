"""Estimator names, relevance of whole datasets, and the on-disk relevance cache.

An *estimator* is named by a string:

- any method registered in :data:`xailab.attribution.METHODS` (``"gradient"``, ``"random"``,
  ``"sobel"``, ``"grad_cam"`` ...);
- ``"<stat>(<base>)"`` with ``stat`` in ``smoothgrad | smoothgrad_sq | vargrad``: the ensemble
  statistic of a registered base method.  All statistics asked for with the same base are computed
  from ONE set of noisy samples (:func:`xailab.attribution.ensemble`);
- a trailing ``"²"`` (or ``"^2"``): the element-wise square of that map.  Squaring changes the
  ranking of signed maps (the paper's code ranks signed values: ``reduce="sum"``); with the default
  ``abs-sum`` pixel ranking it only re-weights channels.

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
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from xailab.utils import progress as progress_bar, resolve_device

ENSEMBLE_STATS = ("smoothgrad", "smoothgrad_sq", "vargrad")
BASES = ("gradient", "guided_backprop", "integrated_gradients")
SQUARED = "²"
CONTROLS = ("random", "sobel")
PAPER_ESTIMATORS = tuple(
    name for base in BASES for name in (
        base, base + SQUARED, f"smoothgrad({base})", f"smoothgrad({base}){SQUARED}",
        f"smoothgrad_sq({base})", f"vargrad({base})"))
ENSEMBLE_KEYS = ("sigma", "n_samples")  # options of the ensemble itself, the rest goes to the base
CACHE_VERSION = 1

__all__ = ["PAPER_ESTIMATORS", "CONTROLS", "ENSEMBLE_STATS", "Estimator", "parse_estimator",
           "relevance_maps", "cache_key", "atomic_save"]


@dataclass(frozen=True)
class Estimator:
    """A parsed estimator name: ``method`` (registered), optional ensemble ``stat``, ``squared``."""
    name: str
    method: str
    stat: str | None = None
    squared: bool = False

    @property
    def raw(self) -> str:
        """The name of the map before squaring (what is computed and cached)."""
        return f"{self.stat}({self.method})" if self.stat else self.method


def _registered() -> Mapping:
    from xailab.attribution import METHODS

    return METHODS


def parse_estimator(name: str) -> Estimator:
    """Parse and validate an estimator name; unknown names raise a ValueError listing the options."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"estimator must be a non-empty method name, got {name!r}")
    core, squared = name.strip(), False
    for suffix in (SQUARED, "^2"):
        if core.endswith(suffix):
            core, squared = core[: -len(suffix)], True
    stat, method = None, core
    match = re.fullmatch(r"(\w+)\((\w+)\)", core)
    if match:
        stat, method = match.groups()
        if stat not in ENSEMBLE_STATS:
            raise ValueError(f"unknown ensemble {stat!r} in estimator {name!r}; expected one of {ENSEMBLE_STATS}")
    methods = _registered()
    if method not in methods:
        raise ValueError(f"unknown estimator {name!r}: {method!r} is not a registered attribution method "
                         f"(known: {', '.join(sorted(methods))}; ensembles as 'vargrad(gradient)', "
                         f"squares with a trailing '{SQUARED}')")
    return Estimator(name=name, method=method, stat=stat, squared=squared)


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


def cache_key(model_hash: str, raw: str, options: Mapping, data_x: Tensor, data_y: Tensor, target: str,
              seed: int) -> str:
    """Key of one cached relevance map: model weights, estimator, its options, the data, target, seed."""
    h = hashlib.sha256(f"roar-relevance-v{CACHE_VERSION}|{model_hash}|{raw}|{target}|{seed}|".encode())
    h.update(json.dumps(options, sort_keys=True, default=repr).encode())
    _hash_tensor(h, data_x)
    _hash_tensor(h, data_y)
    return h.hexdigest()[:32]


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a reader sees the
    old file or the complete new one, never a partial write (an interrupted sweep leaves no corrupt
    cache entry; the temporary file is removed on error)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache entry is ordinary data
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable entry (older format, foreign file): recompute and overwrite
        return None


# --------------------------------------------------------------------------- computation
def _options_for(est: Estimator, options: Mapping) -> dict:
    """The options that affect one raw map: its base method's, plus the ensemble's for ensembles."""
    out = dict(options.get(est.method, {}))
    if est.stat:
        out["_ensemble"] = {k: v for k, v in dict(options.get("ensemble", {})).items()}
    return out


def _targets(model, data, target: str, batch_size: int, device) -> Tensor:
    if target == "label":
        return data.y.long()
    if target == "predicted":
        from xailab.train import predict

        return predict(model, data.x, batch_size=batch_size, device=device).argmax(dim=1).cpu()
    raise ValueError(f"target must be 'predicted' or 'label', got {target!r}")


def _compute(model, x, t, group: list[Estimator], options: Mapping, seed: int, batch_size: int,
             device, show: bool) -> dict[str, Tensor]:
    """Raw maps for estimators sharing one method: one ensemble call per batch for all its stats."""
    from xailab.attribution import attribute, ensemble

    method = group[0].method
    base_opts = dict(options.get(method, {}))
    stats = sorted({e.stat for e in group if e.stat})
    plain = any(e.stat is None for e in group)
    out: dict[str, list[Tensor]] = {e.raw: [] for e in group}
    starts = range(0, len(x), batch_size)
    for b, start in enumerate(progress_bar(starts, show, desc=f"relevance {method}", leave=False)):
        xb = x[start:start + batch_size].to(device)
        tb = t[start:start + batch_size].to(device)
        bseed = seed * 100_003 + b  # a different, reproducible seed per batch
        if plain:
            opts = dict(base_opts)
            if method == "random":
                opts.setdefault("seed", bseed)
            out[method].append(attribute(model, xb, tb, method=method, **opts).detach().float().cpu())
        if stats:
            ens = dict(options.get("ensemble", {}))
            maps = ensemble(model, xb, tb, base=method, stats=tuple(stats), seed=bseed, **ens, **base_opts)
            for s in stats:
                out[f"{s}({method})"].append(maps[s].detach().float().cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def relevance_maps(model: nn.Module, data, estimators: Sequence[str], *, target: str = "predicted",
                   options: Mapping | None = None, seed: int = 0, batch_size: int = 128, device="auto",
                   cache_dir: str | os.PathLike | None = "data/cache", progress: bool = True,
                   ) -> dict[str, Tensor]:
    """Relevance of every sample of ``data`` for each estimator name, shaped like ``data.x``.

    ``options``: per-method option dicts keyed by base method name (``{"integrated_gradients":
    {"steps": 16}}``) plus ``"ensemble"`` (``sigma``, ``n_samples``).  ``target``: explain the
    model's ``"predicted"`` class (the reference code's choice) or the true ``"label"``.
    Raw maps are cached in ``cache_dir/roar/`` keyed by :func:`cache_key`; squares are formed on
    load.  ``cache_dir=None`` disables the cache.
    """
    options = dict(options or {})
    device = resolve_device(device)
    parsed = [parse_estimator(e) for e in estimators]
    model_hash = model_fingerprint(model)
    cache = Path(cache_dir) / "roar" if cache_dir is not None else None
    raw: dict[str, Tensor] = {}
    missing: dict[str, list[Estimator]] = {}
    keys: dict[str, str] = {}
    for est in parsed:
        if est.raw in keys:
            continue
        keys[est.raw] = cache_key(model_hash, est.raw, _options_for(est, options), data.x, data.y, target, seed)
        path = cache / f"{keys[est.raw]}.pt" if cache is not None else None
        entry = _load(path) if path is not None and path.exists() else None
        if entry is not None:
            raw[est.raw] = entry
        else:
            missing.setdefault(est.method, []).append(est)
    if missing:
        t = _targets(model, data, target, batch_size, device)
        for method, group in missing.items():
            maps = _compute(model, data.x, t, group, options, seed, batch_size, device, progress)
            for name, m in maps.items():
                if m.shape[0] != data.x.shape[0] or m.shape[2:] != data.x.shape[2:]:
                    raise ValueError(f"estimator {name!r} returned shape {tuple(m.shape)} for inputs "
                                     f"{tuple(data.x.shape)}")
                raw[name] = m
                if cache is not None:
                    atomic_save(m, cache / f"{keys[name]}.pt")
    return {est.name: raw[est.raw] ** 2 if est.squared else raw[est.raw] for est in parsed}
