"""Small helpers shared by every module: devices, argument checks, progress bars, mode guards.

Nothing here has side effects on import.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when present, else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def check_fraction(name: str, value: float, *, closed_right: bool = True) -> float:
    """Raise a clear error unless ``0 <= value <= 1`` (or ``< 1`` when ``closed_right=False``)."""
    value = float(value)
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name} must be a fraction in {interval}, got {value!r}")
    return value


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """Raise a clear error when a floating tensor holds NaN or infinite values (they would rank,
    sum and propagate silently)."""
    if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); clean the input first")
    return t


def check_positive(name: str, value: float, *, integer: bool = False) -> float:
    """Raise a clear error unless ``value > 0`` (and a whole number when ``integer``)."""
    if integer and (isinstance(value, bool) or int(value) != value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not value > 0:
        kind = "a positive integer" if integer else "> 0"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def as_targets(target, n: int, num_classes: int | None = None, device=None) -> torch.Tensor:
    """Turn an int or a length-``n`` sequence/tensor of class indices into a long tensor of length n.

    Raises a ValueError naming ``target`` when its length or range is wrong.
    """
    t = torch.as_tensor(target, device=device).long()
    if t.ndim == 0:
        t = t.expand(n).clone()
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"target must be an int or a tensor of {n} class indices, got shape {tuple(t.shape)}")
    if num_classes is not None and n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs, "
                         f"got values in [{int(t.min())}, {int(t.max())}]")
    return t


def progress(iterable: Iterable, enabled: bool = True, **kwargs) -> Iterator:
    """A ``tqdm.auto`` progress bar when ``enabled``, the bare iterable otherwise."""
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, **kwargs))


@contextlib.contextmanager
def preserved_state(model: nn.Module):
    """Restore the train/eval mode of every submodule and every parameter's ``requires_grad``
    on exit, errors included."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training
        for p, flag in grads:
            p.requires_grad_(flag)


def require_eval(model: nn.Module, what: str = "this method") -> None:
    """Refuse a model left in train mode: dropout and batch statistics would make the result
    depend on the batch and on chance."""
    if any(m.training for m in model.modules()):
        raise ValueError(f"model is in train mode; call model.eval() before {what} "
                         "(dropout and batch-norm statistics would change the result)")


def seeded_generator(seed: int, device=None) -> torch.Generator:
    """A ``torch.Generator`` seeded with ``seed`` (on ``device``), so that no global RNG is touched."""
    g = torch.Generator(device=resolve_device(device) if device is not None else "cpu")
    g.manual_seed(int(seed))
    return g


@contextlib.contextmanager
def forked_rng(seed: int, device=None, *, numpy: bool = False) -> Iterator[None]:
    """Seed torch's global RNG (and numpy's when ``numpy``) for the block and restore the caller's
    states on exit: for code that can only draw from the global generators (module constructors,
    Captum's samplers). ``device``: a CUDA device whose generator is forked too."""
    devices = [device] if device is not None and torch.device(device).type == "cuda" else []
    state = np.random.get_state() if numpy else None
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            if numpy:
                np.random.seed(int(seed))
            yield
    finally:
        if numpy:
            np.random.set_state(state)


def derive_seed(seed: int, *keys) -> int:
    """A child seed of ``seed`` for the stream named by ``keys`` (an experiment id, a cell, a replicate
    index ...): a fixed hash, so the same names give the same seed on every machine and in every
    process, whatever ran before (never execution order, worker or clock). Returns an int in
    ``[0, 2**31)``."""
    text = "|".join([str(int(seed))] + [repr(k) for k in keys])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2 ** 31


#: Infix of a file still being written: ``NAME.partial.ext`` (see :func:`atomic_file`).
PARTIAL = ".partial"


def partial_path(path) -> Path:
    """The temporary sibling ``NAME.partial.ext`` that :func:`atomic_file` writes ``path`` through."""
    path = Path(path)
    return path.with_name(path.stem + PARTIAL + path.suffix)


@contextlib.contextmanager
def atomic_file(path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (``NAME.partial-PID.ext``) to write to; on success it is renamed onto ``path``
    (a reader sees the old file or the complete new one, never a partial write), on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}{PARTIAL}-{os.getpid()}{path.suffix}")   # one per process: no two writers meet
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path, data: str | bytes) -> None:
    """Write text or bytes to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


def process_pool(workers: int = 2):
    """A local ``ProcessPoolExecutor`` for independent pieces of an experiment (ROAR cells, network pairs):
    ``workers`` processes, one torch thread each, forked where the platform allows it (fast start; one thread per
    worker keeps OpenMP fork-safe), spawned elsewhere. Use it as a context manager, or ``shutdown()`` it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = int(check_positive("workers", workers, integer=True))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                               initializer=torch.set_num_threads, initargs=(1,))
