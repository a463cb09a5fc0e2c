"""SPADE: augmentations, capture, solvers, schedules and traces (CPU, small models, < 60 s)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xailab.papers.spade import (augment, hessian, layer_sparsities, overlap, prune_fast, prune_magnitude,
                          prune_obc, reconstruction_error, trace, trace_batch)
from xailab.papers.spade.capture import capture_input, execution_order, layer_hessian, swap_in


class Tiny(nn.Module):
    """Conv stem, a grouped and a depthwise conv, a residual add, pooling, a linear head."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.r0 = nn.ReLU()
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.r1 = nn.ReLU()
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.r2 = nn.ReLU()
        self.conv = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.r3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(48, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)

    def forward(self, x):
        h = self.r0(self.stem(x))
        h = self.r1(self.grouped(h)) + h
        h = self.r2(self.depthwise(h))
        return self.fc(self.pool(self.r3(self.conv(h))).flatten(1))


def _image(seed=0, n=1, size=12):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


OPTS = dict(n_views=8, progress=False, device="cpu")


def _random_problem(rows=12, cols=30, n=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, cols, generator=g, dtype=torch.float64)
    X = X + 0.5 * X @ torch.randn(cols, cols, generator=g, dtype=torch.float64)  # correlated inputs
    return torch.randn(rows, cols, generator=g, dtype=torch.float64), hessian(X)


def _real_problem(layer="conv"):
    """A real layer's inputs: views of an image through the (dense) Tiny model."""
    model = Tiny().eval()
    views = augment(_image(3), 16, seed=1)
    work = Tiny().eval()
    work.load_state_dict(model.state_dict())
    swap_in(work, [layer], 1)
    module = model.get_submodule(layer)
    H = layer_hessian(module, capture_input(work, work.get_submodule(layer), views), 1)[0]
    W = module.weight.detach().reshape(H.shape[0], -1, H.shape[-1]).double()
    return W, H


# ---- augmentations ------------------------------------------------------------------------------

def test_augment_is_seeded_and_keeps_the_original_first():
    x = _image(0, n=2)
    a, b, c = augment(x, 6, seed=0), augment(x, 6, seed=0), augment(x, 6, seed=1)
    assert a.shape == (12, 3, 12, 12)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[0], x[0]) and torch.equal(a[6], x[1])
    assert not torch.allclose(a[1], x[0])
    assert float(a.min()) >= float(x.min()) and float(a.max()) <= float(x.max())
    # an image's views do not depend on the other images of the batch
    assert torch.equal(augment(x[1:], 6, seed=0), a[6:])


# ---- solvers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("problem", ["random", "real-conv", "real-grouped", "real-fc"])
@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_solver_errors_are_ordered_obc_fast_magnitude(problem, sparsity):
    if problem == "random":
        W, H = _random_problem()
    else:
        W, H = _real_problem({"real-conv": "conv", "real-grouped": "grouped", "real-fc": "fc"}[problem])
    err = {name: float(reconstruction_error(W, Wh, H).sum())
           for name, Wh in [("magnitude", prune_magnitude(W, sparsity)),
                            ("fast", prune_fast(W, H, sparsity, blocksize=8)),
                            ("obc", prune_obc(W, H, sparsity))]}
    assert err["fast"] < err["magnitude"], err
    assert err["obc"] <= err["fast"] * (1 + 1e-6), err


@pytest.mark.parametrize("solver", [prune_fast, prune_obc, lambda W, H, s: prune_magnitude(W, s)])
def test_solvers_reach_the_exact_count_and_zero_prunes_nothing(solver):
    W, H = _random_problem(rows=7, cols=13)
    assert torch.equal(solver(W, H, 0.0), W)
    for s in (0.25, 0.5, 0.8):
        assert int((solver(W, H, s) == 0).sum()) == round(s * W.numel())


