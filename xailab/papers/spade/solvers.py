"""Layer-wise sparse reconstruction: choose which weights of a layer to drop, and update the rest,
so that the layer's outputs on the captured inputs change as little as possible.

For a layer ``Y = W X`` (W: rows × columns, X: columns × samples) and the Hessian of the
squared reconstruction error ``H = 2/n · X Xᵀ``, removing weight ``w_q`` of a row and letting the
other weights of that row compensate optimally costs ``w_q² / (2 [H⁻¹]_qq)`` and moves the row by
``-w_q / [H⁻¹]_qq · H⁻¹[q, :]`` (Optimal Brain Surgeon). Two solvers build on that:

``obc``  Optimal Brain Compression: exact greedy OBS, row by row, removing one weight at a time
         and downdating that row's own ``H⁻¹``; a global step sorts every row's marginal losses so
         the layer as a whole reaches its sparsity with the cheapest removals. Cost ~ rows·cols³.
``fast`` SparseGPT: visit columns left to right; the mask of a block of columns is chosen once
         from ``w² / [U]_jj²`` (U the upper Cholesky factor of H⁻¹, whose rows are exactly the
         OBS updates restricted to the columns not yet visited), then each pruned column's error
         is spread over the later columns of every row at once. Cost ~ cols³ + rows·cols².

All functions take batched tensors: ``W (..., rows, cols)``, ``H (..., cols, cols)``; leading
dimensions (images of a batched trace, groups of a grouped convolution) are independent problems,
except the last ``shared`` leading dimensions, which share one pruning budget (the groups of one
convolution: a depthwise layer has 9 weights per group, and rounding per group would miss the
layer's target; OBS losses are in the same units across groups, so one ranking serves them all).
They compute in the dtype of ``H`` (the caller chooses: float64 is the default of
:func:`xailab.papers.spade.trace` because Cholesky factors of nearly singular Hessians lose digits in
float32) on the device of ``H``.

Counting rule, shared by every solver so that they are compared at equal sparsity: a layer at
sparsity ``s`` drops exactly ``round(s · numel)`` weights (numel over rows, cols and shared dims), chosen as the
smallest scores by rank, so ``s = 0`` drops nothing and the target is met exactly. ``s = 1`` is
refused: an all-zero layer reconstructs nothing.
"""
from __future__ import annotations

import torch

SOLVERS = ("fast", "obc", "magnitude")


def check_sparsity(sparsity: float, name: str = "sparsity") -> float:
    """A layer sparsity must lie in [0, 1); 1 would zero the whole layer."""
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in [0, 1), got {sparsity!r}") from None
    if s == 1.0:
        raise ValueError(f"{name}=1 would remove every weight of the layer (nothing left to "
                         "reconstruct its outputs); use a value in [0, 1)")
    if not 0.0 <= s < 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1), got {s!r}")
    return s


def n_pruned(sparsity: float, numel: int) -> int:
    """How many of ``numel`` weights a layer at ``sparsity`` drops (the shared counting rule)."""
    return int(round(check_sparsity(sparsity) * numel))


