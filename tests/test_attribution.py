"""Properties of xailab.attribution: shapes, closed forms, completeness, state restoration, errors."""
import pytest
import torch
from torch import nn

from xailab import attribute
from xailab.attribution import (METHODS, ensemble, get_method, gradient, grad_cam, guided_backprop,
                                integrated_gradients, integration_points, normalise, reduce_channels, sobel, vargrad)
from xailab.metrics import completeness_gap
from xailab.attribution import random as random_map


def tiny_cnn(seed=0, inplace=False, classes=4):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(inplace=inplace), nn.Linear(32, classes)).eval()


def quadrant_data(n=128, seed=0):
    """16-px images whose class is the quadrant holding a bright square."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    y = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, :, r * 8 + 2:r * 8 + 6, c * 8 + 2:c * 8 + 6] += 0.7
    return x, y


@pytest.fixture(scope="module")
def trained():
    x, y = quadrant_data()
    model = tiny_cnn().train()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(25):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x[:8], y[:8]


@pytest.fixture
def cnn():
    return tiny_cnn(), torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


LOCAL = ["gradient", "input_x_gradient", "integrated_gradients", "guided_backprop", "smoothgrad",
         "smoothgrad_sq", "vargrad", "grad_cam", "guided_grad_cam", "random", "sobel"]
ONE_CHANNEL = {"grad_cam", "fullgrad", "simple_fullgrad", "smooth_fullgrad"}


@pytest.mark.parametrize("name", LOCAL)
def test_methods_return_maps_shaped_like_x_and_leave_model_alone(cnn, name):
    model, x = cnn
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a = attribute(model, x, [0, 1, 2], method=name, **({"n_samples": 3} if "grad" in name and "sm" in name else {}))
    assert a.shape == ((3, 1, 16, 16) if name in ONE_CHANNEL else x.shape)
    assert torch.isfinite(a).all()
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_registry_has_every_contract_name():
    names = ("gradient input_x_gradient integrated_gradients guided_backprop smoothgrad smoothgrad_sq "
             "vargrad grad_cam guided_grad_cam fullgrad simple_fullgrad smooth_fullgrad random sobel "
             "deeplift lrp occlusion lime gradient_shap kernel_shap").split()
    assert set(names) <= set(METHODS)


def test_tabular_inputs_work():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 6)
    for name in ("gradient", "input_x_gradient", "integrated_gradients", "guided_backprop", "vargrad", "random"):
        assert attribute(model, x, 2, method=name).shape == x.shape


# --- errors ------------------------------------------------------------------------------------

def test_bad_input_gets_clear_errors(cnn):
    model, x = cnn
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, D\)"):
        gradient(model, x[0], 0)
    with pytest.raises(ValueError, match=r"target must lie in \[0, 3\]"):
        gradient(model, x, 4)
    with pytest.raises(ValueError, match="target must be an int or a tensor of 3"):
        integrated_gradients(model, x, [0, 1])
    with pytest.raises(ValueError, match="sigma must be > 0"):
        attribute(model, x, 0, method="smoothgrad", sigma=0)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        vargrad(model, x, 0, n_samples=0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        integrated_gradients(model, x, 0, steps=0)
    with pytest.raises(ValueError, match="rule must be one of"):
        integrated_gradients(model, x, 0, rule="simpson")
    with pytest.raises(ValueError, match="unknown attribution method 'gradcam'.*grad_cam.*sobel"):
        attribute(model, x, 0, method="gradcam")
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*0, 1, 2, 3"):
        grad_cam(model, x, 0, layer="conv9")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        gradient(model, x, 0, batch_size=0)
    with pytest.raises(TypeError):
        gradient(model, x, 0, steps=3)  # an option the method does not take


def test_train_mode_is_refused(cnn):
    model, x = cnn
    model.train()
    with pytest.raises(ValueError, match="train mode"):
        gradient(model, x, 0)
    assert all(m.training for m in model.modules())


class Bomb(nn.Module):
    """Raises on the ``when``-th forward call: a failure in the middle of a method."""

    def __init__(self, when):
        super().__init__()
        self.calls, self.when = 0, when

    def forward(self, x):
        self.calls += 1
        if self.calls == self.when:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("name,options", [
    ("integrated_gradients", {"steps": 8, "batch_size": 3}),
    ("guided_backprop", {"batch_size": 1}),
    ("grad_cam", {"batch_size": 1}),
    ("guided_grad_cam", {}),
    ("smoothgrad", {"n_samples": 4, "batch_size": 2}),
])
def test_state_restored_when_a_method_raises_midway(name, options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), Bomb(when=2), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3)).eval()
    model[0].weight.requires_grad_(False)  # a frozen layer must stay frozen, the rest trainable
    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(RuntimeError, match="boom"):
        attribute(model, x, 1, method=name, **options)
    assert model[2].calls == 2
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True]
    assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
               for m in model.modules())
    assert not any(m.training for m in model.modules())
    # and the model still gives plain gradients afterwards (no ReLU left patched)
    ref = nn.Sequential(*[m for m in model if not isinstance(m, Bomb)]).eval()
    assert torch.allclose(gradient(model, x, 1), gradient(ref, x, 1))


# --- gradients, IG -------------------------------------------------------------------------------

def test_gradient_of_linear_model_is_its_weight_row():
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).eval()
    x = torch.randn(4, 5)
    assert torch.allclose(gradient(lin, x, 2), lin.weight[2].expand(4, 5))
    assert torch.allclose(attribute(lin, x, 2, method="input_x_gradient"), x * lin.weight[2])


def test_batch_size_does_not_change_results(cnn):
    model, x = cnn
    for name, opts in [("gradient", {}), ("integrated_gradients", {"steps": 7}), ("grad_cam", {}),
                       ("vargrad", {"n_samples": 5})]:
        full = attribute(model, x, [0, 1, 3], method=name, batch_size=1000, **opts)
        small = attribute(model, x, [0, 1, 3], method=name, batch_size=2, **opts)
        assert torch.allclose(full, small, rtol=1e-5, atol=1e-7), name


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_integration_rules_integrate_polynomials(rule):
    a, w = integration_points(40, rule)
    assert abs(float(w.sum()) - 1) < 1e-12
    approx = float((w * a ** 3).sum())
    assert abs(approx - 0.25) < (1e-12 if rule == "gausslegendre" else 1e-3)


def test_ig_completeness_below_one_percent_at_64_steps(trained):
    model, x, y = trained
    a = integrated_gradients(model, x, y, steps=64)
    gap = completeness_gap(a, model=model, x=x, target=y)
    assert gap.max() < 0.01
    coarse = completeness_gap(integrated_gradients(model, x, y, steps=4), model=model, x=x, target=y)
    assert coarse.mean() > gap.mean()  # the gap shrinks with steps


def test_ig_baseline_tensor_and_scalar(cnn):
    model, x = cnn
    base = torch.full_like(x[0], 0.5)
    a = integrated_gradients(model, x, 1, baseline=base, steps=8)
    b = integrated_gradients(model, x, 1, baseline=0.5, steps=8)
    assert torch.allclose(a, b)
    assert torch.allclose(integrated_gradients(model, x, 1, baseline=x, steps=4), torch.zeros_like(x))
    with pytest.raises(ValueError, match="baseline must be a number or broadcastable"):
        integrated_gradients(model, x, 1, baseline=torch.zeros(5))


# --- guided backprop ---------------------------------------------------------------------------

def test_guided_backprop_same_for_inplace_relu_and_reused_relu(cnn):
    model, x = cnn
    inplace = tiny_cnn(inplace=True)
    ref = guided_backprop(model, x, 2)
    assert torch.allclose(guided_backprop(inplace, x, 2), ref)

    shared = nn.ReLU()  # one module used three times
    reused = nn.Sequential(*[shared if isinstance(m, nn.ReLU) else m for m in model]).eval()
    assert torch.allclose(guided_backprop(reused, x, 2), ref)
    assert not torch.allclose(ref, gradient(model, x, 2))


def test_guided_backprop_equals_gradient_with_positive_upstream():
    """Through one ReLU into a positive-weight head, guided backprop is just the gradient."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        model[2].weight.abs_()
    x = torch.randn(5, 4)
    assert torch.allclose(guided_backprop(model, x, 0), gradient(model, x, 0))


