"""FullGrad (Srinivas & Fleuret, NeurIPS 2019): the full-gradient decomposition, its aggregation
into a saliency map, batch-norm folding, and the registered saliency methods.

- :mod:`.decomposition` — :func:`full_gradients` (input term + one bias term per layer) and
  :func:`decomposition_gap`;
- :mod:`.aggregation` — :func:`postprocess`, :func:`layer_maps`, :func:`aggregate`;
- :mod:`.folding` — :func:`fold_batchnorm`;
- :mod:`.saliency` — ``fullgrad``, ``simple_fullgrad``, ``smooth_fullgrad`` (registered methods).
"""
from xailab.attribution.fullgrad.aggregation import (POSTS, TERM_NORMALISATIONS, aggregate, aggregate_per_channel,
                                                    layer_maps, postprocess)
from xailab.attribution.fullgrad.decomposition import (AFFINE, NOT_HOMOGENEOUS, FullGradients, decomposition_gap,
                                                       full_gradients, unsupported_modules)
from xailab.attribution.fullgrad.folding import fold_batchnorm
from xailab.attribution.fullgrad.saliency import fullgrad, simple_fullgrad, smooth_fullgrad

__all__ = ["AFFINE", "NOT_HOMOGENEOUS", "POSTS", "TERM_NORMALISATIONS", "FullGradients", "aggregate", "aggregate_per_channel",
           "decomposition_gap", "fold_batchnorm", "full_gradients", "fullgrad", "layer_maps", "postprocess",
           "simple_fullgrad", "smooth_fullgrad", "unsupported_modules"]
