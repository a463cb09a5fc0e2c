"""SPADE — sparsity-guided debugging: prune a copy of a network for one input so that each layer
reproduces its outputs on augmentations of that input, then explain the input on that trace.

Public API: :func:`trace`, :func:`trace_batch`, :func:`explain`, :func:`overlap`, the solvers
(:func:`prune_fast`, :func:`prune_obc`, :func:`prune_magnitude`, :func:`reconstruction_error`,
:func:`hessian`), :func:`augment` and :func:`layer_sparsities`.
"""
from xailab.papers.spade.augment import augment
from xailab.papers.spade.schedule import layer_sparsities
from xailab.papers.spade.solvers import (hessian, prune, prune_fast, prune_magnitude, prune_obc,
                                  reconstruction_error)
from xailab.papers.spade.trace import (Trace, TraceReport, explain, kept_masks, layer_conditioning, overlap, trace,
                                      trace_batch)

__all__ = ["augment", "layer_sparsities", "hessian", "prune", "prune_fast", "prune_magnitude",
           "prune_obc", "reconstruction_error", "Trace", "TraceReport", "explain", "kept_masks",
           "layer_conditioning", "overlap", "trace", "trace_batch"]
