"""Every way xailab scores a saliency map, grouped by what it measures (as Quantus groups its
catalogue), with one calling convention per group:

============== ================================================= =====================================
group          convention                                        question
============== ================================================= =====================================
localisation   ``metric(maps, mask) -> (N,)``                    is the mass where the evidence is?
faithfulness   ``metric(model, x, target, maps) -> ...``         does removing what the map ranks
                                                                 first change the output as it says?
consistency    ``metric(maps_a, maps_b) -> (N,)``                do two maps of the same images agree?
randomisation  ``metric(model, x, target, method) -> [...]``     does the map change with the model?
============== ================================================= =====================================

:data:`CATALOGUE` lists each metric with its group, what it measures and which direction is
better; ``print(catalogue())`` shows it as a table. The ROAR benchmark (retraining on removed
features) lives in :mod:`xailab.papers.roar`: it scores a *ranking method* rather than one map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from xailab.metrics.consistency import CONSISTENCY, consistency, prediction_agreement, rank_correlation, ssim
from xailab.metrics.faithfulness import flip_test, insertion_deletion, pixel_perturbation
from xailab.metrics.localisation import pointing_game, saliency_auc
from xailab.metrics.randomisation import parameter_layers, randomization_check

GROUPS = ("localisation", "faithfulness", "consistency", "randomisation")


@dataclass(frozen=True)
class Metric:
    """One entry of the catalogue."""
    name: str
    group: str
    fn: Callable
    measures: str
    better: str            # "higher" or "lower" (or a sentence when it depends on an option)


CATALOGUE = (
    Metric("saliency_auc", "localisation", saliency_auc,
           "ROC-AUC of the map as a detector of the mask's pixels", "higher"),
    Metric("pointing_game", "localisation", pointing_game,
           "whether the map's maximum lies in the mask", "higher"),
    Metric("insertion_deletion", "faithfulness", insertion_deletion,
           "model score while top-ranked pixels are inserted into a fill (or deleted from x)",
           "higher for insertion, lower for deletion"),
    Metric("pixel_perturbation", "faithfulness", pixel_perturbation,
           "relative logit change when the least (or most) salient pixels are removed",
           "lower for least salient, higher for most salient"),
    Metric("flip_test", "faithfulness", flip_test,
           "drop of f_a - f_b when the pixels that favour class a over b are erased", "higher"),
    Metric("consistency", "consistency", consistency,
           "agreement of two maps: normalised Spearman, normalised L2, cosine or top-k IoU",
           "higher (lower for l2)"),
    Metric("rank_correlation", "consistency", rank_correlation, "Spearman correlation of two pixel maps",
           "higher"),
    Metric("ssim", "consistency", ssim, "structural similarity of two image maps", "higher"),
    Metric("prediction_agreement", "consistency", prediction_agreement,
           "fraction (or Cohen's kappa) of images two networks classify alike", "higher"),
    Metric("randomization_check", "randomisation", randomization_check,
           "rank correlation with the original map as layers are re-initialised from the top",
           "lower (the map should change)"),
)


def catalogue(group: str | None = None) -> str:
    """The catalogue (or one ``group`` of it) as a Markdown table."""
    if group is not None and group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    from xailab.viz import markdown_table

    rows = [[m.group, f"`{m.name}`", m.measures, m.better] for m in CATALOGUE if group in (None, m.group)]
    return markdown_table(["group", "metric", "measures", "better"], rows)


__all__ = ["CATALOGUE", "CONSISTENCY", "GROUPS", "Metric", "catalogue", "consistency", "flip_test",
           "insertion_deletion", "parameter_layers", "pixel_perturbation", "pointing_game",
           "prediction_agreement", "randomization_check", "rank_correlation", "saliency_auc", "ssim"]
