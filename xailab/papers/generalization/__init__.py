"""Generalization of saliency maps: "On the Generalization of Gradient-based Neural Network
Interpretations" (ICLR 2024 submission) and the stability/fidelity analysis of its follow-up,
Ye & Farnia, "Gaussian Smoothing in Saliency Maps: The Stability-Fidelity Trade-Off" (AISTATS 2025,
arXiv 2411.05837).

- :mod:`.pairs` — independent network pairs on disjoint training sets, with their data-order ceilings
  (:func:`split_sets`, :func:`train_pairs`, :func:`compare_pairs`; the consistency measures are in
  :mod:`xailab.metrics`);
- :mod:`.norms` — operator spectral norms of conv layers, (2,1) norms, Bartlett's R_A;
- :mod:`.bounds` — the papers' bounds as calculators with explicit constants;
- :mod:`.stability` — :func:`sigma_sweep`: SmoothGrad over σ, its consistency and the follow-up's stability and
  fidelity errors; :func:`unbiasedness` of the SmoothGrad estimator against a closed form;
- :mod:`.plots` — the two networks' maps side by side.
"""
from xailab.papers.generalization.bounds import (SQRT_2_OVER_PI, balancing_sigma, bound_inputs, complexity_factor,
                                                 crossing_point,
                                                 fidelity_bound, gradient_bound, gradient_map_complexity,
                                                 margin_bound, sgd_parameter_divergence, smoothgrad_bound,
                                                 smoothgrad_lipschitz, stability_bound)
from xailab.papers.generalization.pairs import MEASURES, PairRecord, compare_pairs, least_fitted, split_sets, train_pairs
from xailab.papers.generalization.norms import (conv_dense_matrix, conv_spectral_norm, group_norm_21, layer_norms,
                                                linear_layers, linear_spectral_norm, margins,
                                                model_spectral_complexity, norms_table, spectral_complexity)
from xailab.papers.generalization.plots import side_by_side
from xailab.papers.generalization.stability import AnalyticScore, sigma_sweep, sweep_pairs, unbiasedness

__all__ = ["AnalyticScore", "MEASURES", "SQRT_2_OVER_PI", "PairRecord", "balancing_sigma", "bound_inputs", "complexity_factor",
           "compare_pairs", "conv_dense_matrix", "conv_spectral_norm", "crossing_point", "fidelity_bound", "gradient_bound", "gradient_map_complexity",
           "group_norm_21", "layer_norms", "least_fitted", "linear_layers", "linear_spectral_norm", "margin_bound", "margins",
           "model_spectral_complexity", "norms_table", "sgd_parameter_divergence", "side_by_side", "sigma_sweep",
           "smoothgrad_bound", "smoothgrad_lipschitz", "spectral_complexity", "split_sets", "stability_bound", "sweep_pairs",
           "train_pairs", "unbiasedness"]
