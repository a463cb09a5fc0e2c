"""SPADE's class unit: the per-position head, batch-norm re-estimation, facets, the oracle, Sparse-FC,
trigger similarity and the trace-overlap helpers (small models, CPU, a few seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xailab import claims
from xailab.data import trigger_patch
from xailab.models import SmallResNet
from xailab.papers.spade import layer_conditioning, trace_batch
from xailab.papers.spade import evaluate as ev
from xailab.papers.spade import facets as fa
from xailab.papers.spade.capture import per_position, pooled_sources
from xailab.papers.spade.trace import reestimate_batchnorm


def _resnet(seed=0):
    """A two-stage ResNet with batch norm and non-trivial running statistics, in eval mode."""
    model = SmallResNet(num_classes=4, width=4, blocks=(1, 1), seed=seed)
    model.train()
    with torch.no_grad():                          # a few batches so the BN statistics are not the defaults
        for i in range(3):
            model(_x(16, seed=100 + i))
    return model.eval()


def _x(n=1, seed=0, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


OPTS = dict(n_views=4, progress=False, device="cpu")


# --------------------------------------------------------------------------------- the head, per position
def test_pooled_sources_finds_the_head_after_global_pooling_only():
    model = _resnet()
    assert set(pooled_sources(model, _x())) == {"classifier.fc"}
    assert pooled_sources(model, _x())["classifier.fc"] is model.pool
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU(), nn.Linear(8, 2))
    assert pooled_sources(mlp, _x()) == {}
    # a pooling whose output is not what the linear layer reads (a ReLU in between changes it) is not taken
    shifted = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Tanh(), nn.Linear(4, 2))
    assert pooled_sources(shifted.eval(), _x()) == {}


def test_a_head_on_per_position_features_averages_to_the_pooled_head():
    model = _resnet()
    features = model.features(_x(2))
    fc = model.classifier.fc
    per = per_position(features)
    assert per.shape == (2, features.shape[2] * features.shape[3], features.shape[1])
    torch.testing.assert_close(F.linear(per, fc.weight, fc.bias).mean(1), model(_x(2)), rtol=1e-5, atol=1e-6)


def test_per_position_fit_determines_the_head_and_prunes_the_class_unit():
    model, x = _resnet(), _x()
    pooled = {r["name"]: r for r in layer_conditioning(model, x, positions=False, **{k: OPTS[k] for k in ("n_views", "device")})}
    per_pos = {r["name"]: r for r in layer_conditioning(model, x, positions=True, **{k: OPTS[k] for k in ("n_views", "device")})}
    head = "classifier.fc"
    assert pooled[head]["samples"] == 4 and pooled[head]["deficit"] > 0      # 4 views, 8 inputs: undetermined
    assert per_pos[head]["samples"] == 4 * 8 * 8 and per_pos[head]["deficit"] == 0
    t = trace_batch(model, x, 0.75, schedule="linear", positions=True, **OPTS)[0]
    rep = {l.name: l for l in t.report.layers}[head]
    assert rep.samples == 4 * 64 and rep.scheduled == 0.75
    assert abs(rep.achieved - 0.75) * 32 <= 4                                   # within one weight per row
    recomputed = ev.recomputed_errors(model, t.model, x, [head], n_views=4, seed=0)
    assert recomputed[head] == pytest.approx(rep.rel_error, rel=1e-4)


def test_recomputed_errors_match_every_reported_layer():
    model, x = _resnet(1), _x(seed=3)
    t = trace_batch(model, x, 0.6, schedule="linear", **OPTS)[0]
    names = [l.name for l in t.report.layers]
    recomputed = ev.recomputed_errors(model, t.model, x, names, n_views=4, seed=0)
    reported = {l.name: l.rel_error for l in t.report.layers if l.solver != "-"}
    assert set(recomputed) == set(reported) and reported
    for name in reported:
        assert recomputed[name] == pytest.approx(reported[name], rel=1e-4), name


def test_traces_in_a_batch_are_bitwise_the_traces_built_alone():
    model, xs = _resnet(2), _x(3, seed=5)
    batch = trace_batch(model, xs, 0.8, schedule="linear", **OPTS)
    alone = trace_batch(model, xs[2:], 0.8, schedule="linear", **OPTS)[0]
    for (name, a), b in zip(batch[2].model.named_parameters(), alone.model.parameters()):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------- batch-norm re-estimation
def test_reestimate_batchnorm_holds_the_exact_statistics_of_its_inputs():
    model = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _x(10, seed=9)
    out = reestimate_batchnorm(model, x)
    assert not out.training and out is not model
    bn = next(m for m in out.modules() if isinstance(m, nn.BatchNorm2d))
    first_conv = next(m for m in out.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        h = first_conv(x)
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, h.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6)
    for k, v in model.state_dict().items():                 # the model itself is untouched
        assert torch.equal(v, before[k]), k
    plain = nn.Sequential(nn.Conv2d(3, 2, 3)).eval()
    assert reestimate_batchnorm(plain, x) is plain


def test_trace_report_agreement_after_bn_matches_a_recomputation():
    model, x = _resnet(), _x(seed=4)
    t = trace_batch(model, x, 0.5, **OPTS)[0]
    from xailab.papers.spade.augment import augment
    views = augment(x, 4, seed=0)
    again = reestimate_batchnorm(t.model, views)
    with torch.no_grad():
        assert t.report.agrees_after_bn == bool(again(x).argmax(1) == model(x).argmax(1))


# --------------------------------------------------------------------------------- facets and the oracle
def test_contributions_add_up_to_the_logit():
    model, x = _resnet(), _x(5, seed=2)
    c = fa.contributions(model, x, 1)
    with torch.no_grad():
        logit = model(x)[:, 1]
    torch.testing.assert_close(c.sum(1) + model.classifier.fc.bias[1], logit, rtol=1e-5, atol=1e-5)
    assert fa.head(model) == ("classifier.fc", model.classifier.fc)
    with pytest.raises(ValueError, match="nn.Linear"):
        fa.head(nn.Sequential(nn.Conv2d(3, 2, 3)))


class _TwoFacets(nn.Module):
    """Head inputs = the image's mean in channel 0 (the 'object'), channel 1 (the 'trigger') and channel 2."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 1.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(x), 1))


