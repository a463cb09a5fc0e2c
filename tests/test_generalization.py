"""Properties of xailab.papers.generalization: operator norms, R_A, bound calculators, the experiment."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats
from torch import nn

from xailab.papers import generalization as G


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- spectral norms

CONVS = [
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, stride=2),
    dict(in_channels=3, out_channels=2, kernel_size=3, padding=0, stride=2),
    dict(in_channels=2, out_channels=4, kernel_size=2, padding=1, stride=2, dilation=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=2),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, stride=2, padding_mode="circular"),
]


@pytest.mark.parametrize("cfg", CONVS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items() if k != "in_channels"))
@pytest.mark.parametrize("size", [(7, 7), (6, 5)])
def test_conv_power_iteration_matches_dense_matrix(cfg, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(**cfg)
    dense = G.conv_dense_matrix(conv, size)
    # the dense matrix really is the layer without bias
    x = _rand(1, cfg["in_channels"], *size, seed=3)
    assert torch.allclose(dense @ x.flatten().double(), (conv(x) - conv.bias.view(1, -1, 1, 1)).flatten().double(), atol=1e-5)
    exact = torch.linalg.matrix_norm(dense, ord=2).item()
    got = G.conv_spectral_norm(conv, size, method="power")
    assert got == pytest.approx(exact, rel=1e-4)


def test_power_iteration_runs_at_least_min_iter_steps():
    # a tolerance that is met at once stops after one step, unless min_iter asks for more: then the result is
    # exactly that of min_iter steps without early stopping (the register's GEN-8 asks for >= 200 iterations)
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    size = (4, 7, 7)
    one = G.conv_spectral_norm(conv, size, method="power", tol=1.0)
    fixed = G.conv_spectral_norm(conv, size, method="power", n_iter=200, tol=0.0)
    assert G.conv_spectral_norm(conv, size, method="power", tol=1.0, min_iter=200) == fixed != one
    assert G.conv_spectral_norm(conv, size, method="power", n_iter=1, tol=0.0) == one
    with pytest.raises(ValueError, match="min_iter"):
        G.conv_spectral_norm(conv, size, method="power", n_iter=10, min_iter=11)


def test_conv_fft_matches_dense_for_circular_padding():
    torch.manual_seed(1)
    for k, p in [(3, 1), (5, 2), (1, 0)]:
        conv = nn.Conv2d(3, 2, k, padding=p, padding_mode="circular")
        exact = G.conv_spectral_norm(conv, (6, 8), method="dense")
        assert G.conv_spectral_norm(conv, (6, 8), method="fft") == pytest.approx(exact, rel=1e-9)
        assert G.conv_spectral_norm(conv, (6, 8)) == pytest.approx(exact, rel=1e-9)  # auto picks fft
    with pytest.raises(ValueError, match="circular"):
        G.conv_spectral_norm(nn.Conv2d(1, 1, 3, padding=1), 5, method="fft")


def test_operator_norm_differs_from_reshaped_kernel_norm():
    # a 1x1-channel 3x3 all-ones kernel: reshaped-kernel norm 3, operator norm -> 9 on large inputs
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False)
    nn.init.ones_(conv.weight)
    assert G.conv_spectral_norm(conv, 16) == pytest.approx(9.0)
    assert torch.linalg.matrix_norm(conv.weight.view(1, -1), ord=2).item() == pytest.approx(3.0)


def test_linear_spectral_norm_is_max_gain():
    lin = nn.Linear(5, 4)
    s = G.linear_spectral_norm(lin)
    xs = _rand(2000, 5, seed=4)
    gains = (xs @ lin.weight.detach().T).norm(dim=1) / xs.norm(dim=1)
    assert gains.max().item() <= s + 1e-6
    assert gains.max().item() > 0.9 * s


@pytest.mark.parametrize("cfg", CONVS[:3] + CONVS[5:], ids=str)
def test_conv_group_norm_matches_dense_rows(cfg):
    torch.manual_seed(2)
    conv, ref = nn.Conv2d(**cfg), nn.Conv2d(**cfg)
    for reference in (None, ref):
        delta = conv if reference is None else nn.Conv2d(**cfg)
        if reference is not None:
            delta.weight.data = conv.weight.data - ref.weight.data
        rows = G.conv_dense_matrix(delta, (6, 6)).norm(dim=1).sum().item()
        assert G.group_norm_21(conv, reference, input_size=(6, 6)) == pytest.approx(rows, rel=1e-6)


# ----------------------------------------------------------------------------- R_A and bounds

def _two_layer():
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    net[0].weight.data = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    net[2].weight.data = torch.tensor([[1.0, 1.0]])
    return net


def test_spectral_complexity_by_hand_on_two_layers():
    net = _two_layer()
    # layer 1: ||A||_s = 3, rows (3,0),(0,1) -> (2,1) norm 4; layer 2: ||A||_s = sqrt 2, one row -> sqrt 2
    by_hand = (3 * math.sqrt(2)) * ((4 / 3) ** (2 / 3) + 1.0) ** 1.5
    assert G.model_spectral_complexity(net, (2,)) == pytest.approx(by_hand, rel=1e-12)
    assert G.spectral_complexity([3, math.sqrt(2)], [4, math.sqrt(2)]) == pytest.approx(by_hand)
    # reference = initial weights: only the distance from the reference counts in the sum
    init = _two_layer()
    init[0].weight.data = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # differs by one unit in one entry
    ref_hand = (3 * math.sqrt(2)) * ((1 / 3) ** (2 / 3) + 0.0) ** 1.5
    assert G.model_spectral_complexity(net, (2,), reference=init) == pytest.approx(ref_hand, rel=1e-12)
    assert G.model_spectral_complexity(net, (2,), reference=init.state_dict()) == pytest.approx(ref_hand, rel=1e-12)
    # Lipschitz constants of the activations multiply the product term
    assert G.spectral_complexity([3, math.sqrt(2)], [4, math.sqrt(2)], [2.0, 1.0]) == pytest.approx(2 * by_hand)


def test_layer_norms_track_input_sizes_through_a_cnn():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(2, 2, 3, padding=1, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    rows = G.layer_norms(net, (1, 8, 8))
    assert [r["input_shape"][-2:] for r in rows[:2]] == [(8, 8), (4, 4)]
    assert rows[1]["spectral"] == pytest.approx(G.conv_spectral_norm(net[3], 4, method="dense"), rel=1e-4)


def test_gradient_complexity_squares_the_product_term():
    s, b = [2.0, 3.0], [4.0, 5.0]
    r = G.spectral_complexity(s, b)
    rg = G.gradient_map_complexity(s, b)
    prod = 6.0
    assert rg / prod ** 2 == pytest.approx(2 ** 1.5 * (r / prod))  # the sum term counts every layer twice
    assert rg > r


def test_smoothgrad_bound_falls_like_one_over_sigma():
    kw = dict(n=1000, data_norm=30.0, width=64, delta=0.05)
    tail = G.smoothgrad_bound(1.0, 10.0, **kw) - G.smoothgrad_bound(1.0, 0.0, **kw)
    for s in (0.05, 0.1, 0.5, 2.0):
        head = G.smoothgrad_bound(s, 10.0, **kw) - G.smoothgrad_bound(s, 0.0, **kw)
        assert head * s == pytest.approx(tail, rel=1e-12)
    assert G.smoothgrad_bound(0.1, 10.0, **kw) > G.smoothgrad_bound(0.2, 10.0, **kw)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="sigma"):
            G.smoothgrad_bound(bad, 10.0, **kw)
        with pytest.raises(ValueError, match="sigma"):
            G.stability_bound("smoothgrad", param_divergence=1.0, sigma=bad)
        with pytest.raises(ValueError, match="sigma"):
            G.fidelity_bound(bad, hessian_bound=1.0, dim=4)


def test_smoothgrad_lipschitz_constant_is_attained_by_a_step():
    # f = D * sign(x) vs g = 0 (sup distance D): the smoothed derivative at 0 is 2 D phi_sigma(0)
    D, sigma, tau = 0.7, 0.3, 1e-3
    t = torch.linspace(-8 * sigma, 8 * sigma, 200001, dtype=torch.float64)
    f_prime = D / tau / torch.cosh(t / tau) ** 2  # derivative of D tanh(x / tau) ~ D sign(x)
    phi = torch.exp(-t ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    smoothed = torch.trapezoid(f_prime * phi, t).item()
    assert smoothed == pytest.approx(G.smoothgrad_lipschitz(sigma) * D, rel=1e-3)
    assert smoothed <= G.smoothgrad_lipschitz(sigma) * D * (1 + 1e-9)


def test_margin_bound_shape():
    kw = dict(data_norm=50.0, margin=1.0, width=32)
    assert G.margin_bound(5.0, n=10_000, **kw) < G.margin_bound(5.0, n=1000, **kw)
    assert G.margin_bound(5.0, n=1000, **kw) < G.margin_bound(10.0, n=1000, **kw)
    assert math.isfinite(G.margin_bound(5.0, n=1000, **kw))
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert torch.allclose(G.margins(logits, torch.tensor([0, 0])), torch.tensor([1.0, -3.0]))


def test_trade_off_helpers():
    assert G.balancing_sigma(4.0, 1.0) == pytest.approx(2.0)
    xs = [0.1, 0.2, 0.3, 0.4]
    assert G.crossing_point(xs, [4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(0.25)
    a, b = 2.0, 0.5
    best = min((a / s + b * s, s) for s in [i / 1000 for i in range(1, 5000)])[1]
    assert best == pytest.approx(G.balancing_sigma(a, b), abs=2e-3)
    assert G.stability_bound("smoothgrad", param_divergence=1.0, sigma=0.2) == pytest.approx(
        2 * G.stability_bound("smoothgrad", param_divergence=1.0, sigma=0.4))
    assert G.sgd_parameter_divergence(100, lipschitz=1.0, step_sizes=[0.1] * 10) == pytest.approx(0.02)


# ----------------------------------------------------------------------------- the experiment

def _pool(n, seed=0):
    from xailab.data import shapes

    return shapes(n, size=8, seed=seed, num_classes=2)


def test_split_sets_are_disjoint_balanced_and_checked():
    pool = _pool(200)
    sets = G.split_sets(pool, (8, 16), 2, seed=0)
    assert set(sets) == {(n, i, r) for n in (8, 16) for i in range(2) for r in ("A", "B", "A'")}
    assert sets[(8, 0, "A'")] is sets[(8, 0, "A")]                       # the ceiling retrains A's own images
    seen = [tuple(map(tuple, s.x.flatten(1)[:, :6].tolist())) for k, s in sets.items() if k[2] != "A'"]
    rows = [r for s in seen for r in s]
    assert len(rows) == len(set(rows)) == 2 * 2 * (8 + 16)                # no image in two sets, any size
    assert all(int((s.y == 0).sum()) == len(s) // 2 for s in sets.values())   # class-balanced
    with pytest.raises(ValueError, match="need 192"):
        G.split_sets(_pool(100), (16, 32), 2, seed=0)


def test_pairs_end_to_end_with_ceilings_and_floors():
    from xailab.data import shapes
    from xailab.models import ModelFactory

    pool, test = _pool(200), shapes(40, size=8, seed=5, num_classes=2)
    sets = G.split_sets(pool, (8, 16), 2, seed=0)
    fn = ModelFactory("cnn", in_channels=3, num_classes=2, width=2, depth=1, input_size=8)
    nets = G.train_pairs(fn, sets, arm="plain", seed=0, fit_options=dict(steps=3, batch_size=8), device="cpu", groups=2)
    a, a2 = nets[(8, 0, "A")], nets[(8, 0, "A'")]
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), a2.parameters()))   # another order
    start = G.train_pairs(fn, sets, arm="plain", seed=0, fit_options=dict(steps=1, batch_size=8, lr=1e-12),
                          device="cpu")
    assert all(torch.allclose(p, q) for p, q in zip(start[(8, 0, "A")].parameters(), start[(8, 0, "A'")].parameters()))
    methods = {"grad": "gradient", "SG": ("smoothgrad", {"sigma": 0.2, "n_samples": 2})}
    records = G.compare_pairs(nets, sets, methods, test[:6], test, arm="plain", seed=0)
    assert [(r.n, r.pair) for r in records] == [(8, 0), (8, 1), (16, 0), (16, 1)]
    for r in records:
        assert set(r.consistency) == set(r.ceiling) == set(methods) and set(r.floor) == {"SG"}
        assert 0 <= r.consistency["grad"]["spearman"] <= 1 and 0 <= r.consistency["SG"]["l2"] <= math.sqrt(2) + 1e-9
        assert 0 <= r.agreement <= 1 and set(r.accuracy) == set(r.train_accuracy) == {"A", "B", "A'"}
        assert r.per_image["grad"]["spearman"].shape == (6,)
        assert r.mean(["grad", "SG"], "l2") == pytest.approx((r.consistency["grad"]["l2"] + r.consistency["SG"]["l2"]) / 2)
    again = G.compare_pairs(nets, sets, methods, test[:6], test, arm="plain", seed=0)
    assert again[0].consistency == records[0].consistency                   # seeded


def test_sigma_sweep_floor_and_limits():
    from xailab.models import SmallCNN

    a = SmallCNN(3, 2, width=4, depth=2, input_size=8, seed=1).eval()
    b = SmallCNN(3, 2, width=4, depth=2, input_size=8, seed=2).eval()
    x = _rand(6, 3, 8, 8, seed=9).abs()
    few = G.sigma_sweep(a, b, x, 0, [1e-6, 0.3], n_samples=4)
    many = G.sigma_sweep(a, b, x, 0, [1e-6, 0.3], n_samples=64)
    assert many["fidelity"][0] < 1e-4 * max(many["gradient"], 1e-12) + 1e-8   # tiny sigma: SmoothGrad = gradient
    assert many["floor"][1] < few["floor"][1]                                  # more samples, less Monte-Carlo noise
    assert abs(many["stability"][0] - many["gradient"]) < 1e-4 * many["gradient"]
    assert all(v >= 0 for v in many["stability"] + many["fidelity"] + many["floor"] + many["norm"])
    assert all(0 <= v <= 1 for v in many["spearman"] + many["floor_spearman"])
    # one count per sigma: each sigma's maps are exactly those of a sweep at that count alone
    mixed = G.sigma_sweep(a, b, x, 0, [1e-6, 0.3], n_samples=[4, 64])
    assert mixed["n_samples"] == [4, 64]
    assert mixed["floor"] == [few["floor"][0], many["floor"][1]] and mixed["l2"] == [few["l2"][0], many["l2"][1]]
    with pytest.raises(ValueError, match="n_samples"):
        G.sigma_sweep(a, b, x, 0, [0.1, 0.3], n_samples=[4])
    # without the floor: the same maps and measures, no floor keys (the floor's noise is drawn apart)
    bare = G.sigma_sweep(a, b, x, 0, [1e-6, 0.3], n_samples=64, floor=False)
    assert not any(k.startswith("floor") for k in bare)
    assert {k: v for k, v in many.items() if not k.startswith("floor")} == bare
    from xailab.models import ModelFactory
    a.origin, b.origin = (ModelFactory("cnn", in_channels=3, num_classes=2, width=4, depth=2, input_size=8), 1), \
        (ModelFactory("cnn", in_channels=3, num_classes=2, width=4, depth=2, input_size=8), 2)   # what ship() needs
    swept = G.sweep_pairs([(a, b), (b, a)], x, 0, [0.3], n_samples=4, floor_pairs=1)
    assert "floor" in swept[0] and "floor" not in swept[1]


def test_unbiasedness_accepts_the_smoothed_gradient_and_rejects_the_unsmoothed_one():
    w = torch.tensor([1.5, -0.5, 1.0], dtype=torch.float64)
    wave = G.AnalyticScore(lambda y: torch.sin(y @ w))
    x0 = torch.tensor([[0.4, -0.2, 0.7]], dtype=torch.float64)
    sigma = 0.3
    smoothed = w * torch.cos(x0[0] @ w) * math.exp(-sigma ** 2 * float(w @ w) / 2)
    assert G.unbiasedness(wave, x0, smoothed, sigma, estimates=400, seed=1) < 4
    assert G.unbiasedness(wave, x0, w * torch.cos(x0[0] @ w), sigma, estimates=400, seed=1) > 4
    with pytest.raises(ValueError, match="x0"):
        G.unbiasedness(wave, x0.repeat(2, 1), smoothed, sigma)


def test_pairs_on_a_process_pool_equal_the_serial_run_even_with_spectral_norm():
    from xailab.data import shapes
    from xailab.models import ModelFactory
    from xailab.utils import process_pool

    pool, test = _pool(120), shapes(24, size=8, seed=5, num_classes=2)
    sets = {k: v for k, v in G.split_sets(pool, (8,), 2, seed=0).items() if k[2] != "A'"}
    fn = ModelFactory("cnn", in_channels=3, num_classes=2, width=2, depth=1, input_size=8, spectral_norm=True,
                      output_scale=True)
    opts = dict(steps=3, batch_size=8)
    methods = {"SG": ("smoothgrad", {"sigma": 0.2, "n_samples": 2})}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)             # as in the workers: the same float reductions, bit for bit
    try:
        serial = G.train_pairs(fn, sets, arm="sn", seed=0, fit_options=opts, ceiling=False, device="cpu", groups=2)
        serial_records = G.compare_pairs(serial, sets, methods, test[:4], test, arm="sn", seed=0)
        serial_swept = G.sweep_pairs([(serial[(8, 0, "A")], serial[(8, 0, "B")])], test.x[:3], 0, [0.1], n_samples=2)
    finally:
        torch.set_num_threads(threads)
    with process_pool(2) as ex:
        pooled = G.train_pairs(fn, sets, arm="sn", seed=0, fit_options=opts, ceiling=False, device="cpu", groups=2,
                               executor=ex)
        records = G.compare_pairs(pooled, sets, methods, test[:4], test, arm="sn", seed=0, executor=ex)
        swept = G.sweep_pairs([(pooled[(8, 0, "A")], pooled[(8, 0, "B")])], test.x[:3], 0, [0.1], n_samples=2,
                              executor=ex)
    for k in serial:
        assert all(torch.equal(p, q) for p, q in zip(serial[k].state_dict().values(), pooled[k].state_dict().values()))
    assert [r.consistency for r in records] == [r.consistency for r in serial_records]
    assert [r.accuracy for r in records] == [r.accuracy for r in serial_records]
    assert swept == serial_swept


def test_least_fitted_names_the_network_with_the_lowest_training_accuracy():
    from xailab.papers.generalization import PairRecord, least_fitted

    a, b = PairRecord("plain", 250, 0), PairRecord("plain", 2500, 6)
    a.train_accuracy = {"A": 1.0, "B": 0.99}
    b.train_accuracy = {"A": 0.996, "B": 1.0, "A'": 0.25}
    assert least_fitted([a, b]) == ((2500, 6, "A'"), 0.25)
    with pytest.raises(ValueError, match="training accuracy"):
        least_fitted([PairRecord("plain", 250, 0)])