def hessian(X: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``H = 2/n · Xᵀ X`` for samples in the rows of ``X (..., n, cols)`` -> ``(..., cols, cols)``."""
    X = X.to(dtype)
    return (2.0 / X.shape[-2]) * X.transpose(-1, -2) @ X


def _prepare(W: torch.Tensor, H: torch.Tensor, damp: float, prune_dead: bool):
    """Copies of W and H in H's dtype; inputs never active on the captured data (``H_jj = 0``) get
    a unit diagonal so H is invertible, and (``prune_dead``) their weights are zeroed: they cost
    nothing to drop because they never reach the output on this input. Then the damping
    ``damp · mean(diag H)`` is added, as in SparseGPT, to keep the Cholesky factor stable."""
    if W.shape[:-2] != H.shape[:-2] or W.shape[-1] != H.shape[-1] or H.shape[-1] != H.shape[-2]:
        raise ValueError(f"W {tuple(W.shape)} and H {tuple(H.shape)} do not match: want "
                         "W (..., rows, cols) and H (..., cols, cols)")
    if damp < 0:
        raise ValueError(f"damp must be >= 0, got {damp!r}")
    W = W.to(H.dtype).clone()
    H = H.clone()
    diag = torch.diagonal(H, dim1=-2, dim2=-1)
    dead = diag == 0
    diag += dead.to(H.dtype)
    if prune_dead:
        W = W * (~dead).unsqueeze(-2).to(W.dtype)
    diag += damp * diag.mean(dim=-1, keepdim=True)
    return W, H, dead


def _split(W: torch.Tensor, H: torch.Tensor, shared: int):
    """Reshape to ``(P, S, rows, cols)`` / ``(P, S, cols, cols)``: P independent problems of S
    budget-sharing blocks each."""
    if not 0 <= int(shared) <= W.ndim - 2:
        raise ValueError(f"shared must be in [0, {W.ndim - 2}] for W of shape {tuple(W.shape)}, got {shared!r}")
    lead = W.shape[:-2]
    S = 1
    for d in lead[len(lead) - int(shared):] if shared else ():
        S *= d
    rows, cols = W.shape[-2:]
    return W.reshape(-1, S, rows, cols), H.reshape(-1, S, cols, cols)


def _smallest_mask(score: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Boolean mask of the ``k`` smallest entries of each leading item of ``score (B, m)``
    (ranks, not a threshold, so ties cannot overshoot and ``k = 0`` selects nothing)."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    k = int(k)
    if k > 0:
        idx = torch.topk(score, k, dim=-1, largest=False).indices
        mask.scatter_(-1, idx, True)
    return mask


def prune_magnitude(W: torch.Tensor, sparsity: float, *, shared: int = 0) -> torch.Tensor:
    """Baseline: drop the ``round(s·numel)`` smallest ``|w|`` of each layer, no update."""
    S = 1
    for d in W.shape[W.ndim - 2 - int(shared):W.ndim - 2]:
        S *= d
    k = n_pruned(sparsity, S * W.shape[-1] * W.shape[-2])
    flat = W.reshape(-1, S * W.shape[-2] * W.shape[-1])
    mask = _smallest_mask(flat.abs(), k)
    return flat.masked_fill(mask, 0).reshape(W.shape)


def prune_fast(W: torch.Tensor, H: torch.Tensor, sparsity: float, *, blocksize: int = 32,
               damp: float = 0.01, prune_dead: bool = True, shared: int = 0) -> torch.Tensor:
    """SparseGPT-style pruning of ``W (..., rows, cols)`` to ``sparsity`` given ``H (..., cols, cols)``.

    The mask of each block of ``blocksize`` columns is chosen jointly over all rows (so rows may
    end with different sparsities) from the OBS scores at the time the block is reached; the
    block's share of the layer's pruned count is ``round(s·m·i2) - round(s·m·i1)`` (m = rows
    times shared blocks) so the layer total is exact. Returns the pruned and updated weights
    (dtype of H).
    """
    shape = W.shape
    if n_pruned(sparsity, W.numel()) == 0:
        return W.to(H.dtype).clone()
    if int(blocksize) < 1:
        raise ValueError(f"blocksize must be a positive integer, got {blocksize!r}")
    W, H = _split(W, H, shared)
    rows, cols = W.shape[-2:]
    m = W.shape[1] * rows
    W, H, _ = _prepare(W, H, damp, prune_dead)
    # Upper Cholesky factor of H⁻¹: row j holds the OBS update for removing column j once the
    # columns before j are fixed; its diagonal gives the scores.
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    s = float(sparsity)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[..., i1:i2].clone()
        U1 = U[..., i1:i2, i1:i2]
        d = torch.diagonal(U1, dim1=-2, dim2=-1)                  # (B, count)
        k = round(s * m * i2) - round(s * m * i1)
        score = (W1 / d.unsqueeze(-2)) ** 2
        mask1 = _smallest_mask(score.flatten(1), k).view_as(W1)
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w = W1[..., i]
            q = w.masked_fill(mask1[..., i], 0)
            err = (w - q) / d[..., i : i + 1]
            W1[..., i:] -= err.unsqueeze(-1) * U1[..., i : i + 1, i:]
            W1[..., i] = q
            Err1[..., i] = err
        W[..., i1:i2] = W1
        W[..., i2:] -= Err1 @ U[..., i1:i2, i2:]
    return W.reshape(shape)


def prune_obc(W: torch.Tensor, H: torch.Tensor, sparsity: float, *, damp: float = 0.01,
              prune_dead: bool = True, parallel: int = 64, shared: int = 0) -> torch.Tensor:
    """Exact Optimal Brain Compression of ``W (..., rows, cols)`` to ``sparsity``.

    Every row is pruned greedily to zero weights, one weight at a time, each step choosing the
    cheapest OBS removal under that row's current ``H⁻¹`` and downdating ``H⁻¹`` (rank one). The
    marginal losses of all rows are then sorted together and the layer's pruned count is shared
    out by taking the cheapest ``round(s·numel)`` steps; each row keeps its own removal order
    and gets its optimal update in closed form, ``w - H⁻¹[:, P] (H⁻¹[P, P])⁻¹ w[P]``.
    ``parallel`` rows are processed at once (memory ``parallel · cols²``).
    """
    shape = W.shape
    if n_pruned(sparsity, W.numel()) == 0:
        return W.to(H.dtype).clone()
    W, H = _split(W, H, shared)
    n_shared, rows, cols = W.shape[1:]
    k_total = n_pruned(sparsity, n_shared * rows * cols)
    W, H, _ = _prepare(W, H, damp, prune_dead)
    out = W.clone()
    for p in range(W.shape[0]):
        Hinv = torch.cholesky_inverse(torch.linalg.cholesky(H[p]))      # (S, cols, cols)
        runs = [_obc_orders(W[p, g], Hinv[g], parallel) for g in range(n_shared)]
        losses = torch.stack([r[1] for r in runs])                      # (S, rows, cols)
        # Share the layer budget: the k cheapest marginal steps over all rows (and groups).
        chosen = _smallest_mask(losses.flatten().unsqueeze(0), k_total).view(n_shared, rows, cols)
        per_row = chosen.sum(dim=-1)
        for g, r in torch.nonzero(per_row).tolist():
            P = runs[g][0][r, : int(per_row[g, r])]
            w = W[p, g, r]
            delta = Hinv[g][:, P] @ torch.linalg.solve(Hinv[g][P][:, P], w[P])
            new = w - delta
            new[P] = 0
            out[p, g, r] = new
    return out.reshape(shape)


def _obc_orders(W: torch.Tensor, Hinv: torch.Tensor, parallel: int):
    """Greedy OBS removal order and marginal losses for every row of ``W (rows, cols)``."""
    rows, cols = W.shape
    order = torch.empty(rows, cols, dtype=torch.long, device=W.device)
    losses = torch.empty(rows, cols, dtype=W.dtype, device=W.device)
    for r1 in range(0, rows, parallel):
        r2 = min(r1 + parallel, rows)
        n = r2 - r1
        w = W[r1:r2].clone()
        Hi = Hinv.expand(n, cols, cols).clone()
        removed = torch.zeros(n, cols, dtype=torch.bool, device=W.device)
        ar = torch.arange(n, device=W.device)
        for step in range(cols):
            d = torch.diagonal(Hi, dim1=1, dim2=2)
            score = (w ** 2 / d).masked_fill(removed, float("inf"))
            j = torch.argmin(score, dim=1)
            dj = d[ar, j]
            order[r1:r2, step] = j
            losses[r1:r2, step] = score[ar, j] / 2
            row = Hi[ar, j, :]                               # (n, cols)
            w -= row * (w[ar, j] / dj).unsqueeze(1)
            removed[ar, j] = True
            w.masked_fill_(removed, 0)
            if step == cols - 1:
                break
            row = row / dj.sqrt().unsqueeze(1)
            Hi.baddbmm_(row.unsqueeze(2), row.unsqueeze(1), alpha=-1)   # rank-one downdate, one BLAS pass
            # keep removed coordinates inert (zero row/column, unit diagonal) for stability
            Hi[ar, j, :] = 0
            Hi[ar, :, j] = 0
            Hi[ar, j, j] = 1
    return order, losses


def reconstruction_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor,
                         relative: bool = True) -> torch.Tensor:
    """``tr(ΔW H ΔWᵀ)`` = ``2/n ‖W X - Ŵ X‖²`` per leading item (H undamped); ``relative`` divides
    by ``tr(W H Wᵀ)`` = ``2/n ‖W X‖²``."""
    W = W.to(H.dtype)
    D = W - W_hat.to(H.dtype)
    err = ((D @ H) * D).sum(dim=(-1, -2))
    if relative:
        err = err / ((W @ H) * W).sum(dim=(-1, -2)).clamp_min(torch.finfo(H.dtype).tiny)
    return err


def prune(W: torch.Tensor, H: torch.Tensor, sparsity: float, solver: str = "fast",
          **options) -> torch.Tensor:
    """Dispatch to ``fast`` (:func:`prune_fast`), ``obc`` (:func:`prune_obc`) or ``magnitude``."""
    if solver == "fast":
        return prune_fast(W, H, sparsity, **options)
    if solver == "obc":
        return prune_obc(W, H, sparsity, **options)
    if solver == "magnitude":
        return prune_magnitude(W, sparsity, shared=options.get("shared", 0)).to(H.dtype)
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
