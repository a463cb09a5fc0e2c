"""xailab.widgets: the explorer's plain callbacks for every option value, and the widget wiring."""
from __future__ import annotations

import base64
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from xailab import widgets as wd
from xailab.widgets import ExplorerState

pytest.importorskip("xailab.attribution")
from xailab.attribution import OPTION_RANGES, attribute  # noqa: E402
from xailab.data import Data  # noqa: E402
from xailab.models import SmallCNN  # noqa: E402

ALL_METHODS = wd.EXPLORER_METHODS + ("occlusion", "lime", "kernel_shap", "gradient_shap", "lrp",
                                    "simple_fullgrad", "smooth_fullgrad")


@pytest.fixture(scope="module")
def model():
    return SmallCNN(in_channels=3, num_classes=3, width=4, depth=2, input_size=16, seed=0).eval()


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    mask = torch.zeros(4, 1, 16, 16)
    mask[:, :, 4:10, 4:10] = 1
    return Data(x, torch.tensor([0, 1, 2, 0]), mask, ("a", "b", "c"))


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


# ------------------------------------------------------------------ options_for / method_options
@pytest.mark.parametrize("method", ALL_METHODS)
def test_options_for_every_method(method):
    opts = wd.options_for(method)
    assert set(opts) == set(wd.TUNABLE)
    assert opts["base"] == (method in wd.ENSEMBLES)
    assert opts["sigma"] == (method in wd.ENSEMBLES or method in ("smooth_fullgrad", "gradient_shap"))
    assert opts["steps"] == (method == "integrated_gradients")
    # the base only matters for ensembles, and an IG base brings its steps along
    assert wd.options_for(method, "integrated_gradients")["steps"] == (
        method == "integrated_gradients" or method in wd.ENSEMBLES)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_method_options_pass_only_enabled_controls(method):
    state = ExplorerState(method=method, base="integrated_gradients", sigma=0.2, n_samples=3, steps=5)
    opts = wd.method_options(state)
    enabled = {k for k, on in wd.options_for(method, state.base).items() if on}
    assert set(opts) - {"seed"} == enabled
    for k in enabled:
        assert opts[k] == getattr(state, k)


@pytest.mark.parametrize("field,bad", [("sigma", 0.0), ("sigma", -0.1), ("n_samples", 0), ("steps", 0),
                                       ("steps", 2.5), ("index", -1), ("base", "sobel"),
                                       ("target", "other"), ("view", "3d")])
def test_state_rejects_bad_values_by_name(field, bad):
    with pytest.raises(ValueError, match=field):
        ExplorerState(**{field: bad})


# ------------------------------------------------------------------ compute / render
@pytest.mark.parametrize("method", ALL_METHODS)
def test_compute_and_render_every_method(method, model, data):
    state = ExplorerState(method=method, index=1, n_samples=3, steps=4)
    maps = wd.compute(state, model, data, device="cpu")
    assert maps, method
    for name, m in maps.items():
        assert m.shape[0] == 1 and m.shape[-2:] == data.x.shape[-2:] and m.shape[1] in (1, 3), name
        assert torch.isfinite(m).all(), name
    fig = wd.render(state, maps, data)
    assert len(_image_axes(fig)) >= 1 + len(maps)
    assert fig.get_suptitle().startswith(method)


@pytest.mark.parametrize("base", wd.ENSEMBLE_BASES)
@pytest.mark.parametrize("method", wd.ENSEMBLES)
def test_every_base_of_every_ensemble(method, base, model, data):
    state = ExplorerState(method=method, base=base, n_samples=4, steps=3, sigma=0.1)
    maps = wd.compute(state, model, data, device="cpu")
    assert list(maps) == [f"{base} (base)", *wd.ENSEMBLES]
    sg, sq, var = (maps[k] for k in wd.ENSEMBLES)
    assert (var >= -1e-7).all()
    assert (sq >= sg ** 2 - 1e-6).all()  # E[g²] >= E[g]² on the same noisy samples
    fig = wd.render(state, maps, data)
    titles = [ax.get_title() for ax in _image_axes(fig)]
    assert f"▸ {method}" in titles


@pytest.mark.parametrize("sigma", OPTION_RANGES["sigma"][:2])
@pytest.mark.parametrize("n_samples", (OPTION_RANGES["n_samples"][0], 8))
def test_sigma_and_n_samples_edges(sigma, n_samples, model, data):
    maps = wd.compute(ExplorerState(method="smoothgrad", sigma=sigma, n_samples=n_samples), model, data,
                      device="cpu")
    assert torch.isfinite(maps["smoothgrad"]).all()
    if n_samples == 1:  # one sample has no spread
        assert torch.allclose(maps["vargrad"], torch.zeros_like(maps["vargrad"]), atol=1e-7)