def test_guided_backprop_explains_functional_relu():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.relu(x))

    with pytest.raises(ValueError, match="no nn.ReLU modules.*functional"):
        guided_backprop(Functional().eval(), torch.randn(2, 4), 0)


# --- ensembles ------------------------------------------------------------------------------------

def test_linear_model_smoothgrad_is_gradient_and_vargrad_zero():
    torch.manual_seed(0)
    lin = nn.Linear(10, 3).eval()
    x = torch.randn(4, 10)
    out = ensemble(lin, x, 1, n_samples=20, sigma=0.3)
    assert torch.allclose(out["smoothgrad"], gradient(lin, x, 1), atol=1e-6)
    assert torch.allclose(out["smoothgrad_sq"], gradient(lin, x, 1) ** 2, atol=1e-6)
    assert torch.equal(out["vargrad"], torch.zeros_like(x))


class Quadratic(nn.Module):
    """f(x) = xᵀAx as the only output: gradient 2 S x with S = (A + Aᵀ)/2."""

    def __init__(self, a):
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, x):
        return ((x @ self.a) * x).sum(1, keepdim=True)


def test_quadratic_model_closed_forms():
    g = torch.Generator().manual_seed(0)
    d, n, s = 6, 3, 4000
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    model = Quadratic(a).eval()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = a + a.T                                        # gradient = B x
    noise = torch.randn(s, n, d, generator=g, dtype=torch.float64)
    sigma = 0.1
    std = sigma * (x.amax(1) - x.amin(1))[:, None]     # per-sample σ from the value range
    out = ensemble(model, x, 0, sigma=sigma, n_samples=s, draws=noise, batch_size=997)
    grads = (x + std * noise) @ b.T                    # exact gradients at the noisy points
    assert torch.allclose(out["smoothgrad"], grads.mean(0))
    assert torch.allclose(out["vargrad"], grads.var(0, unbiased=False))
    assert torch.allclose(out["smoothgrad_sq"], (grads ** 2).mean(0))
    # in expectation: SmoothGrad = B x (zero-mean noise), VarGrad = σ² diag(B Bᵀ)
    assert torch.allclose(out["smoothgrad"], x @ b.T, atol=0.1 * float(std.max()) * float(b.abs().max()))
    expected = std ** 2 * torch.diagonal(b @ b.T)
    assert torch.allclose(out["vargrad"], expected, rtol=0.1)


