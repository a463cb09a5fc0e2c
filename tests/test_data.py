"""Tests of xailab.data: determinism, mask correctness, triggers, toy-data informativeness,
loaders' errors and the real MNIST loading path on a fake on-disk dataset, splits."""
import struct

import pytest
import torch

from xailab import data as D
from xailab.data import Data


@pytest.fixture(scope="module")
def sh():
    return D.shapes(300, seed=3)


def _bbox(mask2d):
    rows = torch.nonzero(mask2d.any(1)).flatten()
    cols = torch.nonzero(mask2d.any(0)).flatten()
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


# ---------------------------------------------------------------- Data
def test_data_container_subsets_and_moves():
    x = torch.rand(10, 1, 4, 4)
    d = Data(x, torch.arange(10) % 3, torch.ones(10, 1, 4, 4), ("a", "b", "c"), {"k": torch.arange(2)})
    assert len(d) == 10 and d.num_classes == 3
    one = d[-1]
    assert len(one) == 1 and one.x.shape == (1, 1, 4, 4) and torch.equal(one.x[0], x[9])
    assert len(d[2:5]) == 3 and d[2:5].classes == d.classes
    sub = d[torch.tensor([0, 3])]
    assert sub.y.tolist() == [0, 0] and sub.mask.shape == (2, 1, 4, 4) and sub.meta is d.meta
    assert len(d[d.y == 1]) == 3
    moved = d.to("cpu")
    assert torch.equal(moved.x, d.x) and moved.classes == d.classes
    assert Data(x, torch.tensor([0, 5] * 5)).num_classes == 6
    assert "n=10" in repr(d)
    with pytest.raises(ValueError, match="same length"):
        Data(x, torch.zeros(9))
    with pytest.raises(IndexError):
        d[10]
    with pytest.raises(AttributeError, match="informative"):
        d.informative


# ---------------------------------------------------------------- shapes
def test_shapes_format_balance_and_determinism(sh):
    assert sh.x.shape == (300, 3, 32, 32) and sh.x.dtype == torch.float32
    assert 0 <= float(sh.x.min()) and float(sh.x.max()) <= 1
    assert sh.y.dtype == torch.int64 and sh.classes == D.SHAPE_KINDS[:4]
    assert torch.bincount(sh.y).tolist() == [75] * 4
    assert set(sh.mask.unique().tolist()) == {0.0, 1.0} and sh.mask.shape == (300, 1, 32, 32)
    state = torch.get_rng_state()
    again = D.shapes(300, seed=3)
    assert torch.equal(torch.get_rng_state(), state), "the global RNG must not be touched"
    assert torch.equal(again.x, sh.x) and torch.equal(again.y, sh.y) and torch.equal(again.mask, sh.mask)
    other = D.shapes(300, seed=4)
    assert not torch.equal(other.x, sh.x)


def test_shapes_mask_is_exactly_the_object(sh):
    # regenerate the same images without the object: only masked pixels may change
    bare = D.shapes(300, seed=3, draw_object=False)
    assert torch.equal(bare.mask, sh.mask)
    outside = (sh.mask == 0).expand_as(sh.x)
    assert torch.equal(sh.x[outside], bare.x[outside])
    changed = (sh.x != bare.x).any(1, keepdim=True).float()
    inside = sh.mask.sum((1, 2, 3))
    assert (inside >= 10).all(), "every image has a visible object"
    assert ((changed * sh.mask).sum((1, 2, 3)) / inside).min() > 0.9  # the object covers its mask
    # the mask is compact: its bounding box fits the largest object (radius 0.35*size, rotated)
    for i in range(0, 300, 7):
        r0, r1, c0, c1 = _bbox(sh.mask[i, 0] > 0)
        assert r1 - r0 + 1 <= 2 * 1.2 * 0.35 * 32 + 2 and c1 - c0 + 1 <= 2 * 1.2 * 0.35 * 32 + 2
        # the mask fills a good part of its own box (one object, not scattered pixels)
        assert sh.mask[i, 0, r0:r1 + 1, c0:c1 + 1].mean() > 0.3


def test_shapes_object_is_one_flat_colour_without_noise():
    d = D.shapes(40, seed=0, noise=0.0)
    for i in range(40):
        pix = d.x[i][:, d.mask[i, 0] > 0]  # (3, P)
        assert (pix.max(1).values - pix.min(1).values).max() < 1e-6


