"""xailab.roar: remove / keep properties, the sweep's toy ordering, caching, executors, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from xailab.roar import keep, n_removed, remove, removal_mask


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


def test_fill_defaults_to_channel_mean_and_accepts_the_training_mean():
    x = torch.rand(5, 3, 4, 4)
    r = torch.rand(5, 3, 4, 4)
    out = remove(x, r, 1.0)
    mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(out, mean.view(1, 3, 1, 1).expand_as(x))
    train_mean = torch.tensor([0.1, 0.2, 0.3])
    out = remove(x, r, 1.0, fill_value=train_mean)
    assert torch.allclose(out, train_mean.view(1, 3, 1, 1).expand_as(x))
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
    with pytest.raises(ValueError, match="relevance must have the shape"):
        remove(x, torch.rand(2, 3, 4, 5), 0.5)
    with pytest.raises(ValueError, match="relevance must have the shape"):
        remove(x, torch.rand(3, 3, 4, 4), 0.5)
    with pytest.raises(ValueError, match="rank_by"):
        remove(x, torch.rand_like(x), 0.5, rank_by="channel")
    with pytest.raises(ValueError, match="reduce"):
        remove(x, torch.rand_like(x), 0.5, reduce="mean")
    with pytest.raises(ValueError, match="fill"):
        remove(x, torch.rand_like(x), 0.5, fill="median")
    with pytest.raises(ValueError, match="NaN"):
        remove(x, torch.full_like(x, float("nan")), 0.5)
    with pytest.raises(ValueError, match="fill_value"):
        remove(x, torch.rand_like(x), 0.5, fill_value=torch.zeros(2))


# --------------------------------------------------------------------------- the sweep
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
import multiprocessing  # noqa: E402

from xailab.roar import ModelFactory, PAPER_ESTIMATORS, parse_estimator, relevance_maps, roar  # noqa: E402
from xailab.roar import estimators as est_module  # noqa: E402

MLP = ModelFactory("mlp", in_features=16, num_classes=2, hidden=(32,))


@pytest.fixture(scope="module")
def toy():
    from xailab.data import roar_toy

    train, test = roar_toy(600, seed=0), roar_toy(400, seed=1)
    g = torch.Generator().manual_seed(0)
    rankings = {
        "ground truth": (train.mask, test.mask),
        "random": (torch.rand(train.x.shape, generator=g), torch.rand(test.x.shape, generator=g)),
        "inverted": (1 - train.mask, 1 - test.mask),
    }
    return train, test, rankings


def _toy_run(toy, **kw):
    train, test, rankings = toy
    kw = dict(dict(fractions=(0, 0.25), seeds=[0, 1], epochs=8, variants=("roar", "no_retrain"),
                   cache_dir=None, progress=False), **kw)
    return roar(MLP, train, test, rankings, **kw)


def test_toy_ordering_ground_truth_below_random_below_inverted(toy):
    res = _toy_run(toy)
    gt, rnd, inv = (res.accuracy(e, 0.25) for e in ("ground truth", "random", "inverted"))
    assert gt < rnd < inv, (gt, rnd, inv)
    assert gt < 0.6  # the four informative features gone: chance (0.5)
    assert inv > res.accuracy("random", 0.0) - 0.05  # uninformative features gone: nothing lost
    # the tidy table: one record per seed for retrained cells, one for no_retrain
    assert len(res.filter(variant="roar", fraction=0.25)) == 3 * 2
    assert len(res.filter(variant="no_retrain")) == 3 * 2
    assert {r["variant"] for r in res} == {"roar", "no_retrain"}
    assert all(0 <= r["accuracy"] <= 1 for r in res)
    means = {(m["estimator"], m["variant"], m["fraction"]): m for m in res.mean()}
    assert means[("ground truth", "roar", 0.25)]["n"] == 2
    assert "ground truth" in res.summary()


def test_executor_gives_identical_numbers(toy):
    train, test, rankings = toy
    small = (train[:300], test[:200], {k: rankings[k] for k in ("ground truth", "inverted")})
    small = (small[0], small[1], {k: (a[:300], b[:200]) for k, (a, b) in small[2].items()})
    kw = dict(fractions=(0, 0.25), epochs=4, variants=("roar", "keep"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread on both sides: same arithmetic, and fork-safe OpenMP
    try:
        serial = _toy_run(small, **kw)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            parallel = _toy_run(small, executor=pool, **kw)
    finally:
        torch.set_num_threads(threads)
    assert len(serial) == len(parallel) == 2 * 2 * 2 * 2
    assert serial.records == parallel.records


def test_keep_variant_removes_the_least_relevant(toy):
    res = _toy_run(toy, variants=("keep",), fractions=(0.5,))
    # removing the least relevant half keeps the four informative features: no loss
    assert res.accuracy("ground truth", 0.5, "keep") > res.accuracy("inverted", 0.5, "keep") + 0.2


@pytest.fixture(scope="module")
def tiny_images():
    from xailab.data import shapes, train_test_split

    data = shapes(48, size=8, seed=0)
    return train_test_split(data, test_fraction=0.25, seed=0)


def _tiny_cnn(seed):
    from xailab.models import SmallCNN

    return SmallCNN(in_channels=3, num_classes=4, width=4, depth=1, input_size=8, seed=seed).eval()


def test_paper_estimators_are_eighteen_distinct_valid_names():
    assert len(PAPER_ESTIMATORS) == 18 == len(set(PAPER_ESTIMATORS))
    parsed = [parse_estimator(e) for e in PAPER_ESTIMATORS]
    assert {p.method for p in parsed} == {"gradient", "guided_backprop", "integrated_gradients"}
    assert sum(p.squared for p in parsed) == 6 and sum(p.stat is not None for p in parsed) == 12


def test_cache_hit_is_identical_and_options_invalidate_it(tiny_images, tmp_path, monkeypatch):
    train, _ = tiny_images
    model = _tiny_cnn(0)
    calls = []
    real = est_module._compute

    def counting(model, x, t, group, *a, **kw):
        calls.append(sorted(e.raw for e in group))
        return real(model, x, t, group, *a, **kw)

    monkeypatch.setattr(est_module, "_compute", counting)
    names = ["gradient", "integrated_gradients²", "vargrad(gradient)", "smoothgrad_sq(gradient)"]
    opts = {"integrated_gradients": {"steps": 4}, "ensemble": {"n_samples": 3}}
    first = relevance_maps(model, train, names, options=opts, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2  # gradient + its two ensemble statistics together, then IG
    again = relevance_maps(model, train, names, options=opts, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2  # everything from the cache
    for n in names:
        assert torch.equal(first[n], again[n])
    assert torch.equal(first["integrated_gradients²"], relevance_maps(
        model, train, ["integrated_gradients"], options=opts, cache_dir=tmp_path, progress=False)
        ["integrated_gradients"] ** 2)
    changed = dict(opts, integrated_gradients={"steps": 6})
    relevance_maps(model, train, names, options=changed, cache_dir=tmp_path, progress=False)
    assert calls[-1] == ["integrated_gradients"] and len(calls) == 3  # only IG recomputed
    other_model = _tiny_cnn(1)
    relevance_maps(other_model, train, ["gradient"], options=opts, cache_dir=tmp_path, progress=False)
    assert len(calls) == 4  # new weights, new key
    relevance_maps(model, train[:6], ["gradient"], options=opts, cache_dir=tmp_path, progress=False)
    assert len(calls) == 5  # new data, new key


def test_roar_rerun_from_cache_gives_identical_results(tiny_images, tmp_path, monkeypatch):
    train, test = tiny_images
    kw = dict(fractions=(0, 0.5), seeds=[0], epochs=1, explain_model=_tiny_cnn(0), cache_dir=tmp_path,
              progress=False, variants=("roar", "no_retrain"), batch_size=16)
    first = roar(_tiny_cnn, train, test, ["gradient", "random", "sobel"], **kw)
    calls = []
    monkeypatch.setattr(est_module, "_compute", lambda *a, **k: calls.append(1))
    second = roar(_tiny_cnn, train, test, ["gradient", "random", "sobel"], **kw)
    assert not calls and first.records == second.records


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "roar" / "entry.pt"
    est_module.atomic_save(torch.ones(3), target)

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # as if the sweep were interrupted mid-write

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        est_module.atomic_save(torch.zeros(3), target)
    monkeypatch.undo()
    assert [p.name for p in target.parent.iterdir()] == ["entry.pt"]  # no temporary left behind
    assert torch.equal(torch.load(target), torch.ones(3))  # the old complete entry survives
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(torch, "save", broken_save)
        est_module.atomic_save(torch.zeros(3), tmp_path / "roar" / "new.pt")
    assert not (tmp_path / "roar" / "new.pt").exists()


def test_sweep_bad_input_errors(toy):
    train, test, rankings = toy
    with pytest.raises(ValueError, match="fraction"):
        roar(MLP, train, test, rankings, fractions=(0, 1.2), seeds=1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown estimator 'no_such_method'"):
        roar(MLP, train, test, ["no_such_method"], seeds=1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown ensemble"):
        parse_estimator("mean(gradient)")
    bad = {"short": (train.mask[:, :3], test.mask)}
    with pytest.raises(ValueError, match="relevance of 'short'"):
        roar(MLP, train, test, bad, seeds=1, epochs=1, progress=False, cache_dir=None)
    with pytest.raises(ValueError, match="variants"):
        roar(MLP, train, test, rankings, seeds=1, epochs=1, variants=("kar",), progress=False)


def test_fingerprint_covers_batchnorm_buffers():
    """0-d buffers (num_batches_tracked) hash, and a changed running mean changes the key."""
    from xailab.models import SmallCNN
    from xailab.roar.estimators import model_fingerprint

    model = SmallCNN(width=4, depth=2, input_size=16, batch_norm=True)
    before = model_fingerprint(model)
    model.features.bn1.running_mean += 1
    assert model_fingerprint(model) != before
