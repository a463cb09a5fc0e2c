"""xailab.train: fit / evaluate / predict, and fit_many against fit one by one."""
import math
from dataclasses import dataclass

import pytest
import torch

from xailab.models import MLP, SmallCNN
from xailab.train import evaluate, fit, fit_many, predict


@dataclass
class Toy:
    """Stand-in for xailab.data.Data: only .x and .y are used by xailab.train."""
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self):
        return len(self.y)


def separable(n=200, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    return Toy(x, (x[:, 0] - x[:, 1] > 0).long())


def bright_quadrant(n=96, size=8, seed=0):
    """Two-class images: which half (top or bottom) holds a bright blob."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.rand(n, 1, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    half = size // 2
    for i in range(n):
        r = int(torch.randint(0, half - 1, (1,), generator=g)) + half * int(y[i])
        c = int(torch.randint(0, size - 1, (1,), generator=g))
        x[i, 0, r:r + 2, c:c + 2] = 1.0
    return Toy(x, y)


def test_fit_reaches_high_accuracy_and_returns_eval_mode():
    data = separable()
    model = fit(MLP(hidden=(32,), seed=1), data, epochs=10, lr=1e-2, batch_size=32, progress=False)
    assert not any(m.training for m in model.modules())
    assert evaluate(model, data) >= 0.95


def test_fit_is_deterministic_per_seed_and_leaves_global_rng():
    data = separable(128)
    state = torch.random.get_rng_state()
    a = fit(MLP(seed=0), data, epochs=2, seed=5, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())
    b = fit(MLP(seed=0), data, epochs=2, seed=5, progress=False)
    c = fit(MLP(seed=0), data, epochs=2, seed=6, progress=False)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.allclose(pa, pc)  # the shuffling seed matters


def test_predict_batches_and_restores_mode():
    model = SmallCNN(in_channels=1, num_classes=3, input_size=8, batch_norm=True)
    model.train()
    x = torch.rand(37, 1, 8, 8)
    full = predict(model, x, batch_size=100)
    pieces = predict(model, x, batch_size=5)
    assert full.shape == (37, 3)
    assert torch.allclose(full, pieces, atol=1e-6)  # eval-mode BN: no batch dependence
    assert model.training and all(m.training for m in model.modules())
    assert not full.requires_grad
    assert evaluate(model, Toy(x, full.argmax(1))) == 1.0


@pytest.mark.parametrize("kw,match", [(dict(epochs=0), "epochs"), (dict(lr=0), "lr"),
                                      (dict(batch_size=0), "batch_size"), (dict(epochs=1.5), "epochs")])
def test_fit_rejects_bad_hyper_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        fit(MLP(), separable(8), progress=False, **kw)


def test_fit_rejects_mismatched_data():
    with pytest.raises(ValueError, match="same number"):
        fit(MLP(), Toy(torch.rand(5, 16), torch.zeros(4, dtype=torch.long)), progress=False)
    with pytest.raises(TypeError, match=r"\.x and \.y"):
        fit(MLP(), (torch.rand(5, 16), torch.zeros(5)), progress=False)


def _flat(model, skip=()):
    return torch.cat([t.detach().flatten().float() for n, t in model.state_dict().items()
                      if not any(n.endswith(sfx) for sfx in skip)])


def _assert_same_models(ref, out, datasets, skip=()):
    for r, o, d in zip(ref, out, datasets):
        a, b = _flat(r, skip), _flat(o, skip)
        # float summation order differs (grouped vs single convolutions, batched matmuls), and
        # Adam divides by sqrt(v), so near-zero gradients can amplify 1e-9 noise into ~lr steps:
        # compare the whole parameter vector relative to its norm, plus predictions
        assert torch.linalg.vector_norm(a - b) <= 1e-4 * torch.linalg.vector_norm(a)
        assert evaluate(r, d) == evaluate(o, d)
        assert not any(m.training for m in o.modules())


SEEDS = [0, 1, 2]


@pytest.mark.parametrize("batch_norm,slope", [(False, 0.0), (True, 0.0), (False, 0.1)])
def test_fit_many_equals_fit_one_by_one_on_own_datasets(batch_norm, slope):
    datasets = [bright_quadrant(80, seed=10 + k) for k in range(3)]

    def model_fn(seed):
        return SmallCNN(in_channels=1, num_classes=2, width=4, input_size=8, batch_norm=batch_norm,
                        negative_slope=slope, seed=seed)

    kw = dict(epochs=2, lr=3e-3, batch_size=16, progress=False)
    ref = [fit(model_fn(s), d, seed=s, **kw) for s, d in zip(SEEDS, datasets)]
    out = fit_many(model_fn, datasets, seeds=SEEDS, **kw)
    # a conv bias feeding batch-norm has an exactly zero gradient, so what it (and the running
    # mean that tracks it) receives is float noise, which Adam scales up to ~lr per step: skip
    # them; the function is unaffected (batch-norm removes the bias)
    skip = (".running_mean",) + tuple(f"conv{i}.bias" for i in (1, 2, 3)) if batch_norm else ()
    _assert_same_models(ref, out, datasets, skip)
    if batch_norm:  # running statistics were carried over too
        for r, o in zip(ref, out):
            assert torch.allclose(r.features.bn1.running_var, o.features.bn1.running_var, rtol=1e-4)
            assert int(r.features.bn1.num_batches_tracked) == int(o.features.bn1.num_batches_tracked) == 10


def test_fit_many_shared_dataset_mlp_and_weight_decay():
    data = separable(100)
    kw = dict(epochs=2, lr=1e-2, batch_size=32, weight_decay=1e-3, progress=False)
    ref = [fit(MLP(hidden=(16,), seed=s), data, seed=s, **kw) for s in SEEDS]
    out = fit_many(lambda s: MLP(hidden=(16,), seed=s), data, seeds=SEEDS, **kw)
    _assert_same_models(ref, out, [data] * 3)
    assert not torch.allclose(_flat(out[0]), _flat(out[1]))  # different seeds, different models


def test_fit_many_chunks_large_activations(monkeypatch):
    """Models fused in several chunks give the same result as one fused block."""
    import xailab.train as train

    data = bright_quadrant(48)
    fn = lambda s: SmallCNN(in_channels=1, num_classes=2, width=4, input_size=8, seed=s)  # noqa: E731
    kw = dict(epochs=1, batch_size=16, progress=False, strategy="fused")
    one = fit_many(fn, data, seeds=SEEDS, **kw)
    monkeypatch.setattr(train, "_CHUNK_BYTES", 1)  # one model per chunk
    chunked = fit_many(fn, data, seeds=SEEDS, **kw)
    for a, b in zip(one, chunked):
        assert torch.allclose(_flat(a), _flat(b), atol=1e-6)


def test_fit_many_chunks_are_even_and_never_leave_one_model_alone(monkeypatch):
    """Chunks split K models as evenly as the budget allows, each at least the budget's share (a lone model would run a
    one-group convolution, another kernel), and training in such chunks gives the models of one fused block."""
    import xailab.train as train

    fn = lambda s: SmallCNN(in_channels=1, num_classes=2, width=4, input_size=8, seed=s)  # noqa: E731
    size = train._largest_activation(fn(0), 16, (1, 8, 8))
    monkeypatch.setattr(train, "_CHUNK_BYTES", 2 * size)   # a budget of two models
    assert train._FusedChunks([fn(s) for s in range(7)], 16, (1, 8, 8)).sizes == [3, 2, 2]
    assert train._FusedChunks([fn(s) for s in range(4)], 16, (1, 8, 8)).sizes == [2, 2]
    assert train._FusedChunks([fn(0)], 16, (1, 8, 8)).sizes == [1]
    data = bright_quadrant(48)
    kw = dict(epochs=1, batch_size=16, progress=False, strategy="fused")
    seeds = [0, 1, 2, 3]   # two chunks of two
    chunked = fit_many(fn, data, seeds=seeds, **kw)
    monkeypatch.setattr(train, "_CHUNK_BYTES", 2 ** 40)   # one block
    for a, b in zip(fit_many(fn, data, seeds=seeds, **kw), chunked):
        assert torch.allclose(_flat(a), _flat(b), atol=1e-6)


def test_fit_many_trains_other_architectures_one_by_one():
    from xailab.models import SmallResNet

    g = torch.Generator().manual_seed(0)
    data = Toy(torch.rand(24, 3, 32, 32, generator=g), torch.randint(0, 3, (24,), generator=g))
    fn = lambda s: SmallResNet(num_classes=3, width=4, blocks=(1, 1), seed=s)  # noqa: E731
    kw = dict(epochs=1, batch_size=12, progress=False)
    ref = [fit(fn(s), data, seed=s, **kw) for s in SEEDS[:2]]
    out = fit_many(fn, data, seeds=SEEDS[:2], **kw)
    for a, b in zip(ref, out):
        assert torch.equal(_flat(a), _flat(b))


def test_fit_many_strategy_choice_and_errors():
    from xailab.models import SmallResNet
    from xailab.train import strategy_for

    assert strategy_for(SmallCNN()) == "fused"
    assert strategy_for(MLP()) == "fused"
    assert strategy_for(SmallCNN(spectral_norm=True)) != "fused"
    assert strategy_for(SmallResNet()) != "fused"
    data = separable(20)
    with pytest.raises(ValueError, match="seeds"):
        fit_many(MLP, data, seeds=[], progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit_many(MLP, data, seeds=[0], epochs=0, progress=False)
    with pytest.raises(ValueError, match="same number of samples"):
        fit_many(MLP, [separable(20), separable(21)], seeds=[0, 1], progress=False)
    with pytest.raises(ValueError, match="one per seed"):
        fit_many(MLP, [data, data], seeds=[0, 1, 2], progress=False)
    with pytest.raises(ValueError, match="strategy"):
        fit_many(MLP, data, seeds=[0], strategy="magic", progress=False)
    with pytest.raises(ValueError, match="fused"):
        fit_many(lambda s: SmallCNN(spectral_norm=True, seed=s), data, seeds=[0], strategy="fused", progress=False)
    with pytest.raises(ValueError, match="strategy"):
        fit_many(MLP, data, seeds=[0], strategy="vmap", progress=False)


def test_sgd_cosine_and_step_budget_agree_between_fit_and_fit_many():
    datasets = [bright_quadrant(70, seed=20 + k) for k in range(2)]
    fn = lambda s: SmallCNN(in_channels=1, num_classes=2, width=4, input_size=8, seed=s)  # noqa: E731
    kw = dict(lr=0.05, batch_size=16, optimiser="sgd", momentum=0.9, weight_decay=1e-4, lr_schedule="cosine",
              steps=7, progress=False)
    ref = [fit(fn(s), d, seed=s, **kw) for s, d in zip(SEEDS[:2], datasets)]
    out = fit_many(fn, datasets, seeds=SEEDS[:2], **kw)
    _assert_same_models(ref, out, datasets)
    # 7 steps of 16 = 1 epoch (5 batches) and 2 more: the same as stepping by hand
    model, g = fn(0), torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x, y, step = datasets[0].x, datasets[0].y, 0
    for _ in range(2):
        for idx in torch.randperm(70, generator=g).split(16):
            if step == 7:
                break
            for group in opt.param_groups:
                group["lr"] = 0.5 * 0.05 * (1 + math.cos(math.pi * step / 7))
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    assert torch.allclose(_flat(model.eval()), _flat(ref[0]), atol=1e-6)
    with pytest.raises(ValueError, match="optimiser"):
        fit(fn(0), datasets[0], optimiser="lbfgs", progress=False)
    with pytest.raises(ValueError, match="schedule"):
        fit(fn(0), datasets[0], lr_schedule="step", progress=False)
    with pytest.raises(ValueError, match="steps"):
        fit_many(fn, datasets, seeds=[0, 1], steps=0, progress=False)
