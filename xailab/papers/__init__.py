"""One package per paper, each with its own experiments on top of the engine and the metrics:

- :mod:`.roar` — Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks";
- :mod:`.fullgrad` — Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
  Visualization" (the method itself is :mod:`xailab.attribution.fullgrad`);
- :mod:`.spade` — "SPADE: Sparsity-Guided Debugging for Deep Neural Networks";
- :mod:`.generalization` — "On the Generalization of Gradient-based Neural Network Interpretations"
  and its stability/fidelity follow-up.
"""
