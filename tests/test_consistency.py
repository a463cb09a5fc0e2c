"""xailab.metrics' consistency measures against scipy and closed forms."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from xailab.metrics import consistency, prediction_agreement


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_spearman_matches_scipy_with_ties():
    a = torch.randint(0, 5, (3, 40), generator=torch.Generator().manual_seed(1)).double()
    b = torch.randint(0, 5, (3, 40), generator=torch.Generator().manual_seed(2)).double()
    got = consistency(a, other=b, measure="spearman", reduce=None)
    for i in range(3):
        rho = stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic
        assert got[i].item() == pytest.approx((1 + rho) / 2, abs=1e-12)


def test_spearman_extremes_and_invariance():
    a = _rand(4, 3, 8, 8).abs()
    assert torch.allclose(consistency(a, other=3 * a + 0, measure="spearman"), torch.ones(4, dtype=torch.float64))
    flat = a.sum(1, keepdim=True)
    rev = -flat  # reversed ranking, compared without taking absolute values
    assert torch.allclose(consistency(flat, other=rev, measure="spearman", reduce=None), torch.zeros(4, dtype=torch.float64))
    # monotone transforms of the relevance do not change a rank correlation
    assert torch.allclose(consistency(flat, other=flat ** 3, measure="spearman"), torch.ones(4, dtype=torch.float64))


def test_l2_is_scale_free_and_bounded():
    a, b = _rand(5, 1, 6, 6, seed=1), _rand(5, 1, 6, 6, seed=2)
    d = consistency(a, other=b, measure="l2", reduce=None)
    assert torch.allclose(d, consistency(7 * a, other=0.1 * b, measure="l2", reduce=None))
    assert (d >= 0).all() and (d <= 2).all()
    assert torch.allclose(consistency(a, other=-a, measure="l2", reduce=None), torch.full((5,), 2.0, dtype=torch.float64))
    cos = consistency(a, other=b, measure="cosine", reduce=None)
    assert torch.allclose(cos, 1 - d ** 2 / 2)
    assert (consistency(a, other=b, measure="l2") <= math.sqrt(2) + 1e-12).all()  # abs maps are non-negative


def test_topk_iou():
    a = torch.arange(10.0).view(1, 10)
    assert consistency(a, other=a, measure="topk", k=0.3).item() == 1.0
    assert consistency(a, other=a.flip(1), measure="topk", k=0.3).item() == 0.0


def test_consistency_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        consistency(torch.zeros(2, 1, 4, 4), other=torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="measure"):
        consistency(torch.zeros(2, 4), other=torch.zeros(2, 4), measure="kendall")


def test_prediction_agreement():
    a = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])
    b = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])
    assert prediction_agreement(a, b) == 0.75


def test_chance_corrected_agreement():
    a = torch.eye(4)[torch.tensor([0, 1, 2, 3] * 5)]
    assert prediction_agreement(a, a, chance_corrected=True) == pytest.approx(1.0)
    # B always predicts class 0: agreement 1/4 is exactly what chance gives -> kappa 0
    b = torch.eye(4)[torch.zeros(20, dtype=torch.long)]
    assert prediction_agreement(a, b) == pytest.approx(0.25)
    assert prediction_agreement(a, b, chance_corrected=True) == pytest.approx(0.0)


def test_distance_is_the_plain_euclidean_distance():
    a, b = _rand(3, 2, 4, 4, seed=5), _rand(3, 2, 4, 4, seed=6)
    got = consistency(a, other=b, measure="distance", reduce=None)
    assert torch.allclose(got, (a - b).flatten(1).double().norm(dim=1))
    assert torch.allclose(consistency(a, other=a, measure="distance", reduce=None), torch.zeros(3, dtype=torch.float64))