def test_ensemble_statistics_share_samples_and_are_seeded(cnn):
    model, x = cnn
    both = ensemble(model, x, 1, n_samples=6, seed=3)
    for stat in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        alone = attribute(model, x, 1, method=stat, n_samples=6, seed=3)
        assert torch.allclose(both[stat], alone, rtol=1e-5, atol=1e-9)
    other = ensemble(model, x, 1, stats="vargrad", n_samples=6, seed=4)["vargrad"]
    assert not torch.allclose(both["vargrad"], other)
    with pytest.raises(ValueError, match="stats must be"):
        ensemble(model, x, 1, stats=("mean",))


def test_ensemble_passes_base_options_through(cnn):
    model, x = cnn
    for base, opts in [("integrated_gradients", {"steps": 3, "baseline": 0.2}), ("grad_cam", {"layer": "3"}),
                       ("guided_backprop", {})]:
        out = attribute(model, x, 0, method="smoothgrad", base=base, n_samples=2, batch_size=4, **opts)
        noise = torch.randn(2, *x.shape, generator=torch.Generator().manual_seed(0))
        manual = ensemble(model, x, 0, base=base, stats="smoothgrad", n_samples=2, draws=noise, **opts)
        assert out.shape == manual["smoothgrad"].shape
    with pytest.raises(TypeError):
        attribute(model, x, 0, method="smoothgrad", base="gradient", steps=3)
    with pytest.raises(ValueError, match="non-ensemble"):
        attribute(model, x, 0, method="vargrad", base="smoothgrad")


# --- grad-cam, controls, maps --------------------------------------------------------------------

def test_grad_cam_layer_choice_and_inplace_relu(cnn):
    model, x = cnn
    auto = grad_cam(model, x, 1)
    assert torch.allclose(auto, grad_cam(model, x, 1, layer="3"))
    assert torch.allclose(auto, grad_cam(model, x, 1, layer=model[3]))
    assert torch.allclose(auto, grad_cam(tiny_cnn(inplace=True), x, 1))  # ReLU(inplace) after conv
    assert (auto >= 0).all()
    signed = grad_cam(model, x, 1, relu=False)
    assert (signed < 0).any() and (signed > 0).any()  # ReLU applied before upsampling, so no identity
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        grad_cam(model, x, 1, layer="7")