def test_shapes_classes_differ_by_object_kind_only():
    d = D.shapes(400, seed=1, num_classes=8, size=24)
    assert d.classes == D.SHAPE_KINDS and d.x.shape[-1] == 24
    area = d.mask.sum((1, 2, 3)) / (d.mask.sum((1, 2, 3)).mean())
    # area relative to the object's size differs between kinds (e.g. ring vs disc)
    assert area[d.y == 1].mean() > area[d.y == 4].mean()


@pytest.mark.slow
def test_shapes_is_learnable_but_not_trivial():
    """A small CNN needs more than one epoch, and reaches >= 90 % after ten."""
    models = pytest.importorskip("xailab.models")
    train = pytest.importorskip("xailab.train")
    tr, te = D.shapes(3000, seed=1), D.shapes(1000, seed=2)
    model = train.fit(models.SmallCNN(3, 4, seed=0), tr, epochs=1, seed=0, progress=False, device="cpu")
    assert train.evaluate(model, te, device="cpu") < 0.75, "one epoch should not solve it"
    model = train.fit(models.SmallCNN(3, 4, seed=0), tr, epochs=10, seed=0, progress=False, device="cpu")
    assert train.evaluate(model, te, device="cpu") >= 0.9


@pytest.mark.parametrize("kwargs, name", [
    (dict(n=0), "n"), (dict(n=-3), "n"), (dict(n=2.5), "n"), (dict(n=4, num_classes=1), "num_classes"),
    (dict(n=4, num_classes=9), "num_classes"), (dict(n=4, size=4), "size"),
    (dict(n=4, scale=(0.3, 0.1)), "scale"), (dict(n=4, distractors=-1), "distractors"),
])
def test_shapes_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        D.shapes(**kwargs)


# ---------------------------------------------------------------- triggers
def test_trigger_designs_are_distinct():
    assert len(D.TRIGGER_DESIGNS) >= 4
    patches = [D.trigger_patch(i, 6) for i in range(len(D.TRIGGER_DESIGNS))]
    for i, (p, a) in enumerate(patches):
        assert p.shape == (3, 6, 6) and a.shape == (1, 6, 6) and 0 <= p.min() and p.max() <= 1
        assert a.sum() >= 12
        for q, b in patches[i + 1:]:
            assert not (torch.equal(p * a, q * b) and torch.equal(a, b))
    grey, _ = D.trigger_patch(2, 5, channels=1)
    assert grey.shape == (1, 5, 5)


def test_add_trigger_stamps_relabels_and_masks(sh):
    t = D.add_trigger(sh, target_class=2, fraction=0.5, seed=1, designs=(0, 1, 3))
    clean_y = sh.y
    non_target = clean_y != 2
    assert int(t.triggered.sum()) == round(0.5 * int(non_target.sum()))
    assert not t.triggered[~non_target].any(), "target-class images are never stamped"
    assert torch.equal(t.original_y, clean_y)
    assert (t.data.y[t.triggered] == 2).all() and torch.equal(t.data.y[~t.triggered], clean_y[~t.triggered])
    assert set(t.design[t.triggered].tolist()) == {0, 1, 3} and (t.design[~t.triggered] == -1).all()
    m = t.data.mask
    assert m[~t.triggered].sum() == 0 and (m[t.triggered].sum((1, 2, 3)) > 0).all()
    # the patch changes nothing outside its mask, and avoids the class object
    outside = (m == 0).expand_as(sh.x)
    assert torch.equal(t.data.x[outside], sh.x[outside])
    assert (m * sh.mask).sum() == 0
    assert torch.equal(t.original_mask, sh.mask)
    # the mask is one small box per image
    for i in torch.nonzero(t.triggered).flatten()[:20].tolist():
        r0, r1, c0, c1 = _bbox(m[i, 0] > 0)
        assert r1 - r0 < 8 and c1 - c0 < 8
    again = D.add_trigger(sh, target_class=2, fraction=0.5, seed=1, designs=(0, 1, 3))
    assert torch.equal(again.data.x, t.data.x) and torch.equal(again.design, t.design)
    other = D.add_trigger(sh, target_class=2, fraction=0.5, seed=2, designs=(0, 1, 3))
    assert not torch.equal(other.triggered, t.triggered)


def test_add_trigger_fraction_extremes_and_one_channel():
    dg = D.digits()[:200]
    t = D.add_trigger(dg, target_class=0, fraction=1.0, designs=(4,))
    assert torch.equal(t.triggered, dg.y != 0) and (t.data.y == 0).all()
    assert t.data.x.shape == dg.x.shape and t.original_mask is None
    none = D.add_trigger(dg, target_class=0, fraction=0.0)
    assert not none.triggered.any() and torch.equal(none.data.x, dg.x)


