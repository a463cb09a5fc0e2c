"""xailab.viz builds figures for 1- and 3-channel inputs with the documented colour conventions."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from xailab import viz


def _images(n, c, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g)


def _signed_maps(n, c, size=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g)


def _needs_reduce(c):
    if c > 1:
        pytest.importorskip("xailab.attribution", reason="multi-channel maps are reduced by xailab.attribution")


@pytest.mark.parametrize("c", [1, 3])
def test_grid_has_one_row_per_sample_and_one_column_per_method_plus_image(c):
    _needs_reduce(c)
    n = 3
    maps = {"gradient": _signed_maps(n, c), "sobel": _signed_maps(n, c, seed=2).abs(),
            "grad_cam": torch.rand(n, 1, 12, 12)}
    fig = viz.grid(_images(n, c), maps, signed=None, row_labels=["a", "b", "c"])
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == n * (1 + len(maps))
    titles = [ax.get_title() for ax in image_axes[:1 + len(maps)]]
    assert titles == ["input", "gradient", "sobel", "grad_cam"]
    assert all(not ax.get_xticks().size and not ax.get_yticks().size for ax in image_axes)
    # a signed and a magnitude method -> two colorbars (extra axes without images)
    assert len(fig.axes) - len(image_axes) == 2
    fig.savefig(__import__("io").BytesIO(), format="png")


@pytest.mark.parametrize("c", [1, 3])
def test_grid_signed_maps_have_symmetric_limits_and_magnitude_maps_start_at_zero(c):
    _needs_reduce(c)
    maps = {"gradient": _signed_maps(2, c) + 0.7}  # skewed positive, still has negative values
    signed = viz.grid(_images(2, c), maps, signed=True, colorbar=False)
    for ax in [a for a in signed.axes if a.images][1::2]:
        lo, hi = ax.images[-1].get_clim()
        assert lo == -hi and hi > 0
        assert ax.images[-1].get_cmap().name == viz.SIGNED_CMAP
    magnitude = viz.grid(_images(2, c), maps, signed=False, colorbar=False)
    for ax in [a for a in magnitude.axes if a.images][1::2]:
        lo, hi = ax.images[-1].get_clim()
        assert lo == 0 and hi > 0
        assert ax.images[-1].get_cmap().name == viz.MAGNITUDE_CMAP
        assert ax.images[-1].get_array().min() >= 0


def test_heatmap_auto_sign_and_symmetric_limits():
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    m = torch.linspace(-1, 3, 64).reshape(8, 8)
    im = viz.heatmap(ax1, m, title="signed", clip=None, colorbar=True)
    assert im.get_clim() == (-3.0, 3.0)
    assert im.get_cmap().name == viz.SIGNED_CMAP
    im2 = viz.heatmap(ax2, m.abs())
    lo, hi = im2.get_clim()
    assert lo == 0 and 0 < hi <= 3.0 and im2.get_cmap().name == viz.MAGNITUDE_CMAP
    assert ax1.get_title() == "signed" and len(fig.axes) == 3  # the colorbar is the third


def test_heatmap_clip_ignores_a_single_outlier():
    m = torch.ones(20, 20)
    m[0, 0] = 1000.0
    _, hi = viz.display_limits(m.numpy(), signed=False, clip=99.0)
    assert hi == pytest.approx(1.0)
    _, hi = viz.display_limits(m.numpy(), signed=False, clip=None)
    assert hi == 1000.0


def test_flat_map_gets_positive_limits():
    lo, hi = viz.display_limits(np.zeros((4, 4)), signed=True)
    assert lo == -hi and hi > 0


@pytest.mark.parametrize("c", [1, 3])
def test_overlay_alpha_follows_saliency(c):
    _needs_reduce(c)
    fig = Figure()
    ax = fig.subplots()
    sal = torch.zeros(c, 10, 10)
    sal[:, 2:5, 2:5] = 1.0
    viz.overlay(ax, _images(1, c)[0], sal, alpha=0.6, title="overlay")
    rgba = ax.images[-1].get_array()
    assert rgba[..., 3].max() == pytest.approx(0.6) and rgba[0, 0, 3] == 0
    with pytest.raises(ValueError, match="alpha"):
        viz.overlay(ax, _images(1, c)[0], sal, alpha=1.5)


def test_curves_shade_spread_and_check_lengths():
    fig = Figure()
    ax = fig.subplots()
    runs = np.random.default_rng(0).normal(size=(5, 4))
    viz.curves(ax, [0, 1, 2, 3], {"runs": runs, "single": [1, 2, 3, 4]}, err={"single": [0.1] * 4},
               xlabel="step", ylabel="value", title="t")
    assert len(ax.lines) == 2 and len(ax.collections) == 2  # two shaded bands
    assert ax.get_xlabel() == "step" and ax.get_legend() is not None
    with pytest.raises(ValueError, match="points"):
        viz.curves(ax, [0, 1], {"bad": [1, 2, 3]}, xlabel="x", ylabel="y")


@pytest.mark.parametrize("c", [1, 3])
def test_show_images_layout_labels_and_masks(c):
    imgs = _images(5, c)
    masks = (torch.rand(5, 1, 12, 12) > 0.5).float()
    fig = viz.show_images(imgs, labels=torch.tensor([0, 1, 0, 1, 1]), ncols=3, masks=masks,
                          classes=("circle", "square"))
    assert len(fig.axes) == 6  # 2 rows x 3 columns, the last one switched off
    assert [ax.get_title() for ax in fig.axes[:5]] == ["circle", "square", "circle", "square", "square"]
    assert not fig.axes[5].axison
    single = viz.show_images(imgs[0])
    assert len(single.axes) == 1


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="images must be"):
        viz.grid(torch.rand(2, 2, 3, 4, 5), {"m": torch.rand(2, 1, 4, 5)})
    with pytest.raises(ValueError, match=r"maps\['m'\] has shape"):
        viz.grid(_images(2, 1), {"m": torch.rand(3, 1, 12, 12)})
    with pytest.raises(ValueError, match="1 or 3 channels"):
        viz.show_images(torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="titles has"):
        viz.grid(_images(1, 1), {"m": torch.rand(1, 1, 12, 12)}, titles=["a", "b"])


def test_viz_does_not_register_figures_with_pyplot():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    viz.grid(_images(1, 1), {"m": torch.rand(1, 1, 12, 12)})
    viz.show_images(_images(2, 1))
    assert plt.get_fignums() == before