def test_controls_ignore_the_model(cnn):
    model, x = cnn
    r = random_map(model, x, 0, seed=5)
    assert torch.equal(r, random_map(None, x, 3, seed=5)) and not torch.equal(r, random_map(model, x, 0, seed=6))
    img = torch.zeros(1, 3, 8, 8)
    img[..., 4:] = 1.0  # a vertical edge between columns 3 and 4
    edges = sobel(None, img, 0)
    assert edges.shape == img.shape
    assert edges[0, 0, :, 3:5].min() > 0 and edges[0, :, :, :2].abs().max() == 0
    assert torch.equal(edges[:, 0], edges[:, 2])


def test_reduce_channels_and_normalise():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]])  # (1, 2, 1, 2)
    assert reduce_channels(a, "abs-sum").flatten().tolist() == [4.0, 3.0]
    assert reduce_channels(a, "sum").flatten().tolist() == [-2.0, -1.0]
    assert reduce_channels(a, "max-abs").flatten().tolist() == [3.0, 2.0]
    tab = torch.tensor([[1.0, -2.0]])
    assert torch.equal(reduce_channels(tab, "sum"), tab) and torch.equal(reduce_channels(tab), tab.abs())
    with pytest.raises(ValueError, match="reduce must be one of"):
        reduce_channels(a, "mean")
    m = torch.randn(3, 1, 4, 4)
    assert torch.allclose(normalise(m).flatten(1).abs().amax(1), torch.ones(3))
    mm = normalise(m, "min-max").flatten(1)
    assert torch.allclose(mm.amin(1), torch.zeros(3)) and torch.allclose(mm.amax(1), torch.ones(3))
    assert torch.allclose(normalise(m, "sum-abs").flatten(1).abs().sum(1), torch.ones(3))
    r = normalise(torch.tensor([[3.0, 1.0, 1.0, 7.0]]), "rank")
    assert torch.allclose(r, torch.tensor([[2 / 3, 1 / 6, 1 / 6, 1.0]]))
    assert torch.equal(normalise(torch.ones(2, 5), "min-max"), torch.zeros(2, 5))


def test_get_method_returns_registered_functions():
    assert get_method("gradient") is gradient


def test_the_registry_records_what_each_method_is():
    from xailab.attribution import OPTION_RANGES, method_info

    assert method_info("grad_cam").output == "pixel" and method_info("gradient").output == "input"
    seeded = {n for n, info in METHODS.items() if info.seeded}
    assert seeded == {"smoothgrad", "smoothgrad_sq", "vargrad", "smooth_fullgrad", "random", "lime", "kernel_shap",
                      "gradient_shap"}
    ig = method_info("integrated_gradients").options["steps"]
    assert (ig.default, ig.low, ig.high) == (64, *OPTION_RANGES["steps"][:2])
    assert method_info("vargrad").takes_base and not method_info("gradient").takes_base
    # the facts match what the methods do: output shape, and noise that changes with the seed
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for name in ("gradient", "grad_cam", "smoothgrad", "random"):
        info = method_info(name)
        a = attribute(model, x, 1, method=name, **({"seed": 1} if info.seeded else {}))
        assert a.shape[1] == (1 if info.output == "pixel" else 3), name
        if info.seeded:
            assert not torch.equal(a, attribute(model, x, 1, method=name, seed=2)), name
    with pytest.raises(ValueError, match="no range"):
        from xailab.attribution.registry import register

        register("bad", options=("window",))(lambda model, x, target, window=3: x)


def test_resolve_target_accepts_every_form():
    from xailab.attribution import resolve_target

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(5, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1, 0])
    assert resolve_target(2, x).tolist() == [2] * 5
    assert torch.equal(resolve_target(y, x), y) and torch.equal(resolve_target("label", x, labels=y), y)
    assert torch.equal(resolve_target("predicted", x, model=model), model(x).argmax(1))
    with pytest.raises(ValueError, match="labels"):
        resolve_target("label", x)
    with pytest.raises(ValueError, match="model"):
        resolve_target("predicted", x)
    with pytest.raises(ValueError, match="target must be"):
        resolve_target("true", x)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        resolve_target([0, 1, 2, 3, 0], x, num_classes=3)