@pytest.mark.parametrize("steps", OPTION_RANGES["steps"][:2])
def test_ig_steps_edges(steps, model, data):
    maps = wd.compute(ExplorerState(method="integrated_gradients", steps=steps), model, data, device="cpu")
    x = data.x[:1]
    expect = attribute(model, x, data.y[:1], method="integrated_gradients", steps=steps)
    assert torch.allclose(maps["integrated_gradients"], expect, atol=1e-6)


def test_target_prediction_explains_the_argmax(model, data):
    i = 2
    pred = model(data.x[i:i + 1]).argmax(1)
    maps = wd.compute(ExplorerState(method="gradient", index=i, target="predicted"), model, data, device="cpu")
    assert torch.allclose(maps["gradient"], attribute(model, data.x[i:i + 1], pred, method="gradient"))
    maps = wd.compute(ExplorerState(method="gradient", index=i, target="label"), model, data, device="cpu")
    assert torch.allclose(maps["gradient"], attribute(model, data.x[i:i + 1], data.y[i:i + 1], method="gradient"))


@pytest.mark.parametrize("view", wd.VIEWS)
@pytest.mark.parametrize("signed", [False, True])
def test_render_views(view, signed, model, data):
    state = ExplorerState(method="gradient", view=view, signed=signed)
    fig = wd.render(state, wd.compute(state, model, data, device="cpu"), data)
    heat = _image_axes(fig)[1].images[-1]
    if view == "heatmap":
        lo, hi = heat.get_clim()
        assert (lo == -hi) if signed else (lo == 0)
    else:
        assert heat.get_array().ndim == 3  # an RGBA overlay


def test_compute_rejects_an_index_past_the_data(model, data):
    with pytest.raises(ValueError, match="index must be < 4"):
        wd.compute(ExplorerState(index=4), model, data, device="cpu")


# ------------------------------------------------------------------ the widget
def _png(box):
    (out,) = box.output.outputs
    return base64.b64decode(out["data"]["image/png"])


def test_explorer_redraws_when_the_method_changes(model, data):
    box = wd.explorer(model, data, methods=("gradient", "smoothgrad", "integrated_gradients"), device="cpu",
                      state=ExplorerState(n_samples=2, steps=2))
    assert box.redraws == 1 and _png(box).startswith(b"\x89PNG")
    assert box.controls["base"].disabled and box.controls["sigma"].disabled and box.controls["steps"].disabled
    first = _png(box)
    box.controls["method"].value = "smoothgrad"
    assert box.state.method == "smoothgrad" and box.redraws == 2 and _png(box) != first
    assert not box.controls["base"].disabled and not box.controls["sigma"].disabled
    assert box.controls["steps"].disabled
    box.controls["base"].value = "integrated_gradients"  # an IG base needs its steps
    assert not box.controls["steps"].disabled and box.redraws == 3
    box.controls["sigma"].value = 0.3
    box.controls["index"].value = 3
    assert box.state == replace(ExplorerState(n_samples=2, steps=2), method="smoothgrad",
                                base="integrated_gradients", sigma=0.3, index=3)
    assert box.redraws == 5
    assert box.controls["index"].max == len(data) - 1


def test_explorer_shows_errors_instead_of_swallowing_them(model, data, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("the method failed on this model")

    monkeypatch.setattr(wd, "compute", boom)
    box = wd.explorer(model, data, methods=("gradient",), device="cpu")
    (out,) = box.output.outputs
    assert out["output_type"] == "stream" and "failed on this model" in out["text"]


def test_explorer_checks_its_arguments(model, data):
    with pytest.raises(ValueError, match="no_such_method"):
        wd.explorer(model, data, methods=("no_such_method",))
    with pytest.raises(ValueError, match="bases"):
        wd.explorer(model, data, bases=("sobel",))
    with pytest.raises(ValueError, match="state.method"):
        wd.explorer(model, data, methods=("gradient",), state=ExplorerState(method="sobel"))


@pytest.mark.parametrize("method", ["grad_cam", "smoothgrad", "integrated_gradients"])
def test_one_channel_data_without_mask(method):
    gray = SmallCNN(in_channels=1, num_classes=2, width=4, depth=2, input_size=8, seed=1).eval()
    digits_like = Data(torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 1]))
    state = ExplorerState(method=method, index=2, n_samples=2, steps=3, view="overlay")
    maps = wd.compute(state, gray, digits_like, device="cpu")
    fig = wd.render(state, maps, digits_like)
    assert _image_axes(fig)[0].get_title() == "#2: 1"  # no class names: the label index
    assert all(m.shape[1] == 1 for m in maps.values())