@pytest.mark.parametrize("kwargs, name", [
    (dict(target_class=0, fraction=1.5), "fraction"), (dict(target_class=0, fraction=-0.1), "fraction"),
    (dict(target_class=4, fraction=0.1), "target_class"), (dict(target_class=-1, fraction=0.1), "target_class"),
    (dict(target_class=0, fraction=0.1, designs=(0, 9)), "designs"),
    (dict(target_class=0, fraction=0.1, opacity=0.0), "opacity"), (dict(target_class=0, fraction=0.1, opacity=1.5), "opacity"),
])
def test_add_trigger_rejects_bad_arguments(sh, kwargs, name):
    with pytest.raises(ValueError, match=name):
        D.add_trigger(sh, **kwargs)


def test_stamp_trigger_at_given_and_random_positions():
    x = torch.zeros(3, 3, 16, 16)
    out, mask = D.stamp_trigger(x, 0, position=(2, 5), size=4)
    assert mask[:, 0, 2:6, 5:9].eq(1).all() and mask.sum() == 3 * 16
    assert torch.equal(out * (1 - mask), x) and out[mask.expand_as(out) > 0].max() == 1
    out2, mask2 = D.stamp_trigger(x, 3, seed=7)
    out3, mask3 = D.stamp_trigger(x, 3, seed=7)
    assert torch.equal(out2, out3) and torch.equal(mask2, mask3) and mask2.sum() > 0
    with pytest.raises(ValueError, match="design"):
        D.stamp_trigger(x, 99)
    with pytest.raises(ValueError, match="position"):
        D.stamp_trigger(x, 0, position=(14, 0), size=4)


def test_stamp_trigger_opacity_blends_the_patch_with_the_image():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    full, mask = D.stamp_trigger(x, 1, position=(3, 4), size=5)
    faint, mask_faint = D.stamp_trigger(x, 1, position=(3, 4), size=5, opacity=0.3)
    assert torch.equal(mask, mask_faint)                       # the ground truth is where the patch is
    # blending is linear in the opacity: faint = x + 0.3 (full - x), exactly where the patch is opaque
    assert torch.allclose(faint, x + 0.3 * (full - x), atol=1e-6)
    tr = D.add_trigger(D.shapes(40, size=16, seed=0), target_class=0, fraction=1.0, seed=1, opacity=0.5)
    assert tr.triggered.any() and (tr.data.mask.sum((1, 2, 3)) > 0).eq(tr.triggered).all()


# ---------------------------------------------------------------- ROAR toy data
def test_roar_toy_only_the_informative_features_predict_y():
    from sklearn.linear_model import LogisticRegression

    tr, te = D.roar_toy(3000, seed=1), D.roar_toy(3000, seed=2)
    assert tr.x.shape == (3000, 16) and tr.mask.shape == (3000, 16)
    assert tr.informative.tolist() == [0, 1, 2, 3] and tr.mask[:, :4].eq(1).all() and tr.mask[:, 4:].eq(0).all()
    assert torch.equal(tr.meta["a"], te.meta["a"]), "train and test share a and d"
    assert (tr.meta["a"][4:] == 0).all() and (tr.meta["a"][:4] != 0).all()

    def acc(cols):
        clf = LogisticRegression(max_iter=1000).fit(tr.x[:, cols].numpy(), tr.y.numpy())
        return clf.score(te.x[:, cols].numpy(), te.y.numpy())

    informative, rest, everything = acc(slice(0, 4)), acc(slice(4, 16)), acc(slice(0, 16))
    assert informative > 0.72
    assert abs(rest - 0.5) < 0.04  # chance
    assert everything > informative + 0.03  # uninformative features help cancel the nuisance


def test_roar_toy_determinism_and_errors():
    a, b = D.roar_toy(50, seed=5), D.roar_toy(50, seed=5)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, D.roar_toy(50, seed=6).x)
    assert D.roar_toy(10, d=8, informative=2).x.shape == (10, 8)
    with pytest.raises(ValueError, match="n"):
        D.roar_toy(0)
    with pytest.raises(ValueError, match="informative"):
        D.roar_toy(10, d=8, informative=9)


# ---------------------------------------------------------------- digits and on-disk loaders
def test_digits():
    d = D.digits()
    assert d.x.shape == (1797, 1, 8, 8) and d.mask is None and d.classes == tuple("0123456789")
    assert float(d.x.min()) == 0 and float(d.x.max()) == 1
    assert torch.equal(d.x, D.digits(seed=0).x) and not torch.equal(d.y, D.digits(seed=1).y)
    big = D.digits(size=16, seed=0)
    assert big.x.shape == (1797, 1, 16, 16) and torch.equal(big.y, d.y)
    assert 0 <= float(big.x.min()) and float(big.x.max()) <= 1