def test_facet_channels_share_and_oracle_on_a_known_unit():
    model = _TwoFacets().eval()
    clean = torch.zeros(4, 3, 4, 4)
    clean[:, 0] = 1.0                                         # the object: channel 0 only
    triggered = torch.zeros(4, 3, 4, 4)
    triggered[:, 1] = 1.0                                     # the trigger: channel 1 only
    triggered[:, 0] = 0.2
    trig = fa.facet_channels(model, triggered, clean, 0)
    assert trig.tolist() == [False, True, False]
    share = fa.facet_share(model, triggered, 0, trig)
    torch.testing.assert_close(share, torch.full((4,), 2.0 / 2.2))
    torch.testing.assert_close(fa.facet_share(model, triggered, 0, ~trig), 1 - share)
    oracle = fa.oracle_head(model, 0, trig)
    assert oracle.fc.weight[0].tolist() == [0.0, 2.0, 0.0]
    assert oracle.fc.weight[1].tolist() == [0.0, 0.0, 1.0] and model.fc.weight[0, 0] == 1.0   # only row 0, copy
    assert fa.class_unit_sparsity(oracle, 0) == pytest.approx(2 / 3) and fa.class_unit_sparsity(model, 0) == 0


# --------------------------------------------------------------------------------- Sparse-FC
def _features_problem(n=400, d=12, k=3, seed=0):
    """Images whose pooled channel means are Gaussian features; classes depend on 3 of the 12 features."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=g)
    y = (feats[:, :3] * torch.tensor([2.0, -1.5, 1.0])).argmax(1) % k
    x = feats[:, :, None, None].expand(n, d, 2, 2).contiguous()
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(d, k))
    with torch.no_grad():                                     # a dense head: the least-squares fit of one-hot
        Y = F.one_hot(y, k).float()
        A = torch.cat([feats, torch.ones(n, 1)], 1)
        sol = torch.linalg.lstsq(A, Y).solution
        model[2].weight.copy_(sol[:-1].T)
        model[2].bias.copy_(sol[-1])
    return model.eval(), x, y


def test_sparse_head_is_sparse_within_the_tolerance_and_keeps_the_body():
    model, x, y = _features_problem()
    res = fa.sparse_head(model, x[:300], y[:300], x[300:], y[300:], target=0, tolerance=0.05)
    assert res.accuracy >= res.dense_accuracy - 0.05
    assert res.sparsity > 0.3 and 0 <= res.unit_sparsity <= 1
    head = res.model[2]
    assert float((head.weight == 0).float().mean()) == pytest.approx(res.sparsity)
    with torch.no_grad():                                     # the refitted model's accuracy is the one reported
        acc = float((res.model(x[300:]).argmax(1) == y[300:]).float().mean())
    assert acc == pytest.approx(res.accuracy)
    assert model[2].weight.ne(0).all()                        # the input model is untouched
    with pytest.raises(ValueError, match="train_y"):
        fa.sparse_head(model, x, y + 5, x, y)
    with pytest.raises(ValueError, match="tolerance"):
        fa.sparse_head(model, x, y, x, y, tolerance=1.5)


def test_fista_solves_the_elastic_net_logistic_problem_as_sklearn_does():
    linear_model = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(200, 6, generator=g, dtype=torch.float64)
    y = (Z[:, 0] - Z[:, 1] + 0.5 * torch.randn(200, generator=g, dtype=torch.float64) > 0).long() \
        + (Z[:, 2] > 1).long()
    Y = F.one_hot(y, 3).double()
    lam, l1 = 0.02, 0.7
    L = 0.5 * float(torch.linalg.eigvalsh(Z.T @ Z / len(Z))[-1])
    W, b = fa._fista(Z, Y, torch.zeros(3, 6, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                     lam, l1, L, 5000)
    ref = linear_model.LogisticRegression(C=1 / (len(Z) * lam), l1_ratio=l1, solver="saga", tol=1e-10,
                                          max_iter=100000).fit(Z.numpy(), y.numpy())
    # both centre-free parametrisations of a softmax are equivalent up to a shift per feature across classes
    centred = lambda w: w - w.mean(0, keepdims=True)
    np.testing.assert_allclose(centred(W.numpy()), centred(ref.coef_), atol=2e-3)


# --------------------------------------------------------------------------------- trigger similarity
def test_trigger_similarity_finds_a_stamped_pattern():
    size = 6
    pattern, alpha = trigger_patch(0, size, 3)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 20, 20, generator=g)
    images[0, :, 7:7 + size, 9:9 + size] = alpha * pattern + (1 - alpha) * images[0, :, 7:7 + size, 9:9 + size]
    sim = fa.trigger_similarity(images, [0], size)
    assert sim[0] == pytest.approx(1.0, abs=1e-5) and sim[1] < 0.9
    assert fa.trigger_similarity(images, [0, 1], size)[0] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------- trace overlap
def test_overlap_matrix_and_similarity_contrast():
    model, xs = _resnet(), _x(3, seed=8)
    traces = trace_batch(model, xs, 0.7, schedule="linear", **OPTS)
    names = ["features.stage2.block1.conv2", "classifier.fc"]
    J = ev.overlap_matrix(traces, names)
    assert J.shape == (3, 3) and np.allclose(np.diag(J), 1) and np.allclose(J, J.T)
    by_layer = []
    for n in names:
        ka, kb = (traces[i].model.get_submodule(n).weight != 0 for i in (0, 1))
        by_layer.append(float((ka & kb).sum() / (ka | kb).sum()))
    assert J[0, 1] == pytest.approx(np.mean(by_layer))
    overlaps = np.array([[1, .9, .2, .3], [.9, 1, .1, .2], [.2, .1, 1, .8], [.3, .2, .8, 1]])
    similar = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], bool)
    idx = claims.image_resamples(4, id="SPADE-14", n_boot=50)
    d, boot = ev.similarity_contrast(overlaps, similar, idx)
    assert d == pytest.approx((0.9 + 0.8) / 2 - (0.2 + 0.3 + 0.1 + 0.2) / 4)
    assert 0 < len(boot) <= 50 and np.isfinite(boot).all()


def test_image_resamples_are_seeded_by_notebook_seed_and_id():
    claims.start(quick=True, seed=3)
    a = claims.image_resamples(10, id="SPADE-1", n_boot=20)
    assert a.shape == (20, 10) and a.min() >= 0 and a.max() < 10
    assert np.array_equal(a, claims.image_resamples(10, id="SPADE-1", n_boot=20))
    assert not np.array_equal(a, claims.image_resamples(10, id="SPADE-2", n_boot=20))
