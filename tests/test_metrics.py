"""xailab.metrics against reference implementations and closed forms."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

from xailab.metrics import (insertion_deletion, parameter_layers, pointing_game, randomization_check,
                            rank_correlation, saliency_auc, ssim)
from xailab.models import MLP, SmallCNN


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_saliency_auc_matches_sklearn_with_ties():
    s = torch.randint(0, 4, (5, 1, 6, 6), generator=gen()).float()  # many ties
    m = (torch.rand(5, 1, 6, 6, generator=gen(1)) < 0.3).float()
    ours = saliency_auc(s, m)
    ref = [roc_auc_score(m[i].flatten().numpy(), s[i].flatten().numpy()) for i in range(5)]
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    assert torch.allclose(saliency_auc(m[:, 0], m), torch.ones(5))  # (N, H, W) maps accepted
    assert saliency_auc(s, torch.zeros_like(m)).isnan().all()
    with pytest.raises(ValueError, match="reduce them first"):
        saliency_auc(torch.rand(5, 3, 6, 6), m)


def test_pointing_game_hits_tolerance_and_ties():
    mask = torch.zeros(3, 1, 9, 9)
    mask[:, :, 2:4, 2:4] = 1
    s = torch.zeros(3, 1, 9, 9)
    s[0, 0, 3, 3] = 1.0   # inside
    s[1, 0, 6, 3] = 1.0   # 3 px below the mask
    s[2] = 1.0            # constant map: every pixel ties at the maximum
    assert pointing_game(s, mask).tolist() == [True, False, False]
    assert pointing_game(s, mask, tolerance=3).tolist() == [True, True, False]
    assert pointing_game(s, mask, tolerance=2).tolist() == [True, False, False]
    assert pointing_game(torch.ones(3, 1, 9, 9), torch.ones(3, 1, 9, 9)).all()


def test_rank_correlation_matches_scipy_with_ties():
    a = torch.randint(0, 5, (4, 50), generator=gen()).float()
    b = a + torch.randint(0, 3, (4, 50), generator=gen(1)).float()
    ours = rank_correlation(a, b)
    ref = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)]
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    assert torch.allclose(rank_correlation(a, a.exp()), torch.ones(4))
    assert torch.allclose(rank_correlation(a, -a), -torch.ones(4))


def test_ssim_is_one_for_identical_maps_and_lower_otherwise():
    a = torch.rand(2, 1, 16, 16, generator=gen())
    assert torch.allclose(ssim(a, 3 * a + 1), torch.ones(2), atol=1e-6)  # min-max normalised first
    assert (ssim(a, torch.rand(2, 1, 16, 16, generator=gen(1))) < 0.5).all()


class Linear(nn.Module):
    """One-logit linear model on images: score = Σ w ⊙ x (+ a second constant logit)."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_deletion_curve_of_linear_model_is_exact():
    g = gen()
    x = torch.rand(2, 2, 4, 4, generator=g)
    w = torch.rand(1, 2, 4, 4, generator=g)
    model = Linear(w).eval()
    contrib = (x * w).sum(1).flatten(1)                       # per-pixel contributions (N, 16)
    curves, auc = insertion_deletion(model, x, contrib[:, None].view(2, 1, 4, 4), 0, steps=16, mode="deletion",
                                     score="logit", normalize=False, batch_size=5)
    remaining = contrib.sum(1, keepdim=True) - torch.cat(
        [torch.zeros(2, 1), contrib.sort(1, descending=True).values.cumsum(1)], 1)
    assert torch.allclose(curves, remaining, atol=1e-5)
    assert torch.allclose(auc, torch.trapezoid(remaining, torch.linspace(0, 1, 17), dim=1), atol=1e-5)
    # the best ordering deletes evidence fastest: lower AUC than the reverse ordering
    _, worse = insertion_deletion(model, x, -contrib.view(2, 1, 4, 4), 0, steps=16, score="logit", normalize=False)
    assert (auc < worse).all()


def test_insertion_ends_at_full_image_and_normalisation():
    model = SmallCNN(width=4, depth=2, input_size=16).eval()
    x = torch.rand(3, 3, 16, 16, generator=gen())
    s = torch.rand(3, 1, 16, 16, generator=gen(1))
    curves, auc = insertion_deletion(model, x, s, [0, 1, 2], steps=8, mode="insertion")
    assert curves.shape == (3, 9) and auc.shape == (3,)
    assert torch.allclose(curves[:, -1], torch.ones(3), atol=1e-5)      # full image / its own score
    raw, raw_auc = insertion_deletion(model, x, s, [0, 1, 2], steps=8, mode="insertion", normalize=False)
    full = model(x).softmax(1)[torch.arange(3), [0, 1, 2]]
    assert torch.allclose(raw / full[:, None], curves, atol=1e-5)
    assert torch.allclose(raw_auc / full, auc, atol=1e-5)
    small, _ = insertion_deletion(model, x, s, [0, 1, 2], steps=8, mode="insertion", batch_size=4)
    assert torch.allclose(small, curves)
    with pytest.raises(ValueError, match="mode must be"):
        insertion_deletion(model, x, s, 0, mode="both")


def test_insertion_deletion_tabular():
    model = MLP(in_features=6, num_classes=3).eval()
    x = torch.rand(4, 6, generator=gen())
    curves, auc = insertion_deletion(model, x, torch.rand(4, 6, generator=gen(1)), 1, steps=6)
    assert curves.shape == (4, 7) and torch.allclose(curves[:, 0], torch.ones(4), atol=1e-5)


def test_randomization_check_separates_gradient_from_sobel():
    model = SmallCNN(width=4, depth=2, input_size=16).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 16, 16, generator=gen())
    grad = randomization_check(model, x, 1, "gradient", seed=0, progress=False)
    assert [r["layer"] for r in grad] == parameter_layers(model)
    assert parameter_layers(model)[0] == "classifier.fc2" and parameter_layers(model)[-1] == "features.conv1"
    assert grad[-1]["spearman_abs"] < 0.5 and grad[-1]["ssim"] < 0.9
    edges = randomization_check(model, x, 1, "sobel", progress=False)
    assert all(r["spearman_abs"] == pytest.approx(1.0) and r["ssim"] == pytest.approx(1.0) for r in edges)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = randomization_check(model, x, 1, "gradient", seed=0, progress=False)
    assert [r["spearman"] for r in again] == [r["spearman"] for r in grad]
    with pytest.raises(ValueError, match="unknown layer.*classifier.fc2"):
        randomization_check(model, x, 1, "gradient", layers=["fc9"], progress=False)