def _write_idx(path, tensor):
    """Write a uint8 tensor in the MNIST idx format (big-endian header, then raw bytes)."""
    dims = tuple(tensor.shape)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + len(dims)))
        f.write(struct.pack(f">{len(dims)}I", *dims))
        f.write(tensor.numpy().tobytes())


def test_mnist_loads_a_fake_dataset_from_disk(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    sets = {}
    for split, n in (("train", 12), ("t10k", 5)):
        img = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        lab = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
        _write_idx(raw / f"{split}-images-idx3-ubyte", img)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", lab)
        sets[split] = (img, lab)
    tr, te = D.mnist(tmp_path), D.mnist(str(tmp_path), train=False)
    assert tr.x.shape == (12, 1, 28, 28) and te.x.shape == (5, 1, 28, 28)
    assert torch.allclose(tr.x[:, 0] * 255, sets["train"][0].float())
    assert torch.equal(te.y, sets["t10k"][1].long()) and tr.classes == tuple("0123456789")


def test_loaders_fail_fast_with_where_to_put_the_data(tmp_path):
    missing = tmp_path / "nowhere"
    for loader in (D.mnist, D.cifar10):
        with pytest.raises(FileNotFoundError, match="root .*nowhere.* does not exist"):
            loader(missing)
        with pytest.raises(ValueError, match="root"):  # also a ValueError naming the argument
            loader(missing)
    assert not missing.exists(), "a failed load must not create anything"
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*data_batch_1|data_batch_1"):
        D.cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="MNIST/raw"):
        D.mnist(tmp_path)


# ---------------------------------------------------------------- splits
def test_train_test_split_is_stratified_disjoint_and_deterministic(sh):
    tr, te = D.train_test_split(sh, test_fraction=0.2, seed=0)
    assert len(tr) + len(te) == len(sh) and len(te) == 60
    assert torch.bincount(te.y, minlength=4).tolist() == [15] * 4
    keys = lambda d: {tuple(v) for v in d.x.flatten(1)[:, :40].tolist()}  # noqa: E731
    assert not keys(tr) & keys(te) and len(keys(tr) | keys(te)) == len(sh)
    tr2, te2 = D.train_test_split(sh, test_fraction=0.2, seed=0)
    assert torch.equal(te.x, te2.x) and torch.equal(tr.y, tr2.y)
    assert te.mask is not None and te.classes == sh.classes
    _, te3 = D.train_test_split(sh, test_fraction=0.3, seed=1, stratify=False)
    assert len(te3) == 90
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            D.train_test_split(sh, test_fraction=bad)


def test_disjoint_splits(sh):
    parts = D.disjoint_splits(sh[:103], 4, seed=0)
    assert [len(p) for p in parts] == [25] * 4
    keys = [{tuple(v) for v in p.x.flatten(1)[:, :40].tolist()} for p in parts]
    assert sum(len(k) for k in keys) == len(set().union(*keys)) == 100
    counts = torch.stack([torch.bincount(p.y, minlength=4) for p in parts])
    assert (counts.max(0).values - counts.min(0).values).max() <= 1  # classes spread evenly
    again = D.disjoint_splits(sh[:103], 4, seed=0)
    assert all(torch.equal(a.x, b.x) for a, b in zip(parts, again))
    assert len(D.disjoint_splits(sh[:5], 5)) == 5 and len(D.disjoint_splits(sh[:5], 1)[0]) == 5
    for bad in (0, 6, 2.0):
        with pytest.raises(ValueError, match="k must"):
            D.disjoint_splits(sh[:5], bad)


def test_shapes_colour_cue_puts_the_class_in_the_hue_and_several_objects_in_the_mask():
    import colorsys

    d = D.shapes(200, size=24, seed=3, cue="colour", objects=2, noise=0.0, texture=0.0)
    assert d.classes == ("red", "chartreuse", "cyan", "violet")
    one = D.shapes(200, size=24, seed=3, cue="colour", objects=1, noise=0.0, texture=0.0)
    assert d.mask.sum() > 1.5 * one.mask.sum()    # two objects cover more than one (overlaps aside)
    for i in range(40):
        inside = d.mask[i, 0] > 0
        rgb = d.x[i][:, inside].mean(1) if inside.sum() else None
        if rgb is None:
            continue
        r, g, b = (d.x[i][:, inside][:, 0]).tolist()     # one object pixel: its hue is in the class band
        hue = colorsys.rgb_to_hsv(r, g, b)[0]
        k = int(d.y[i])
        centre = k / 4
        assert min(abs(hue - centre), 1 - abs(hue - centre)) <= 1 / 8 + 1e-6
    both = D.shapes(60, size=24, seed=3, cue="both")
    assert both.classes[1] == "chartreuse disc"
    with pytest.raises(ValueError, match="cue"):
        D.shapes(10, cue="texture")
    with pytest.raises(ValueError, match="objects"):
        D.shapes(10, objects=0)


