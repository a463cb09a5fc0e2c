"""xailab.removal: exact counts, ties, partitions, fills and bad input of remove / keep."""
from __future__ import annotations

import math

import pytest
import torch

from xailab.removal import fill_removed, fill_value, keep, n_removed, remove, removal_mask


def _random_case(g: torch.Generator):
    """A random batch: images (N, C, H, W) or tabular (N, D), with a relevance full of ties."""
    n = int(torch.randint(1, 4, (1,), generator=g))
    if torch.rand((), generator=g) < 0.3:
        shape = (n, int(torch.randint(1, 30, (1,), generator=g)))
    else:
        c, h, w = (int(v) for v in torch.randint(1, 7, (3,), generator=g))
        shape = (n, c, h, w)
    x = torch.rand(shape, generator=g)
    # integer-valued relevance in a small range: many exact ties to exercise the tie-breaking
    relevance = torch.randint(-3, 4, shape, generator=g).float()
    return x, relevance


def _n_features(x, rank_by):
    return x[0].numel() if rank_by == "element" or x.ndim == 2 else x.shape[2] * x.shape[3]


def _changed_features(x, out, rank_by):
    """Which features differ from x (a pixel counts once however many channels changed)."""
    diff = out != x
    if rank_by == "pixel" and x.ndim == 4:
        diff = diff.any(dim=1)
    return diff.reshape(x.shape[0], -1)


FILL = -1.0  # outside [0, 1): every replaced element is visibly changed


@pytest.mark.parametrize("rank_by", ["pixel", "element"])
@pytest.mark.parametrize("reduce", ["abs-sum", "sum", "max-abs"])
def test_exact_removal_count_for_every_fraction(rank_by, reduce):
    g = torch.Generator().manual_seed(0)
    for _ in range(25):
        x, r = _random_case(g)
        f_total = _n_features(x, rank_by)
        fractions = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, float(torch.rand((), generator=g))]
        fractions += [k / f_total for k in range(f_total + 1)]  # every attainable count
        for frac in fractions:
            want = math.floor(round(frac * f_total, 9))
            for fn, removed in ((remove, want), (keep, f_total - want)):
                out = fn(x, r, frac, fill=FILL, rank_by=rank_by, reduce=reduce)
                assert out.shape == x.shape
                changed = _changed_features(x, out, rank_by).sum(dim=1)
                assert (changed == removed).all(), (fn.__name__, x.shape, frac, changed, removed)


def test_floor_is_robust_to_binary_rounding():
    assert n_removed(0.3, 10) == 3 and n_removed(0.7, 10) == 7 and n_removed(0.9, 10) == 9
    assert n_removed(0.999, 10) == 9 and n_removed(1.0, 7) == 7 and n_removed(0.0, 7) == 0


@pytest.mark.parametrize("rank_by", ["pixel", "element"])
def test_remove_zero_is_identity_and_keep_one_is_identity(rank_by):
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        x, r = _random_case(g)
        assert torch.equal(remove(x, r, 0.0, rank_by=rank_by), x)
        assert torch.equal(keep(x, r, 1.0, rank_by=rank_by), x)


@pytest.mark.parametrize("rank_by", ["pixel", "element"])
def test_keep_and_remove_partition_the_features(rank_by):
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        x, r = _random_case(g)
        frac = float(torch.rand((), generator=g))
        gone_remove = _changed_features(x, remove(x, r, frac, fill=FILL, rank_by=rank_by), rank_by)
        gone_keep = _changed_features(x, keep(x, r, frac, fill=FILL, rank_by=rank_by), rank_by)
        assert not (gone_remove & gone_keep).any()
        assert (gone_remove | gone_keep).all()


def test_removes_the_most_relevant_and_breaks_ties_by_index():
    x = torch.zeros(1, 1, 2, 3)
    r = torch.tensor([[[[1.0, 5.0, 1.0], [5.0, 0.0, 1.0]]]])
    mask = removal_mask(r, 0.5)  # 3 of 6 pixels: both 5s, then the first 1 (flat index 0)
    assert mask.flatten().tolist() == [True, True, False, True, False, False]
    bottom = removal_mask(r, 0.5, top=False)  # the last 3 of the same ranking
    assert bottom.flatten().tolist() == [False, False, True, False, True, True]
    # the result does not depend on the batch it sits in
    r2 = torch.cat([r, torch.rand(1, 1, 2, 3)])
    assert torch.equal(removal_mask(r2, 0.5)[:1], mask)


