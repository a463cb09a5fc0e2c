"""Per-layer sparsity schedules for a trace.

``constant``  every prunable layer at ``sparsity``, except the first convolution (below);
``linear``    linear in depth: 0 at the first prunable layer, ``sparsity`` at the last — the
              method-independent schedule the SPADE authors report when no calibration data
              exists (0 → 99 % in their rebuttal);
a mapping     ``{layer name: sparsity}``, layers not named stay dense.

Why the first convolution stays dense by default: it sees raw pixels, and every feature map of
the network is computed from its few filters, so pruning it for one image removes spatial detail
(edges, colour contrasts) from every downstream map at once; the paper's own calibrated ratios
and its linear fallback put the least sparsity on the earliest layers, and its trace-overlap
study finds early layers shared most between images — there is little sample-specific to thin
there. The first layer is also tiny (3·k² inputs), so keeping it costs no sparsity budget.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from xailab.papers.spade.solvers import check_sparsity

SCHEDULES = ("constant", "linear")


def layer_sparsities(names: Sequence[str], sparsity, schedule: str = "constant", *,
                     dense_first: bool = True, first_is_conv: bool = True) -> dict[str, float]:
    """Sparsity of every layer in ``names`` (depth order) for ``sparsity`` and ``schedule``.

    ``sparsity`` is a number (the constant value, or the maximum of the linear schedule) or a
    mapping ``name -> sparsity`` (then ``schedule`` is ignored and unknown names are an error).
    ``dense_first`` keeps the first layer at 0 when it is a convolution (``first_is_conv``).
    """
    names = list(names)
    if not names:
        raise ValueError("the model has no prunable layers (nn.Conv2d or nn.Linear) to trace")
    if isinstance(sparsity, Mapping):
        unknown = sorted(set(sparsity) - set(names))
        if unknown:
            raise ValueError(f"sparsity mapping names unknown layers {unknown}; prunable layers "
                             f"are {names}")
        return {n: check_sparsity(sparsity.get(n, 0.0), f"sparsity[{n!r}]") for n in names}
    s = check_sparsity(sparsity)
    if schedule == "constant":
        out = {n: s for n in names}
    elif schedule == "linear":
        last = max(len(names) - 1, 1)
        out = {n: s * i / last for i, n in enumerate(names)}
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES} (or pass a mapping as sparsity), "
                         f"got {schedule!r}")
    if dense_first and first_is_conv:
        out[names[0]] = 0.0
    return out
