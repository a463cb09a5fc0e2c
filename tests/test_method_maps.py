"""xailab.attribution.method_maps: one loop for maps of many methods over a data set."""
from __future__ import annotations

import pytest
import torch

from xailab import attribute
from xailab.attribution import ensemble, method_maps, method_table, reduce_channels
from xailab.models import SmallCNN


@pytest.fixture(scope="module")
def setup():
    model = SmallCNN(in_channels=3, num_classes=3, width=4, depth=2, input_size=8, seed=0).eval()
    x = torch.rand(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(10) % 3
    return model, x, y


def test_maps_equal_one_call_per_method_and_batches_do_not_matter(setup):
    model, x, y = setup
    methods = {"grad": "gradient", "IG 8": ("integrated_gradients", {"steps": 8}), "cam": "grad_cam"}
    whole = method_maps(model, x, y, methods)
    assert list(whole) == list(methods)
    torch.testing.assert_close(whole["grad"], attribute(model, x, y, method="gradient"))
    torch.testing.assert_close(whole["IG 8"], attribute(model, x, y, method="integrated_gradients", steps=8))
    chunked = method_maps(model, x, y, methods, batch_size=3, reduce="abs-sum")
    for k in methods:
        torch.testing.assert_close(chunked[k], reduce_channels(whole[k], "abs-sum"))


def test_ensemble_statistics_share_one_set_of_samples_and_squares_reuse_raw_maps(setup):
    model, x, y = setup
    names = ["smoothgrad(gradient)", "vargrad(gradient)", "smoothgrad(gradient)²", "gradient^2"]
    maps = method_maps(model, x, y, names, defaults={"ensemble": {"n_samples": 4}}, seed=None)
    ref = ensemble(model, x, y, base="gradient", n_samples=4, seed=0)
    torch.testing.assert_close(maps["smoothgrad(gradient)"], ref["smoothgrad"])
    torch.testing.assert_close(maps["vargrad(gradient)"], ref["vargrad"])
    torch.testing.assert_close(maps["smoothgrad(gradient)²"], ref["smoothgrad"] ** 2)
    torch.testing.assert_close(maps["gradient^2"], attribute(model, x, y, method="gradient") ** 2)


def test_seed_gives_each_batch_its_own_noise_reproducibly(setup):
    model, x, y = setup
    a = method_maps(model, x, y, ["random", "smoothgrad(gradient)"], batch_size=5, seed=7)
    b = method_maps(model, x, y, ["random", "smoothgrad(gradient)"], batch_size=5, seed=7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    first, second = a["random"][:5], a["random"][5:]
    assert not torch.equal(first, second)                  # batches do not repeat each other's noise
    torch.testing.assert_close(first, attribute(model, x[:5], y[:5], method="random", seed=7 * 100_003))
    fixed = method_maps(model, x, y, {"r": ("random", {"seed": 1})}, batch_size=5, seed=7)["r"]
    torch.testing.assert_close(fixed[:5], attribute(model, x[:5], y[:5], method="random", seed=1))


def test_predicted_target_and_clear_errors(setup):
    model, x, _ = setup
    with torch.no_grad():
        pred = model(x).argmax(1)
    torch.testing.assert_close(method_maps(model, x, "predicted", ["gradient"], batch_size=4)["gradient"],
                               attribute(model, x, pred, method="gradient"))
    with pytest.raises(ValueError, match="target"):
        method_maps(model, x, "label", ["gradient"])
    with pytest.raises(ValueError, match="unknown method"):
        method_maps(model, x, 0, ["gradiant"])
    with pytest.raises(ValueError, match="batch_size"):
        method_maps(model, x, 0, ["gradient"], batch_size=0)
    with pytest.raises(ValueError, match="NaN"):
        method_maps(model, torch.full_like(x, float("nan")), 0, ["gradient"])


def test_method_table_forms_and_defaults():
    t = method_table({"SG": ("smoothgrad", {"sigma": 0.3}), "g": "gradient", "V": "vargrad(integrated_gradients)"},
                     defaults={"integrated_gradients": {"steps": 4}, "ensemble": {"n_samples": 2},
                               "smoothgrad": {"n_samples": 9}})
    assert t["SG"].options == {"n_samples": 9, "sigma": 0.3} and t["g"].options == {}
    assert t["V"].stat == "vargrad" and t["V"].options == {"steps": 4, "n_samples": 2}
    assert list(method_table(["gradient", "sobel"])) == ["gradient", "sobel"]
    with pytest.raises(ValueError, match="defaults"):
        method_table(["gradient"], defaults={"gradiant": {}})
    with pytest.raises(ValueError, match="pair"):
        method_table({"x": 3})


def test_attribute_refuses_non_finite_input(setup):
    model, x, y = setup
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    for method in ("gradient", "integrated_gradients", "grad_cam", "fullgrad", "smoothgrad"):
        with pytest.raises(ValueError, match="NaN or infinite"):
            attribute(model, bad, y, method=method)
