"""ROAR (RemOve And Retrain, Hooker et al. 2019) and KAR (Keep And Retrain) at laptop scale.

- :func:`remove` / :func:`keep`: replace the most (or all but the most) relevant features of a batch.
- :func:`roar`: the sweep - relevance of every train and test image per estimator (cached on disk),
  modified datasets, models retrained from scratch, accuracies in a tidy :class:`RoarResult`.
- :data:`PAPER_ESTIMATORS` (the paper's 18) and :data:`CONTROLS` (random, sobel).
- :func:`plot`, :func:`plot_variants`, :func:`plot_families`: accuracy against fraction removed.
"""
from xailab.roar.estimators import (CONTROLS, PAPER_ESTIMATORS, Estimator, parse_estimator,
                                    relevance_maps)
from xailab.roar.plot import plot, plot_families, plot_variants
from xailab.roar.removal import (channel_mean, feature_scores, keep, n_removed, remove, removal_mask,
                                 replace_features)
from xailab.roar.result import RoarResult
from xailab.roar.sweep import ModelFactory, process_pool, roar, run_cell

__all__ = ["remove", "keep", "replace_features", "removal_mask", "n_removed", "channel_mean",
           "feature_scores", "roar", "run_cell", "ModelFactory", "process_pool", "RoarResult", "PAPER_ESTIMATORS",
           "CONTROLS", "Estimator", "parse_estimator", "relevance_maps", "plot", "plot_variants",
           "plot_families"]
