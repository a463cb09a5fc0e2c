"""xailab.metrics against reference implementations and closed forms."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

from xailab.hooks import parameter_layers
from xailab.metrics import (CATALOGUE, GROUPS, catalogue, deletion, evaluate, flip_test, insertion, metric,
                            perturbation_curves, pixel_perturbation, pointing_game, randomisation_check,
                            rank_correlation, saliency_auc, ssim)
from xailab.models import MLP, SmallCNN


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_saliency_auc_matches_sklearn_with_ties():
    s = torch.randint(0, 4, (5, 1, 6, 6), generator=gen()).float()  # many ties
    m = (torch.rand(5, 1, 6, 6, generator=gen(1)) < 0.3).float()
    ours = saliency_auc(s, mask=m)
    ref = [roc_auc_score(m[i].flatten().numpy(), s[i].flatten().numpy()) for i in range(5)]
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    assert torch.allclose(saliency_auc(m[:, 0], mask=m), torch.ones(5))  # (N, H, W) maps accepted
    assert saliency_auc(s, mask=torch.zeros_like(m)).isnan().all()
    with pytest.raises(ValueError, match="reduce them first"):
        saliency_auc(torch.rand(5, 3, 6, 6), mask=m)


def test_pointing_game_hits_tolerance_and_ties():
    mask = torch.zeros(3, 1, 9, 9)
    mask[:, :, 2:4, 2:4] = 1
    s = torch.zeros(3, 1, 9, 9)
    s[0, 0, 3, 3] = 1.0   # inside
    s[1, 0, 6, 3] = 1.0   # 3 px below the mask
    s[2] = 1.0            # constant map: every pixel ties at the maximum
    assert pointing_game(s, mask=mask).tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(s, mask=mask, tolerance=3).tolist() == [1.0, 1.0, 0.0]
    assert pointing_game(s, mask=mask, tolerance=2).tolist() == [1.0, 0.0, 0.0]
    assert (pointing_game(torch.ones(3, 1, 9, 9), mask=torch.ones(3, 1, 9, 9)) == 1).all()


def test_rank_correlation_matches_scipy_with_ties():
    a = torch.randint(0, 5, (4, 50), generator=gen()).float()
    b = a + torch.randint(0, 3, (4, 50), generator=gen(1)).float()
    ours = rank_correlation(a, other=b)
    ref = [spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)]
    assert np.allclose(ours.numpy(), ref, atol=1e-6)
    assert torch.allclose(rank_correlation(a, other=a.exp()), torch.ones(4))
    assert torch.allclose(rank_correlation(a, other=-a), -torch.ones(4))


def test_ssim_is_one_for_identical_maps_and_lower_otherwise():
    a = torch.rand(2, 1, 16, 16, generator=gen())
    assert torch.allclose(ssim(a, other=3 * a + 1), torch.ones(2), atol=1e-6)  # min-max normalised first
    assert (ssim(a, other=torch.rand(2, 1, 16, 16, generator=gen(1))) < 0.5).all()


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
    curves, auc = perturbation_curves(contrib[:, None].view(2, 1, 4, 4), model=model, x=x, target=0, steps=16,
                                      mode="deletion", score="logit", relative=False, batch_size=5)
    remaining = contrib.sum(1, keepdim=True) - torch.cat(
        [torch.zeros(2, 1), contrib.sort(1, descending=True).values.cumsum(1)], 1)
    assert torch.allclose(curves, remaining, atol=1e-5)
    assert torch.allclose(auc, torch.trapezoid(remaining, torch.linspace(0, 1, 17), dim=1), atol=1e-5)
    # the best ordering deletes evidence fastest: lower AUC than the reverse ordering
    worse = deletion(-contrib.view(2, 1, 4, 4), model=model, x=x, target=0, steps=16, score="logit", relative=False)
    assert (auc < worse).all()
    assert torch.equal(deletion(contrib.view(2, 1, 4, 4), model=model, x=x, target=0, steps=16, score="logit",
                                relative=False), auc)


def test_insertion_ends_at_full_image_and_normalisation():
    model = SmallCNN(width=4, depth=2, input_size=16).eval()
    x = torch.rand(3, 3, 16, 16, generator=gen())
    s = torch.rand(3, 1, 16, 16, generator=gen(1))
    kw = dict(model=model, x=x, target=[0, 1, 2], steps=8, mode="insertion")
    curves, auc = perturbation_curves(s, **kw)
    assert curves.shape == (3, 9) and auc.shape == (3,)
    assert torch.allclose(curves[:, -1], torch.ones(3), atol=1e-5)      # full image / its own score
    raw, raw_auc = perturbation_curves(s, **kw, relative=False)
    full = model(x).softmax(1)[torch.arange(3), [0, 1, 2]]
    assert torch.allclose(raw / full[:, None], curves, atol=1e-5)
    assert torch.allclose(raw_auc / full, auc, atol=1e-5)
    small, _ = perturbation_curves(s, **kw, batch_size=4)
    assert torch.allclose(small, curves)
    assert torch.equal(insertion(s, model=model, x=x, target=[0, 1, 2], steps=8), auc)
    with pytest.raises(ValueError, match="mode must be"):
        perturbation_curves(s, model=model, x=x, target=0, mode="both")


def test_insertion_deletion_tabular():
    model = MLP(in_features=6, num_classes=3).eval()
    x = torch.rand(4, 6, generator=gen())
    curves, auc = perturbation_curves(torch.rand(4, 6, generator=gen(1)), model=model, x=x, target=1, steps=6)
    assert curves.shape == (4, 7) and torch.allclose(curves[:, 0], torch.ones(4), atol=1e-5)


def test_randomisation_check_separates_gradient_from_sobel():
    model = SmallCNN(width=4, depth=2, input_size=16).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 16, 16, generator=gen())
    on = dict(model=model, x=x, target=1, progress=False)
    grad = randomisation_check("gradient", seed=0, **on)
    assert [r["layer"] for r in grad] == parameter_layers(model) == parameter_layers(model, x)
    assert parameter_layers(model)[0] == "classifier.fc2" and parameter_layers(model)[-1] == "features.conv1"
    assert grad[-1]["spearman_abs"] < 0.5 and grad[-1]["ssim"] < 0.9
    edges = randomisation_check("sobel", **on)
    assert all(r["spearman_abs"] == pytest.approx(1.0) and r["ssim"] == pytest.approx(1.0) for r in edges)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    again = randomisation_check("gradient", seed=0, **on)
    assert [r["spearman"] for r in again] == [r["spearman"] for r in grad]
    with pytest.raises(ValueError, match="unknown layer.*classifier.fc2"):
        randomisation_check("gradient", layers=["fc9"], **on)


def _left_half_model():
    """A linear 'network' that only reads the left half of a 1x4x4 image; class 1 = minus class 0."""
    lin = nn.Linear(16, 2)
    with torch.no_grad():
        w = torch.zeros(4, 4)
        w[:, :2] = torch.arange(1.0, 9.0).view(4, 2)
        lin.weight.copy_(torch.stack([w.flatten(), -w.flatten()]))
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    return nn.Sequential(nn.Flatten(), lin).double().eval()


def test_pixel_perturbation_least_and_most_salient():
    model = _left_half_model()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    truth = torch.zeros(5, 1, 4, 4, dtype=torch.float64)
    truth[..., :2] = 1.0 + torch.rand(5, 1, 4, 2, dtype=torch.float64)      # the left half matters
    on = dict(model=model, x=x, target=0)
    for fill in ("image_mean", "dataset_mean", "blur", "zero"):
        least = pixel_perturbation(truth, **on, fractions=[0.0, 0.25, 0.5], fill=fill)
        assert least.shape == (5,)
        assert torch.all(least == 0), "removing only ignored pixels must not change the output"
        most = pixel_perturbation(truth, **on, fractions=[0.25, 0.5], most_salient=True, fill=fill)
        assert torch.all(most > 0)
        halves = [pixel_perturbation(truth, **on, fractions=[f], most_salient=True, fill=fill) for f in (0.25, 0.5)]
        torch.testing.assert_close(most, (halves[0] + halves[1]) / 2)           # the mean over the fractions
    wrong = pixel_perturbation(truth.flip(-1), **on, fractions=[0.25], fill="zero")   # left half last
    assert torch.all(wrong > 0)
    with pytest.raises(ValueError, match="fill"):
        pixel_perturbation(truth, **on, fractions=[0.1], fill="noise")
    with pytest.raises(ValueError, match="maps"):
        pixel_perturbation(truth[:, :, :2], **on, fractions=[0.1])


def test_flip_test_measures_the_drop_of_the_logit_difference():
    model = _left_half_model()
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = model[1].weight.detach()
    s0, s1 = (w[0].view(1, 1, 4, 4) * x), (w[1].view(1, 1, 4, 4) * x)          # exact input x gradient maps
    on = dict(model=model, x=x, target=0, contrast=1)
    drop = flip_test(s0, contrast_maps=s1, fractions=[0.125, 0.25], **on)
    # erasing a pixel p (fill 0) lowers f_0 - f_1 by 2 w_p x_p: the top-k of s0 - s1 exactly
    contrib = (2 * s0).flatten(1).sort(1, descending=True).values
    torch.testing.assert_close(drop, (contrib[:, :2].sum(1) + contrib[:, :4].sum(1)) / 2)
    assert torch.all(flip_test(s1, contrast_maps=s0, fractions=[0.25], **on) <= 0)    # the wrong map flips nothing


def test_catalogue_lists_every_metric_once_with_its_group():
    import xailab.metrics as M

    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    assert all(m.group in GROUPS and m.better in M.BETTER and getattr(M, m.fn.__name__) is m.fn for m in CATALOGUE)
    assert metric("deletion").better == "lower" and metric("insertion").better == "higher"
    table = catalogue()
    assert all(f"`{n}`" in table for n in names)
    assert "`saliency_auc`" in catalogue("localisation") and "`ssim`" not in catalogue("localisation")
    with pytest.raises(ValueError, match="group"):
        catalogue("speed")


def test_metrics_refuse_non_finite_maps():
    x = torch.rand(2, 1, 4, 4)
    bad = torch.rand(2, 1, 4, 4)
    bad[0, 0, 1, 1] = float("nan")
    mask = (torch.rand(2, 1, 4, 4) > 0.5).float()
    for call in (lambda: saliency_auc(bad, mask=mask), lambda: pointing_game(bad, mask=mask),
                 lambda: rank_correlation(bad, other=x), lambda: ssim(x, other=bad)):
        with pytest.raises(ValueError, match="NaN"):
            call()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    with pytest.raises(ValueError, match="NaN"):
        insertion(bad, model=model, x=x, target=0)
    with pytest.raises(ValueError, match="NaN"):
        pixel_perturbation(bad, model=model, x=x, target=0, fractions=[0.5])


def test_evaluate_runs_methods_by_metrics_with_what_each_needs():
    model = SmallCNN(width=4, depth=2, input_size=16).eval()
    x = torch.rand(3, 3, 16, 16, generator=gen())
    mask = (torch.rand(3, 1, 16, 16, generator=gen(1)) > 0.7).float()
    maps = {"a": torch.rand(3, 1, 16, 16, generator=gen(2)), "b": torch.rand(3, 1, 16, 16, generator=gen(3))}
    out = evaluate(maps, {"auc": "saliency_auc", "ins": ("insertion", {"steps": 4, "fill": "zero"}), "spearman": "spearman"},
                   mask=mask, model=model, x=x, target=1, other=maps["a"])
    assert set(out) == {"auc", "ins", "spearman"} and set(out["auc"]) == {"a", "b"}
    torch.testing.assert_close(out["auc"]["b"], saliency_auc(maps["b"], mask=mask))
    torch.testing.assert_close(out["ins"]["a"], insertion(maps["a"], model=model, x=x, target=1, steps=4, fill="zero"))
    assert torch.allclose(out["spearman"]["a"], torch.ones(3, dtype=torch.float64))   # a against itself
    paired = evaluate(maps, ["l2"], other={"a": maps["b"], "b": maps["a"]})           # each against its own other
    torch.testing.assert_close(paired["l2"]["a"], paired["l2"]["b"])
    with pytest.raises(ValueError, match="needs mask"):
        evaluate(maps, ["saliency_auc"], x=x)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(maps, ["speed"])
    with pytest.raises(ValueError, match="scores a method"):
        evaluate(maps, ["randomisation_check"], model=model, x=x, target=0)