def test_obc_update_is_least_squares_optimal_for_its_mask():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(60, 10, generator=g, dtype=torch.float64)
    W = torch.randn(3, 10, generator=g, dtype=torch.float64)
    Wh = prune_obc(W, hessian(X), 0.5, damp=0.0)
    for r in range(3):
        keep = Wh[r] != 0
        # best weights on the kept inputs, fitted to the dense row's outputs
        best = torch.linalg.lstsq(X[:, keep], X @ W[r]).solution
        assert torch.allclose(Wh[r, keep], best, atol=1e-8)


def test_fast_prunes_dead_inputs_first():
    W, H = _random_problem(rows=4, cols=10)
    H[:, 2] = 0
    H[2, :] = 0
    out = prune_fast(W, H, 0.1)
    assert torch.all(out[:, 2] == 0)           # 4 of the 4 pruned weights are the dead column


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_solvers_refuse_bad_sparsity(bad):
    W, H = _random_problem(rows=3, cols=5)
    with pytest.raises(ValueError, match="sparsity"):
        prune_fast(W, H, bad)
    with pytest.raises(ValueError, match="sparsity"):
        prune_obc(W, H, bad)


# ---- schedules ----------------------------------------------------------------------------------

def test_schedules():
    names = ["a", "b", "c", "d", "e"]
    lin = layer_sparsities(names, 0.8, "linear")
    assert lin["a"] == 0 and lin["e"] == pytest.approx(0.8)
    assert all(lin[x] <= lin[y] for x, y in zip(names, names[1:]))
    const = layer_sparsities(names, 0.5)
    assert const["a"] == 0 and all(const[n] == 0.5 for n in names[1:])
    assert layer_sparsities(names, 0.5, dense_first=False)["a"] == 0.5
    assert layer_sparsities(names, {"c": 0.3}) == {"a": 0, "b": 0, "c": 0.3, "d": 0, "e": 0}
    with pytest.raises(ValueError, match="unknown layers"):
        layer_sparsities(names, {"z": 0.3})
    with pytest.raises(ValueError, match="schedule"):
        layer_sparsities(names, 0.5, "cubic")


# ---- traces -------------------------------------------------------------------------------------

def test_sparsity_zero_trace_is_the_dense_model():
    model = Tiny().eval()
    x = _image(1)
    t, report = trace(model, x, 0.0, **OPTS)
    others = _image(2, n=4)
    assert torch.equal(t(x), model(x)) and torch.equal(t(others), model(others))
    assert all(r.rel_error == 0 and r.solver == "-" for r in report.layers)


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_each_layer_reaches_its_target(schedule):
    model = Tiny().eval()
    t, rep = trace(model, _image(1), 0.6, schedule=schedule, **OPTS)
    assert [r.name for r in rep.layers] == ["stem", "grouped", "depthwise", "conv", "fc"]
    for r in rep.layers:
        w = t.get_submodule(r.name).weight
        achieved = float((w == 0).float().mean())
        assert achieved == pytest.approx(r.achieved)
        assert achieved >= r.scheduled - 1.0 / w.numel()     # exact count, dead inputs may add
    assert rep.layers[0].achieved == 0                      # first conv dense by default
    assert rep.layers[-1].scheduled == pytest.approx(0.6)
    assert rep.seconds_per_image > 0


def test_trace_reconstructs_better_than_magnitude_and_leaves_caller_untouched():
    model = Tiny()                                       # train mode: trace must not change it
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _image(4)
    fast = trace(model, x, 0.7, solver="fast", **OPTS)
    mag = trace(model, x, 0.7, solver="magnitude", **OPTS)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.stem.weight.requires_grad
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert isinstance(model.fc, nn.Linear)
    assert not fast.model.training
    e_fast = [r.rel_error for r in fast.report.layers[1:]]
    e_mag = [r.rel_error for r in mag.report.layers[1:]]
    assert all(f < m for f, m in zip(e_fast, e_mag)), (e_fast, e_mag)
    # the trace's prediction stays closer to the dense one on its own input
    dense = model.eval()(x)
    assert (fast.model(x) - dense).norm() < (mag.model(x) - dense).norm()


