"""Every way xailab scores a saliency map, grouped by what it measures (as Quantus groups its
catalogue), with one calling convention: what is scored first, then what the metric needs, by name.

=============== ========================================================= ===============================
group           convention                                                question
=============== ========================================================= ===============================
localisation    ``metric(maps, *, mask) -> (N,)``                         is the mass where the evidence is?
faithfulness    ``metric(maps, *, model, x, target) -> (N,)``             does removing what the map ranks
                                                                          first change the output as it says?
consistency     ``metric(maps, *, other) -> (N,)``                        do two maps of the same images agree?
randomisation   ``metric(method, *, model, x, target) -> [...]``          does the map change with the model?
=============== ========================================================= ===============================

Every map metric returns one value per image. :data:`CATALOGUE` lists each metric with its group,
what it needs, what it measures and which direction is better (``"higher"`` or ``"lower"``);
``print(catalogue())`` shows it as a table. :func:`evaluate` runs any metrics of the catalogue over
the maps of several methods. The ROAR benchmark (retraining on removed features) lives in
:mod:`xailab.papers.roar`: it scores a *ranking method* rather than one map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import Tensor

from xailab.metrics.consistency import CONSISTENCY, consistency, prediction_agreement, rank_correlation, ssim
from xailab.metrics.faithfulness import (completeness_gap, deletion, flip_test, insertion, perturbation_curves,
                                         pixel_perturbation)
from xailab.metrics.localisation import pointing_game, saliency_auc
from xailab.metrics.randomisation import cascade, randomisation_check

GROUPS = ("localisation", "faithfulness", "consistency", "randomisation")
BETTER = ("higher", "lower")
#: What each group's metrics need besides what they score.
NEEDS = {"localisation": ("mask",), "faithfulness": ("model", "x", "target"), "consistency": ("other",),
         "randomisation": ("model", "x", "target")}


@dataclass(frozen=True)
class Metric:
    """One entry of the catalogue: ``fn`` called with ``options`` fixed (e.g. a consistency measure)."""
    name: str
    group: str
    fn: Callable
    measures: str
    better: str
    options: dict = field(default_factory=dict)

    @property
    def needs(self) -> tuple[str, ...]:
        return NEEDS[self.group]

    @property
    def scores_maps(self) -> bool:
        return self.group != "randomisation"


CATALOGUE = (
    Metric("saliency_auc", "localisation", saliency_auc,
           "ROC-AUC of the map as a detector of the mask's pixels", "higher"),
    Metric("pointing_game", "localisation", pointing_game,
           "whether every maximum of the map lies in the mask", "higher"),
    Metric("insertion", "faithfulness", insertion,
           "area under the model's score while top-ranked pixels are inserted into a fill", "higher"),
    Metric("deletion", "faithfulness", deletion,
           "area under the model's score while top-ranked pixels are deleted", "lower"),
    Metric("least_salient", "faithfulness", pixel_perturbation,
           "relative logit change when the least salient pixels are removed", "lower"),
    Metric("most_salient", "faithfulness", pixel_perturbation,
           "relative logit change when the most salient pixels are removed", "higher", {"most_salient": True}),
    Metric("flip_test", "faithfulness", flip_test,
           "drop of f_a - f_b when the pixels that favour class a over b are erased", "higher"),
    Metric("completeness_gap", "faithfulness", completeness_gap,
           "relative distance of the map's sum from f(x) - f(baseline)", "lower"),
    Metric("spearman", "consistency", consistency,
           "normalised Spearman rank agreement of two maps, (1 + rho) / 2", "higher", {"measure": "spearman"}),
    Metric("l2", "consistency", consistency,
           "normalised L2 distance of two maps (each scaled to unit norm)", "lower", {"measure": "l2"}),
    Metric("rank_correlation", "consistency", rank_correlation, "Spearman correlation of two pixel maps", "higher"),
    Metric("ssim", "consistency", ssim, "structural similarity of two image maps", "higher"),
    Metric("randomisation_check", "randomisation", randomisation_check,
           "rank correlation with the original map as layers are re-initialised from the top",
           "lower"),
)
_BY_NAME = {m.name: m for m in CATALOGUE}


def metric(name: str) -> Metric:
    """The catalogue entry ``name`` (a clear error listing the names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; the catalogue has {', '.join(_BY_NAME)}") from None


def catalogue(group: str | None = None) -> str:
    """The catalogue (or one ``group`` of it) as a Markdown table."""
    if group is not None and group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    from xailab.viz import markdown_table   # matplotlib only when a table is drawn

    rows = [[m.group, f"`{m.name}`", ", ".join(m.needs), m.measures, m.better]
            for m in CATALOGUE if group in (None, m.group)]
    return markdown_table(["group", "metric", "needs", "measures", "better"], rows)


def _metric_table(metrics) -> dict[str, tuple[Metric, dict]]:
    """``{label: (Metric, options)}`` from names, or ``{label: name | (name, options)}``."""
    if isinstance(metrics, str):
        metrics = (metrics,)
    items = metrics.items() if isinstance(metrics, Mapping) else [(m, m) for m in metrics]
    table = {}
    for label, spec in items:
        name, options = (spec, {}) if isinstance(spec, str) else spec
        entry = metric(name)
        if not entry.scores_maps:
            raise ValueError(f"{name} scores a method, not maps: call it directly")
        table[str(label)] = (entry, dict(options))
    if not table:
        raise ValueError("metrics must name at least one metric of the catalogue")
    return table


def evaluate(maps: Mapping[str, Tensor], metrics, *, options: Mapping | None = None,
             **context) -> dict[str, dict[str, Tensor]]:
    """Score the maps of every method with every metric: ``{metric label: {method label: (N,)}}``.

    ``maps``: ``{method label: maps}``. ``metrics``: catalogue names, or ``{label: name | (name,
    options)}`` to use one metric twice with different options (insertion from black and from a
    blur). ``context``: what the metrics need, by name (``mask``, ``model``, ``x``, ``target``,
    ``other``); ``other`` may be one tensor or ``{method label: maps}`` (each method against its own
    second set). ``options``: per-metric-label options added to every call.
    """
    table = _metric_table(metrics)
    options = dict(options or {})
    out: dict[str, dict[str, Tensor]] = {}
    for label, (entry, fixed) in table.items():
        missing = [k for k in entry.needs if k not in context]
        if missing:
            raise ValueError(f"metric {entry.name!r} needs {', '.join(missing)}; pass them to evaluate()")
        kwargs = {**entry.options, **fixed, **options.get(label, {})}
        out[label] = {}
        for method, m in maps.items():
            needed = {k: context[k] for k in entry.needs}
            if isinstance(needed.get("other"), Mapping):
                needed["other"] = needed["other"][method]
            out[label][method] = entry.fn(m, **needed, **kwargs)
    return out


__all__ = ["BETTER", "CATALOGUE", "CONSISTENCY", "GROUPS", "Metric", "catalogue", "completeness_gap", "consistency",
           "cascade", "deletion", "evaluate", "flip_test", "insertion", "metric", "perturbation_curves", "pixel_perturbation",
           "pointing_game", "prediction_agreement", "randomisation_check", "rank_correlation", "saliency_auc",
           "ssim"]
