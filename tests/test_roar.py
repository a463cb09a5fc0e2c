"""xailab.papers.roar: the sweep's toy ordering, caching, executors, bad input."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
import torch

from xailab.attribution import parse_method
from xailab.papers.roar import ModelFactory, PAPER_ESTIMATORS, RoarResult, relevance_maps, roar, signed_fullgrad_maps
from xailab.papers.roar import estimators as est_module

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
    kw = dict(dict(fractions=(0, 0.25), seeds=[0, 1], epochs=8, variants=("roar", "morf"),
                   cache_dir=None, progress=False), **kw)
    return roar(MLP, train, test, rankings, **kw)


def test_toy_ordering_ground_truth_below_random_below_inverted(toy):
    res = _toy_run(toy)
    gt, rnd, inv = (res.accuracy(e, 0.25) for e in ("ground truth", "random", "inverted"))
    assert gt < rnd < inv, (gt, rnd, inv)
    assert gt < 0.6  # the four informative features gone: chance (0.5)
    assert inv > res.accuracy("random", 0.0) - 0.05  # uninformative features gone: nothing lost
    # the tidy table: one record per seed for retrained cells, one for morf
    assert len(res.filter(variant="roar", fraction=0.25)) == 3 * 2
    assert len(res.filter(variant="morf")) == 3 * 2
    assert {r["variant"] for r in res} == {"roar", "morf"}
    assert all(0 <= r["accuracy"] <= 1 for r in res)
    means = {(m["estimator"], m["variant"], m["fraction"]): m for m in res.mean()}
    assert means[("ground truth", "roar", 0.25)]["n"] == 2
    assert "ground truth" in res.summary()


def test_executor_gives_identical_numbers(toy):
    train, test, rankings = toy
    small = (train[:300], test[:200], {k: rankings[k] for k in ("ground truth", "inverted")})
    small = (small[0], small[1], {k: (a[:300], b[:200]) for k, (a, b) in small[2].items()})
    kw = dict(fractions=(0, 0.25), epochs=4, variants=("roar", "kar"))
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


def test_kar_variant_removes_the_least_relevant(toy):
    res = _toy_run(toy, variants=("kar",), fractions=(0.5,))
    # removing the least relevant half keeps the four informative features: no loss
    assert res.accuracy("ground truth", 0.5, "kar") > res.accuracy("inverted", 0.5, "kar") + 0.2


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
    parsed = [parse_method(e) for e in PAPER_ESTIMATORS]
    assert {p.method for p in parsed} == {"gradient", "guided_backprop", "integrated_gradients"}
    assert sum(p.squared for p in parsed) == 6 and sum(p.stat is not None for p in parsed) == 12


def test_cache_hit_is_identical_and_options_invalidate_it(tiny_images, tmp_path, monkeypatch):
    train, _ = tiny_images
    model = _tiny_cnn(0)
    calls = []
    real = est_module.method_maps

    def counting(model, x, t, methods, **kw):
        calls.append(sorted(spec.raw for spec in methods.values()))
        return real(model, x, t, methods, **kw)

    monkeypatch.setattr(est_module, "method_maps", counting)
    names = ["gradient", "integrated_gradients²", "vargrad(gradient)", "smoothgrad_sq(gradient)"]
    opts = {"integrated_gradients": {"steps": 4}, "ensemble": {"n_samples": 3}}
    kw = dict(defaults=opts, cache_dir=tmp_path, progress=False)
    first = relevance_maps(model, train, names, **kw)
    # one pass over the data for every raw map; the square reuses IG's
    assert calls == [["gradient", "integrated_gradients", "smoothgrad_sq(gradient)", "vargrad(gradient)"]]
    again = relevance_maps(model, train, names, **kw)
    assert len(calls) == 1  # everything from the cache
    for n in names:
        assert torch.equal(first[n], again[n])
    assert torch.equal(first["integrated_gradients²"],
                       relevance_maps(model, train, ["integrated_gradients"], **kw)["integrated_gradients"] ** 2)
    changed = dict(opts, integrated_gradients={"steps": 6})
    relevance_maps(model, train, names, defaults=changed, cache_dir=tmp_path, progress=False)
    assert calls[-1] == ["integrated_gradients"] and len(calls) == 2  # only IG recomputed
    relevance_maps(model, train, {"IG 6": ("integrated_gradients", {"steps": 6})}, **kw)
    assert len(calls) == 2  # the same map by another label: a cache hit
    relevance_maps(_tiny_cnn(1), train, ["gradient"], **kw)
    assert len(calls) == 3  # new weights, new key
    relevance_maps(model, train[:6], ["gradient"], **kw)
    assert len(calls) == 4  # new data, new key
    relevance_maps(model, train, ["gradient"], defaults=opts, cache_dir=tmp_path, progress=False, target="predicted")
    assert len(calls) == 5  # another explained class, new key


def test_roar_rerun_from_cache_gives_identical_results(tiny_images, tmp_path, monkeypatch):
    train, test = tiny_images
    kw = dict(fractions=(0, 0.5), seeds=[0], epochs=1, explain_model=_tiny_cnn(0), cache_dir=tmp_path,
              progress=False, variants=("roar", "morf"), batch_size=16)
    first = roar(_tiny_cnn, train, test, ["gradient", "random", "sobel"], **kw)
    calls = []
    monkeypatch.setattr(est_module, "method_maps", lambda *a, **k: calls.append(1))
    second = roar(_tiny_cnn, train, test, ["gradient", "random", "sobel"], **kw)
    assert not calls and first.records == second.records


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "roar" / "entry.pt"
    est_module.atomic_save(torch.ones(3), target)

    def broken_save(obj, f):
        with open(f, "wb") as out:
            out.write(b"partial bytes")
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
    with pytest.raises(ValueError, match="unknown method 'no_such_method'"):
        roar(MLP, train, test, ["no_such_method"], seeds=1, epochs=1, progress=False)
    with pytest.raises(ValueError, match="unknown ensemble"):
        parse_method("mean(gradient)")
    bad = {"short": (train.mask[:, :3], test.mask)}
    with pytest.raises(ValueError, match="maps of 'short'"):
        roar(MLP, train, test, bad, seeds=1, epochs=1, progress=False, cache_dir=None)
    with pytest.raises(ValueError, match="variants"):
        roar(MLP, train, test, rankings, seeds=1, epochs=1, variants=("keep",), progress=False)


def test_fingerprint_covers_batchnorm_buffers():
    """0-d buffers (num_batches_tracked) hash, and a changed running mean changes the key."""
    from xailab.models import SmallCNN
    from xailab.papers.roar.estimators import model_fingerprint

    model = SmallCNN(width=4, depth=2, input_size=16, batch_norm=True)
    before = model_fingerprint(model)
    model.features.bn1.running_mean += 1
    assert model_fingerprint(model) != before


def test_morf_and_lerf_score_the_explained_model_and_run_on_an_executor(tiny_images):
    train, test = tiny_images
    model = _tiny_cnn(0)
    kw = dict(fractions=(0, 0.5), seeds=[0], epochs=1, explain_model=model, progress=False, batch_size=16,
              variants=("morf", "lerf"), fill="noisy_linear", fill_options={"noise": 0.0})
    res = roar(_tiny_cnn, train, test, ["gradient", "random"], **kw)
    assert set(res.variants) == {"morf", "lerf"} and res.meta["fill"] == "noisy_linear"
    # MoRF at 0.5 is the explained model on the test set with the top half imputed
    from xailab.papers.roar import relevance_maps
    from xailab.removal import remove
    from xailab.train import evaluate
    import dataclasses

    rel = relevance_maps(model, test, ["gradient"], progress=False)["gradient"]
    morf = evaluate(model, dataclasses.replace(test, x=remove(test.x, rel, 0.5, fill="noisy_linear", noise=0.0)))
    assert res.accuracy("gradient", 0.5, "morf") == morf
    lerf = res.accuracy("gradient", 0.5, "lerf")
    assert 0 <= lerf <= 1 and res.accuracy("gradient", 0.0, "lerf") == evaluate(model, test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=ctx, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            parallel = roar(_tiny_cnn, train, test, ["gradient", "random"], executor=pool, **kw)
    finally:
        torch.set_num_threads(threads)
    assert parallel.records == res.records


def test_rank_agreement_and_mean_accuracy():
    from xailab.papers.roar import RoarResult, rank_agreement

    same = rank_agreement({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, {"a": 10, "b": 20, "c": 30, "d": 40, "e": 50})
    assert same["rho"] == pytest.approx(1.0) and same["p"] < 0.05 and same["n"] == 5
    rev = rank_agreement({"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 4, "b": 3, "c": 2, "d": 1})
    assert rev["rho"] == pytest.approx(-1.0) and rev["p"] > 0.9
    with pytest.raises(ValueError, match="3 common"):
        rank_agreement({"a": 1, "b": 2}, {"a": 1, "b": 2})
    res = RoarResult([dict(estimator="g", variant="roar", fraction=f, seed=s, accuracy=a)
                      for f, s, a in [(0.0, 0, 1.0), (0.5, 0, 0.6), (0.5, 1, 0.8), (0.9, 0, 0.3)]])
    assert res.mean_accuracy("g") == pytest.approx((0.7 + 0.3) / 2)
    assert res.mean_accuracy("g", fractions=[0.0, 0.9]) == pytest.approx(0.65)
    # a variant measured at other fractions (LeRF kept small) averages over its own, not the union
    lerf = RoarResult(res.records + [dict(estimator="g", variant="lerf", fraction=f, seed=None, accuracy=a)
                                     for f, a in [(0.95, 0.9), (0.99, 0.5)]])
    assert lerf.mean_accuracy("g", variant="lerf") == pytest.approx(0.7)
    assert lerf.mean_accuracy("g") == pytest.approx((0.7 + 0.3) / 2)
    assert lerf.per_seed("g", variant="lerf") == pytest.approx({None: 0.7})


def test_mask_leakage_and_pattern_visibility_separate_a_class_shaped_removal_from_a_random_one():
    from xailab.data import shapes, train_test_split
    from xailab.models import SmallCNN
    from xailab.papers.roar import mask_only_accuracy, pattern_visibility
    from xailab.removal import fill_removed

    data = shapes(600, size=16, seed=0, num_classes=2, distractors=0, scale=(0.3, 0.45))
    train, test = train_test_split(data, test_fraction=0.25, seed=0)
    one_channel = lambda s: SmallCNN(1, 2, width=4, depth=2, input_size=16, seed=s)  # noqa: E731
    kw = dict(epochs=8, lr=3e-3, device="cpu")
    area = float(train.mask.mean())                   # remove exactly as many pixels as the objects cover
    shaped = mask_only_accuracy(one_channel, train, test, (train.mask, test.mask), area, **kw)
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(train.mask.shape, generator=g), torch.rand(test.mask.shape, generator=g))
    scattered = mask_only_accuracy(one_channel, train, test, noise, area, **kw)
    assert shaped > 0.75 and scattered < 0.65      # the object's silhouette names its class; noise does not
    removed = data.mask > 0.5
    flat = fill_removed(data.x, removed, "zero")
    seen = pattern_visibility(flat[:450], removed[:450], flat[450:], removed[450:], epochs=2, seed=0)
    rnd = torch.rand(removed.shape, generator=g) < 0.3
    hidden = fill_removed(data.x, rnd, "noisy_linear", noise=0.06)
    unseen = pattern_visibility(hidden[:450], rnd[:450], hidden[450:], rnd[450:], epochs=2, seed=0)
    assert seen > 0.95 and unseen < 0.65


def test_paired_difference_over_seeds():
    from xailab.papers.roar import RoarResult

    rows = [dict(estimator=e, variant="roar", fraction=f, seed=s, accuracy=a)
            for e, f, s, a in [("a", 0.5, 0, 0.6), ("a", 0.5, 1, 0.8), ("b", 0.5, 0, 0.5), ("b", 0.5, 1, 0.6),
                               ("a", 0.9, 0, 0.4), ("a", 0.9, 1, 0.4), ("b", 0.9, 0, 0.5), ("b", 0.9, 1, 0.5)]]
    res = RoarResult(rows)
    assert res.per_seed("a") == pytest.approx({0: 0.5, 1: 0.6})
    d = res.difference("a", "b")                       # per seed: 0.5 - 0.5 = 0 and 0.6 - 0.55 = 0.05
    assert d["mean"] == pytest.approx(0.025) and d["se"] == pytest.approx(0.025) and d["n"] == 2
    assert res.difference("a", "b", fractions=[0.5])["mean"] == pytest.approx(0.15)


def test_collapsed_replicates_follow_the_registered_rule():
    chance = 0.25
    rows = [dict(estimator="g", variant="roar", fraction=0.5, seed=s, accuracy=0.8, train_accuracy=a)
            for s, a in enumerate([0.95, 0.97, 0.26, 0.9])]                      # one seed at chance
    rows += [dict(estimator="r", variant="roar", fraction=0.9, seed=s, accuracy=0.3, train_accuracy=a)
             for s, a in enumerate([0.27, 0.3, 0.26, 0.28])]                     # information lost: no collapse
    rows += [dict(estimator="g", variant="morf", fraction=0.5, seed=None, accuracy=0.25, train_accuracy=None)]
    res = RoarResult(rows, {"chance": chance})
    assert [(r["estimator"], r["seed"]) for r in res.collapsed()] == [("g", 2)]
    # the boundary: within 0.1 (1 - 1/K) of chance counts, just above it does not
    edge = [dict(rows[0], fraction=0.7, seed=s, train_accuracy=a)
            for s, a in enumerate([0.95, 0.96, 0.97, chance + 0.075, chance + 0.076])]
    assert [(r["fraction"], r["seed"]) for r in RoarResult(rows + edge, {"chance": chance}).collapsed()] == [(0.5, 2), (0.7, 3)]


def test_signed_fullgrad_maps_rank_by_the_signed_map_most_positive_first():
    from xailab.attribution.fullgrad import fullgrad
    from xailab.data import shapes
    from xailab.models import SmallCNN

    model = SmallCNN(3, 4, width=4, depth=2, input_size=16, seed=0).eval()
    d = shapes(5, size=16, seed=1)
    ranking = signed_fullgrad_maps(model, d, batch_size=2)
    signed = fullgrad(model, d.x, model(d.x).argmax(1), post="signed").detach()
    assert ranking.shape == signed.shape and (ranking.amin(dim=(1, 2, 3)) == 0).all()
    assert torch.allclose(ranking - signed, (ranking - signed)[:, :1, :1, :1].expand_as(signed), atol=1e-6)