def test_batched_traces_equal_single_traces():
    model = Tiny().eval()
    xs = _image(6, n=3)
    batch = trace_batch(model, xs, 0.5, schedule="linear", **OPTS)
    for i in (0, 2):
        single = trace(model, xs[i], 0.5, schedule="linear", **OPTS)
        for name in ("grouped", "depthwise", "conv", "fc"):
            a, b = batch[i].model.get_submodule(name).weight, single.model.get_submodule(name).weight
            assert torch.equal(a, b), name          # register SPADE-8(d): bitwise, whatever the batch


def test_overlap_of_traces():
    model = Tiny().eval()
    ta, tb = (t.model for t in trace_batch(model, _image(7, n=2), 0.6, **OPTS))
    same = overlap(ta, ta)
    assert set(same) == {"grouped", "depthwise", "conv", "fc"} and all(v == 1 for v in same.values())
    assert all(0 <= v <= 1 for v in overlap(ta, tb).values())


def test_bad_inputs_give_clear_errors():
    model = Tiny().eval()
    x = _image(0)
    with pytest.raises(ValueError, match="sparsity"):
        trace(model, x, 1.0, **OPTS)
    with pytest.raises(ValueError, match="sparsity"):
        trace(model, x, -0.2, **OPTS)
    with pytest.raises(ValueError, match="n_views"):
        trace(model, x, 0.5, n_views=0, progress=False)
    with pytest.raises(ValueError, match="single image"):
        trace(model, _image(0, n=2), 0.5, **OPTS)
    with pytest.raises(ValueError, match="single image"):
        trace(model, torch.rand(12, 12), 0.5, **OPTS)
    with pytest.raises(ValueError, match="no prunable layers"):
        trace(nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1)), x, 0.5, **OPTS)
    with pytest.raises(ValueError, match="solver"):
        trace(model, x, 0.5, solver="sgd", **OPTS)
    with pytest.raises(ValueError, match="NaN"):
        trace(model, torch.full_like(x, float("nan")), 0.5, **OPTS)
    shared = nn.Sequential(nn.Conv2d(3, 3, 1))
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ValueError, match="more than once"):
        trace(twice, x, 0.5, **OPTS)