def test_pixel_ranking_moves_whole_pixels_and_uses_the_reduction():
    x = torch.rand(2, 3, 4, 4)
    r = torch.randn(2, 3, 4, 4)
    out = remove(x, r, 0.25, fill=FILL, rank_by="pixel")
    changed = out != x
    # a pixel is either untouched or replaced in every channel
    assert (changed.all(dim=1) | ~changed.any(dim=1)).all()
    top = r.abs().sum(dim=1).flatten(1).topk(4).indices
    assert changed.any(dim=1).flatten(1).gather(1, top).all()
    signed = remove(x, r, 0.25, fill=FILL, rank_by="pixel", reduce="sum")
    top_signed = r.sum(dim=1).flatten(1).topk(4).indices
    assert (signed != x).any(dim=1).flatten(1).gather(1, top_signed).all()


def test_element_ranking_sum_ranks_by_signed_value_so_squaring_matters():
    x = torch.rand(1, 4)
    r = torch.tensor([[-9.0, 1.0, 2.0, 0.0]])
    signed = remove(x, r, 0.25, fill=FILL, rank_by="element", reduce="sum")
    squared = remove(x, r ** 2, 0.25, fill=FILL, rank_by="element", reduce="sum")
    assert (signed != x).flatten().tolist() == [False, False, True, False]
    assert (squared != x).flatten().tolist() == [True, False, False, False]


def test_fill_defaults_to_the_dataset_mean_and_accepts_a_reference_or_a_value():
    x = torch.rand(5, 3, 4, 4)
    r = torch.rand(5, 3, 4, 4)
    out = remove(x, r, 1.0)
    mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(out, mean.view(1, 3, 1, 1).expand_as(x))
    train_mean = torch.tensor([0.1, 0.2, 0.3])
    out = remove(x, r, 1.0, fill=train_mean)
    assert torch.allclose(out, train_mean.view(1, 3, 1, 1).expand_as(x))
    reference = torch.rand(7, 3, 4, 4)
    out = remove(x, r, 1.0, reference=reference)
    assert torch.allclose(out, reference.mean(dim=(0, 2, 3)).view(1, 3, 1, 1).expand_as(x))
    own = remove(x, r, 1.0, fill="image_mean")
    assert torch.allclose(own, x.mean(dim=(2, 3), keepdim=True).expand_as(x))
    assert torch.equal(remove(x, r, 1.0, fill="zero"), torch.zeros_like(x))
    tab = torch.rand(6, 5)
    assert torch.allclose(remove(tab, torch.rand(6, 5), 1.0), tab.mean(0).expand_as(tab))
    # the input is never modified in place
    before = x.clone()
    remove(x, r, 0.5)
    assert torch.equal(x, before)


def test_one_channel_relevance_is_accepted_for_images():
    x = torch.rand(2, 3, 5, 5)
    r1 = torch.rand(2, 1, 5, 5)
    assert torch.equal(remove(x, r1, 0.4), remove(x, r1.expand_as(x).contiguous(), 0.4))


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval_is_rejected(fraction):
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="fraction"):
        remove(x, torch.rand_like(x), fraction)
    with pytest.raises(ValueError, match="fraction"):
        keep(x, torch.rand_like(x), fraction)


def test_bad_shapes_and_options_are_rejected():
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="maps must have the shape"):
        remove(x, torch.rand(2, 3, 4, 5), 0.5)
    with pytest.raises(ValueError, match="maps must have the shape"):
        remove(x, torch.rand(3, 3, 4, 4), 0.5)
    with pytest.raises(ValueError, match="rank_by"):
        remove(x, torch.rand_like(x), 0.5, rank_by="channel")
    with pytest.raises(ValueError, match="reduce"):
        remove(x, torch.rand_like(x), 0.5, reduce="mean")
    with pytest.raises(ValueError, match="fill"):
        remove(x, torch.rand_like(x), 0.5, fill="median")
    with pytest.raises(ValueError, match="NaN"):
        remove(x, torch.full_like(x, float("nan")), 0.5)
    with pytest.raises(ValueError, match="fill"):
        remove(x, torch.rand_like(x), 0.5, fill=torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        remove(torch.full_like(x, float("nan")), torch.rand_like(x), 0.5)


def test_fills_leave_unremoved_pixels_bit_identical_and_blur_is_smooth():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 9, 9, generator=g)
    removed = torch.rand(2, 1, 9, 9, generator=g) > 0.6
    for fill in ("dataset_mean", "image_mean", "zero", "blur", 0.25):
        out = fill_removed(x, removed, fill)
        assert torch.equal(out[~removed.expand_as(x)], x[~removed.expand_as(x)])
    blurred = fill_value(x, "blur", blur_sigma=2.0)
    assert blurred.shape == x.shape
    assert (blurred[..., 1:] - blurred[..., :-1]).abs().mean() < (x[..., 1:] - x[..., :-1]).abs().mean()
    torch.testing.assert_close(fill_value(torch.ones(1, 2, 5, 5), "blur"), torch.ones(1, 2, 5, 5))


