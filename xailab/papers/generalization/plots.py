"""Figures of the generalization experiment."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from xailab import viz

__all__ = ["side_by_side"]


def side_by_side(images, maps: Mapping, other: Mapping, *, n_img: int = 6, title: str = "",
                 labels: Sequence[str] | None = None) -> Figure:
    """The first ``n_img`` images (top row), then for every method the maps of network A and of network B
    below each other (``maps[method]`` of A, ``other[method]`` of B: ``(N, 1, H, W)``)."""
    methods = list(maps)
    n_img = min(n_img, len(images))
    fig = Figure(figsize=(1.5 * n_img, 1.5 * (1 + 2 * len(methods))), layout="constrained")
    axes = np.asarray(fig.subplots(1 + 2 * len(methods), n_img, squeeze=False))
    for j in range(n_img):
        viz.show_image(axes[0, j], images[j], title=None if labels is None else labels[j])
        for i, method in enumerate(methods):
            for net, net_maps in enumerate((maps, other)):
                ax = axes[1 + 2 * i + net, j]
                viz.heatmap(ax, net_maps[method][j], signed=False)
                if j == 0:
                    ax.set_ylabel(f"{method}\nnet {'AB'[net]}", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
