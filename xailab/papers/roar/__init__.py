"""ROAR (RemOve And Retrain, Hooker et al. 2019) and KAR (Keep And Retrain) at laptop scale.

- :func:`roar`: the sweep - relevance of every train and test image per estimator (optionally
  cached), modified datasets, models retrained from scratch, accuracies in a tidy :class:`RoarResult`;
  :func:`without_retraining`: the no-retraining arm, one original model per replicate with its own maps.
- :data:`PAPER_ESTIMATORS` (the paper's 18) and :data:`CONTROLS` (random, sobel).
- :func:`plot`, :func:`plot_variants`, :func:`plot_families`: accuracy against fraction removed.
- :func:`toy_rankings`, :func:`premise_rankings`: rankings whose quality is known in advance;
  :func:`share_kept`, :func:`retraining_shift`: what the premises measure.
- :func:`mask_only_accuracy`, :func:`leak_study`: how much the removal pattern alone tells about the label.
- The data modification itself is :mod:`xailab.removal` (``remove``, ``keep``, the fills), shared
  with the other removal-based metrics; it is re-exported here for convenience.
"""
from xailab.papers.roar.estimators import BASES, CONTROLS, PAPER_ESTIMATORS, relevance_maps, signed_fullgrad_maps
from xailab.papers.roar.leakage import (LeakStudy, leak_study, mask_only_accuracies, mask_only_accuracy,
                                        pattern_visibility, removal_masks)
from xailab.papers.roar.plot import plot, plot_families, plot_variants
from xailab.papers.roar.rankings import premise_rankings, retraining_shift, share_kept, toy_rankings
from xailab.papers.roar.result import VARIANTS, RoarResult, rank_agreement
from xailab.papers.roar.sweep import ModelFactory, process_pool, roar, run_cell, without_retraining
from xailab.removal import keep, remove, removal_mask

__all__ = ["BASES", "CONTROLS", "PAPER_ESTIMATORS", "VARIANTS", "LeakStudy", "ModelFactory", "RoarResult", "keep",
           "leak_study", "mask_only_accuracies", "mask_only_accuracy", "pattern_visibility", "plot", "plot_families", "plot_variants",
           "premise_rankings", "process_pool", "rank_agreement", "relevance_maps", "removal_mask", "removal_masks",
           "remove", "retraining_shift", "roar", "run_cell", "share_kept", "signed_fullgrad_maps", "toy_rankings", "without_retraining"]