def test_execution_order_follows_the_forward_pass():
    class Rev(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(4, 2)
            self.early = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.late(self.early(x).mean((2, 3)))

    assert [n for n, _ in execution_order(Rev(), _image(0))] == ["early", "late"]


def test_report_says_whether_the_trace_still_predicts_like_the_dense_model():
    model = Tiny().eval()
    x = _image(3)
    t, report = trace(model, x, 0.0, **OPTS)
    assert report.agrees_on_input and report.view_agreement == 1.0       # sparsity 0: the dense model itself
    t, report = trace(model, x, 0.6, **OPTS)
    with torch.no_grad():
        same = bool(t(x).argmax(1) == model(x).argmax(1))
    assert report.agrees_on_input == same and 0.0 <= report.view_agreement <= 1.0


def test_layer_conditioning_counts_what_the_views_constrain():
    from xailab.papers.spade import layer_conditioning

    model = Tiny().eval()
    few = {r["name"]: r for r in layer_conditioning(model, _image(1), n_views=2, seed=0)}
    many = {r["name"]: r for r in layer_conditioning(model, _image(1), n_views=48, seed=0)}
    assert list(few) == ["stem", "grouped", "depthwise", "conv", "fc"]
    fc = model.fc.in_features
    assert few["fc"]["cols"] == fc and few["fc"]["samples"] == 2 and few["fc"]["rank"] <= 2   # rank <= views
    assert many["fc"]["rank"] > few["fc"]["rank"]
    assert few["fc"]["deficit"] > many["fc"]["deficit"] and many["fc"]["live"] <= fc
    for r in many.values():
        assert r["rank"] <= r["live"] <= r["cols"] and r["deficit"] == r["live"] - r["rank"]
        assert r["condition_damped"] <= r["condition"] + 1e-9


def test_layer_conditioning_leaves_dead_inputs_out():
    # an input that is zero on every view is dead (the solvers drop it first): it does not count as a
    # direction the views fail to pin down
    from xailab.papers.spade import layer_conditioning

    x = _image(1)
    x[:, 0] = 0                                       # a red channel of zeros, kept at zero without colour jitter
    rows = {r["name"]: r for r in layer_conditioning(Tiny().eval(), x, n_views=32, seed=0,
                                                     augment_options=dict(jitter=0.0))}
    stem = rows["stem"]
    assert stem["live"] == stem["cols"] - 9 and stem["rank"] == stem["live"] and stem["deficit"] == 0
    assert stem["condition"] < 1e12


# ---- CUDA (skipped where there is no GPU; see tests/conftest.py) ---------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("solver", ["fast", "obc"])
def test_solvers_on_cuda_match_cpu(solver):
    W, H = _real_problem("conv")
    on_cpu = prune_fast(W, H, 0.6) if solver == "fast" else prune_obc(W, H, 0.6)
    on_gpu = (prune_fast(W.cuda(), H.cuda(), 0.6) if solver == "fast" else prune_obc(W.cuda(), H.cuda(), 0.6)).cpu()
    assert on_gpu.dtype == on_cpu.dtype
    # float64 on both devices: the same weights are kept and the re-fitted values agree closely
    assert ((on_gpu == 0) == (on_cpu == 0)).float().mean() > 0.999
    assert torch.allclose(on_gpu, on_cpu, atol=1e-8)


@pytest.mark.cuda
def test_trace_runs_on_cuda_like_on_cpu_and_auto_picks_cuda():
    model = Tiny().eval()
    xs = _image(6, n=3)
    cpu = trace_batch(model, xs, 0.5, n_views=8, progress=False, device="cpu")
    gpu = trace_batch(model, xs, 0.5, n_views=8, progress=False, device="auto")
    assert next(gpu[0].model.parameters()).is_cuda and next(model.parameters()).device.type == "cpu"
    for a, b in zip(cpu, gpu):
        for name in ("grouped", "depthwise", "conv", "fc"):
            wa, wb = a.model.get_submodule(name).weight, b.model.get_submodule(name).weight.cpu()
            assert ((wa == 0) == (wb == 0)).float().mean() > 0.99
            assert torch.allclose(wa, wb, atol=1e-4)
        assert b.report.agrees_on_input == a.report.agrees_on_input
    zero = trace(model, xs[0], 0.0, n_views=8, progress=False, device="cuda")
    assert torch.allclose(zero.model(xs[:1].cuda()).cpu(), model(xs[:1]), atol=1e-5)


# ---- evaluation statistics ----------------------------------------------------------------------

def test_per_image_pairs_rows_by_sample():
    from xailab.papers.spade.evaluate import per_image

    rows = [{"sample": i, "method": m, "variant": v, "auc": i + (0.5 if m == "b" else 0) + (1 if v == "s" else 0)}
            for v in ("d", "s") for m in ("a", "b") for i in (2, 0, 1)]
    assert per_image(rows, "d", "a").tolist() == [0, 1, 2]
    assert per_image(rows, "s").tolist() == [1.25, 2.25, 3.25]
    with pytest.raises(ValueError, match="no rows"):
        per_image(rows, "x")


def test_dense_and_trace_maps_are_computed_alike():
    # the dense map of an image must not depend on the other images of the batch (GradientSHAP's
    # default baselines do): otherwise a dense-vs-trace difference measures the batch, not the trace
    from xailab.papers.spade.evaluate import pixel_maps

    model = Tiny().eval()
    xs = torch.cat([_image(8), 3 * _image(9)])
    both = pixel_maps(model, xs, 0, "gradient_shap", n_samples=4)
    alone = pixel_maps(model, xs[:1], 0, "gradient_shap", n_samples=4)
    assert torch.allclose(both[:1], alone)