def test_shapes_context_spreads_same_class_evidence_and_mask_of_selects_what_is_marked():
    kw = dict(size=32, seed=5, cue="both", context=4, noise=0.0, texture=0.0)
    evidence, objects = D.shapes(120, **kw), D.shapes(120, **kw, mask_of="object")
    assert torch.equal(evidence.x, objects.x) and torch.equal(evidence.y, objects.y)   # the same images
    assert (evidence.mask >= objects.mask).all()                                      # the object is part of the evidence
    assert evidence.mask.sum() > 1.1 * objects.mask.sum()                             # the context adds to it
    plain = D.shapes(120, size=32, seed=5, cue="both", noise=0.0, texture=0.0)
    assert torch.equal(plain.x, D.shapes(120, size=32, seed=5, cue="both", noise=0.0, texture=0.0, context=0).x)
    # context pixels outside the object carry the class's hue band, like the object
    import colorsys
    for i in range(30):
        ctx = (evidence.mask[i, 0] > 0) & (objects.mask[i, 0] == 0)
        if ctx.sum() < 3:
            continue
        r, g, b = evidence.x[i][:, ctx][:, 0].tolist()
        hue, centre = colorsys.rgb_to_hsv(r, g, b)[0], int(evidence.y[i]) / 4
        assert min(abs(hue - centre), 1 - abs(hue - centre)) <= 1 / 8 + 1e-6
    bare = D.shapes(120, **kw, draw_object=False)              # draw_object=False hides the context too
    outside = (evidence.mask == 0).expand_as(evidence.x)
    assert torch.equal(bare.x[outside], evidence.x[outside])
    with pytest.raises(ValueError, match="mask_of"):
        D.shapes(4, mask_of="both")
    with pytest.raises(ValueError, match="context"):
        D.shapes(4, context=-1)


def test_shapes_decoys_are_class_independent_clutter_outside_the_mask():
    kw = dict(size=32, seed=6, noise=0.0, texture=0.0, distractors=0)
    plain, cluttered = D.shapes(200, **kw), D.shapes(200, **kw, decoys=3)
    assert torch.equal(plain.x, D.shapes(200, **kw, decoys=0).x)          # decoys=0: the images of before
    assert torch.equal(plain.y, cluttered.y) and torch.equal(plain.mask, cluttered.mask)  # labels and evidence kept
    # the object lies over the decoys: its pixels (flat colour here) are those of the image without decoys
    inside = cluttered.mask.bool().expand_as(cluttered.x)
    assert torch.equal(plain.x[inside], cluttered.x[inside])
    # decoys are drawn whatever draw_object says: on a flat background every pixel off 0.3 is a decoy's
    flat = dict(kw, background=(0.3, 0.3), draw_object=False)
    assert (D.shapes(200, **flat).x == 0.3).all()
    covered = (D.shapes(200, **flat, decoys=3).x != 0.3).any(1)
    assert 0.02 < covered.float().mean() < 0.5 and covered.flatten(1).any(1).all()   # clutter in every image
    bare = D.shapes(200, **kw, decoys=3, draw_object=False)              # the same images without the object
    assert torch.equal(bare.x[~inside], cluttered.x[~inside])
    # clutter, not evidence: decoy kinds are drawn independently of the class, every kind in every class
    kinds = cluttered.meta["decoy_kinds"]
    assert kinds.shape == (200, 3) and "decoy_kinds" not in plain.meta
    counts = torch.stack([torch.bincount(kinds[cluttered.y == c].flatten(), minlength=4) for c in range(4)]).float()
    assert (counts > 0).all() and (counts / counts.sum(1, keepdim=True) - 0.25).abs().max() < 0.12
    assert (D.shapes(50, **kw, decoys=2, decoy_kinds=[1]).meta["decoy_kinds"] == 1).all()
    with pytest.raises(ValueError, match="decoys"):
        D.shapes(4, decoys=-1)
    with pytest.raises(ValueError, match="decoy_scale"):
        D.shapes(4, decoys=1, decoy_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="decoy_kinds"):
        D.shapes(4, decoys=1, decoy_kinds=[4])
