"""ROAR (RemOve And Retrain, Hooker et al. 2019) and KAR (Keep And Retrain) at laptop scale.

- :func:`remove` / :func:`keep`: replace the most (or all but the most) relevant features of a batch.
- :func:`roar`: the sweep - relevance of every train and test image per estimator (cached on disk),
  modified datasets, models retrained from scratch, accuracies in a tidy :class:`RoarResult`.
"""
from xailab.roar.removal import channel_mean, feature_scores, keep, n_removed, remove, removal_mask

__all__ = ["remove", "keep", "removal_mask", "n_removed", "channel_mean", "feature_scores"]
