"""Figures of the disjoint-split experiment."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from xailab import viz

__all__ = ["side_by_side"]


def side_by_side(res, images, n: int, methods: Sequence[str] | None = None, *, n_img: int = 6, title: str = "",
                 labels: Sequence[str] | None = None) -> Figure:
    """The first ``n_img`` test images (top row), then for every method the maps of network A and
    network B trained on disjoint sets of ``n`` images below each other (``res.maps`` keeps them)."""
    methods = list(methods) if methods is not None else list(dict.fromkeys(m for size, m in res.maps if size == n))
    n_img = min(n_img, len(images))
    fig = Figure(figsize=(1.5 * n_img, 1.5 * (1 + 2 * len(methods))), layout="constrained")
    axes = np.asarray(fig.subplots(1 + 2 * len(methods), n_img, squeeze=False))
    for j in range(n_img):
        viz.show_image(axes[0, j], images[j], title=None if labels is None else labels[j])
        for i, method in enumerate(methods):
            maps = res.maps[(n, method)]
            for net in (0, 1):
                ax = axes[1 + 2 * i + net, j]
                viz.heatmap(ax, maps[net, j], signed=False)
                if j == 0:
                    ax.set_ylabel(f"{method}\nnet {'AB'[net]}", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig
