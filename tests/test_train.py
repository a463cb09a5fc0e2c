"""xailab.train: fit / evaluate / predict, and fit_many against fit one by one."""
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


def separable(n=256, d=16, seed=0):
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
    model = fit(MLP(seed=1), data, epochs=15, lr=3e-3, progress=False)
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