# --------------------------------------------------------------------------- the sweep


# ---- noisy linear imputation (ROAD) -------------------------------------------------------------

def _ramp(h=7, w=7):
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([0.1 * i + 0.05 * j + 0.2, -0.3 * i + 0.02 * j, 0.4 * torch.ones_like(i)]).unsqueeze(0)


def test_noisy_linear_fills_a_hole_in_a_linear_ramp_exactly():
    # a linear function equals the weighted mean of its symmetric neighbours: the ramp is the solution
    ramp = _ramp()
    hole = torch.zeros(1, 1, 7, 7, dtype=torch.bool)
    hole[..., 2:5, 2:5] = True
    torch.testing.assert_close(fill_removed(ramp, hole, "noisy_linear", noise=0.0), ramp, rtol=0, atol=1e-12)


def test_noisy_linear_keeps_unremoved_pixels_bit_identical_and_is_seeded():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 12, 10, generator=g)
    removed = torch.rand(3, 1, 12, 10, generator=g) < 0.6
    a = fill_removed(x, removed, "noisy_linear", seed=1)
    keep_mask = ~removed.expand_as(x)
    assert torch.equal(a[keep_mask], x[keep_mask])
    assert torch.equal(a, fill_removed(x, removed, "noisy_linear", seed=1))
    b = fill_removed(x, removed, "noisy_linear", seed=2)
    clean = fill_removed(x, removed, "noisy_linear", noise=0.0)
    diff = (b - clean)[~keep_mask]
    assert not torch.equal(a, b) and abs(float(diff.std()) - 0.01) < 0.002   # noise std as asked


def test_noisy_linear_agrees_with_pytorch_grad_cam_on_random_images_and_masks():
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    reference = road.NoisyLinearImputer(noise=0.0)
    g = torch.Generator().manual_seed(11)
    for shape, p in [((4, 3, 16, 16), 0.5), ((3, 1, 9, 13), 0.95), ((2, 3, 6, 6), 0.1)]:
        x = torch.rand(*shape, generator=g)
        removed = torch.rand(shape[0], 1, *shape[2:], generator=g) < p
        ours = fill_removed(x, removed, "noisy_linear", noise=0.0)
        theirs = torch.stack([reference(x[i], (~removed[i, 0]).float()) for i in range(shape[0])])
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_noisy_linear_bad_input_and_edge_cases():
    x = torch.rand(2, 3, 5, 5)
    nothing = torch.zeros(2, 1, 5, 5, dtype=torch.bool)
    assert torch.equal(fill_removed(x, nothing, "noisy_linear"), x)
    everything = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    everything[0, 0, 0, 0] = False            # image 0 keeps one pixel, image 1 none
    out = fill_removed(x, everything, "noisy_linear", noise=0.0)
    torch.testing.assert_close(out[0], x[0, :, :1, :1].expand(3, 5, 5))   # the one kept pixel everywhere
    torch.testing.assert_close(out[1], x[0, :, 0, 0].view(3, 1, 1).expand(3, 5, 5))
    with pytest.raises(TypeError, match="boolean"):
        fill_removed(x, nothing.float(), "noisy_linear")
    with pytest.raises(ValueError, match="pixel mask"):
        fill_removed(x, torch.zeros(2, 1, 4, 5, dtype=torch.bool), "noisy_linear")
    with pytest.raises(ValueError, match="noise"):
        fill_removed(x, nothing, "noisy_linear", noise=-1.0)
    with pytest.raises(ValueError, match="fill_removed"):
        fill_value(x, "noisy_linear")
    with pytest.raises(ValueError, match="fill must be one of"):
        remove(x, torch.rand_like(x), 0.5, fill="median")
    # through remove / keep, with the ROAR ranking
    r = torch.rand(2, 1, 5, 5)
    out = remove(x, r, 0.4, fill="noisy_linear", noise=0.0)
    assert ((out != x).any(1).flatten(1).sum(1) <= 10).all()
