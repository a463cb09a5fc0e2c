"""Generalization of saliency maps: "On the Generalization of Gradient-based Neural Network
Interpretations" (ICLR 2024 submission) and the stability/fidelity analysis of its follow-up,
Ye & Farnia, "Gaussian Smoothing in Saliency Maps: The Stability-Fidelity Trade-Off" (AISTATS 2025,
arXiv 2411.05837).

- :mod:`.experiment` — :func:`disjoint_split_experiment`: networks trained on disjoint parts of the
  data, their maps compared (the consistency measures are in :mod:`xailab.metrics`);
- :mod:`.norms` — operator spectral norms of conv layers, (2,1) norms, Bartlett's R_A;
- :mod:`.bounds` — the papers' bounds as calculators with explicit constants;
- :mod:`.stability` — SmoothGrad's measured stability and fidelity over sigma;
- :mod:`.plots` — the two networks' maps side by side.
"""
from xailab.papers.generalization.bounds import (SQRT_2_OVER_PI, balancing_sigma, bound_inputs, complexity_factor,
                                                 crossing_point,
                                                 fidelity_bound, gradient_bound, gradient_map_complexity,
                                                 margin_bound, sgd_parameter_divergence, smoothgrad_bound,
                                                 smoothgrad_lipschitz, stability_bound)
from xailab.papers.generalization.experiment import (DEFAULT_METHODS, SplitResults, check_sizes,
                                                     disjoint_split_experiment)
from xailab.papers.generalization.norms import (conv_dense_matrix, conv_spectral_norm, group_norm_21, layer_norms,
                                                linear_layers, linear_spectral_norm, margins,
                                                model_spectral_complexity, norms_table, spectral_complexity)
from xailab.papers.generalization.plots import side_by_side
from xailab.papers.generalization.stability import stability_fidelity

__all__ = ["DEFAULT_METHODS", "SQRT_2_OVER_PI", "SplitResults", "balancing_sigma", "bound_inputs", "complexity_factor",
           "check_sizes", "conv_dense_matrix", "conv_spectral_norm", "crossing_point",
           "disjoint_split_experiment", "fidelity_bound", "gradient_bound", "gradient_map_complexity",
           "group_norm_21", "layer_norms", "linear_layers", "linear_spectral_norm", "margin_bound", "margins",
           "model_spectral_complexity", "norms_table", "sgd_parameter_divergence", "side_by_side", "smoothgrad_bound", "smoothgrad_lipschitz",
           "spectral_complexity", "stability_bound", "stability_fidelity"]
