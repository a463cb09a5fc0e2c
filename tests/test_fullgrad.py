"""FullGrad: completeness of the decomposition, aggregation, BN folding, errors, no side effects."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xailab.attribution import fullgrad as fgm
from xailab.attribution.fullgrad import fullgrad, simple_fullgrad, smooth_fullgrad
from xailab.models import MLP, SmallCNN, SmallResNet


def _warm(model: nn.Module, x: torch.Tensor, seed: int = 0) -> nn.Module:
    """Give batch-norms non-trivial running statistics and affine parameters, then eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.5
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
        model.train()
        for _ in range(3):
            model(x + 0.5 * torch.randn(x.shape, generator=g, dtype=x.dtype) + 0.2)
    return model.eval()


def _model(kind: str, seed: int) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + seed)
    if kind == "mlp":
        return MLP(in_features=16, num_classes=3, seed=seed).double().eval(), \
            torch.randn(6, 16, generator=g, dtype=torch.float64)
    x = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64)
    model = {"cnn": lambda: SmallCNN(num_classes=4, width=8, seed=seed),
             "cnn_bn": lambda: SmallCNN(num_classes=4, width=8, batch_norm=True, seed=seed),
             "resnet": lambda: SmallResNet(num_classes=4, width=8, seed=seed)}[kind]().double()
    return _warm(model, x, seed), x


@pytest.mark.parametrize("kind", ["cnn", "cnn_bn", "resnet", "mlp"])
@pytest.mark.parametrize("seed", [0, 1])
def test_completeness_holds_and_input_gradient_alone_does_not(kind, seed):
    model, x = _model(kind, seed)
    for target in (0, torch.arange(x.shape[0]) % 3):
        gap = fgm.decomposition_gap(model, x, target)
        assert gap.shape == (x.shape[0],)
        assert gap.max() <= 1e-4, f"{kind}: relative completeness gap {gap.max():.3g}"
        fg = fgm.full_gradients(model, x, target)
        input_only = (fg.input_share() - fg.output).abs() / fg.output.abs()
        assert input_only.max() > 1e-2, "biases carry part of the output: input x gradient alone is incomplete"


def test_completeness_in_float32_on_cnn_with_batchnorm():
    model, x = _model("cnn_bn", 3)
    model, x = model.float(), x.float()
    assert fgm.decomposition_gap(model, x, 1).max() <= 1e-4


def test_torchvision_resnet_with_reused_inplace_relus():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=5).double()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = _warm(model, x)
    assert fgm.decomposition_gap(model, x, [1, 4]).max() <= 1e-6
    fg = fgm.full_gradients(model, x, 1)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(fg.bias) == len(bns) + 1          # every conv (no bias) + its BN, and the fc


class _Reordered(nn.Module):
    """Modules defined in the opposite order of use, one of them called twice (shared weights)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.head = nn.Linear(6 * 4 * 4, 3)
        self.bn = nn.BatchNorm2d(6)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.stem = nn.Conv2d(2, 6, 3, padding=1)
        self.relu1, self.relu2, self.pool = nn.ReLU(), nn.LeakyReLU(0.1), nn.AvgPool2d(2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=g))
            self.bn.running_mean.copy_(0.2 * torch.randn(6, generator=g))
            self.bn.running_var.copy_(0.5 + torch.rand(6, generator=g))

    def forward(self, x):
        h = self.relu1(self.stem(x))
        h = self.relu2(self.bn(self.shared(h))) + h
        h = self.pool(self.shared(h))
        return self.head(h.flatten(1))


def test_modules_matched_by_identity_not_definition_order():
    model = _Reordered().double().eval()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fg = fgm.full_gradients(model, x, 2)
    assert list(fg.bias) == ["stem", "shared#0", "shared#1", "head"]   # call order, BN merged
    assert fg.bias["stem"].shape == (3, 6, 8, 8) and fg.bias["shared#1"].shape == (3, 6, 8, 8)
    assert fgm.decomposition_gap(model, x, 2).max() <= 1e-10
    unmerged = fgm.full_gradients(model, x, 2, merge_batchnorm=False)
    assert list(unmerged.bias) == ["stem", "shared#0", "bn", "shared#1", "head"]
    assert torch.allclose(unmerged.total(), fg.total())


def test_model_is_left_untouched_even_on_error():
    model, x = _model("cnn_bn", 0)
    frozen = next(model.features.parameters())
    frozen.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fullgrad(model, x, 1)
    with pytest.raises(ValueError, match="target"):
        fgm.full_gradients(model, x, 9)
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m.training
    assert not frozen.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_clear_errors():
    nobias = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(),
                           nn.Linear(4 * 6 * 6, 2, bias=False)).eval()
    with pytest.raises(ValueError, match="no bias-carrying layers"):
        fgm.full_gradients(nobias, torch.rand(1, 3, 8, 8), 0)
    model, x = _model("cnn_bn", 0)
    with pytest.raises(ValueError, match="train mode"):
        fgm.full_gradients(model.train(), x, 0)
    model.eval()
    mixing = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2)).eval()
    with pytest.raises(ValueError, match="LayerNorm"):
        fgm.decomposition_gap(mixing, torch.randn(3, 4), 0)
    # measured on request, and then visibly wrong rather than silently "complete"
    assert fgm.decomposition_gap(mixing, torch.randn(3, 4) + 2, 0, strict=False).max() > 1e-3
    stats_free = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False),
                               nn.Flatten(), nn.Linear(2 * 4 * 4, 2)).eval()
    with pytest.raises(ValueError, match="running statistics"):
        fgm.full_gradients(stats_free, torch.rand(2, 1, 6, 6), 0)
    with pytest.raises(ValueError, match="post"):
        fullgrad(model, x, 0, post="squared")


@pytest.mark.parametrize("post", fgm.POSTS)
def test_channel_sum_before_upsampling_equals_per_channel_upsampling(post):
    model, x = _model("resnet", 0)
    fg = fgm.full_gradients(model, x, 2)
    ours = fgm.aggregate(fg, x.shape, post=post)
    naive = 0
    for term in [fg.input] + list(fg.bias.values()):
        if term.ndim != 4:
            continue
        p = {"abs": term.abs(), "signed": term, "positive": term.clamp_min(0),
             "negative": (-term).clamp_min(0)}[post]
        flat = p.flatten(1)
        if post == "signed":
            p = p / flat.abs().amax(1).view(-1, 1, 1, 1)
        else:
            lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
            p = (p - lo) / (hi - lo)
        if p.shape[-2:] != x.shape[-2:]:
            p = F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False)
        naive = naive + p.sum(1, keepdim=True)
    assert ours.shape == (4, 1, 32, 32)
    torch.testing.assert_close(ours, naive, rtol=1e-10, atol=1e-10)


def test_postprocess_choices_relate_as_they_should():
    term = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    pos = fgm.postprocess(term, "positive", "none")
    neg = fgm.postprocess(term, "negative", "none")
    torch.testing.assert_close(pos - neg, fgm.postprocess(term, "signed", "none"))
    torch.testing.assert_close(pos + neg, fgm.postprocess(term, "abs", "none"))
    a = fgm.postprocess(term, "abs")                     # min-max per layer, then channel sum
    assert a.min() >= 0 and a.max() <= term.shape[1]
    s = fgm.postprocess(term[:, :1], "signed")           # one channel: sign kept, zero stays zero
    assert torch.equal(torch.sign(s), torch.sign(term[:, :1]))
    assert torch.allclose(s.flatten(1).abs().amax(1), torch.ones(3, dtype=torch.float64))


def test_folding_batchnorm_leaves_the_saliency_and_the_total_unchanged():
    model, x = _model("resnet", 1)
    folded = fgm.fold_batchnorm(model, x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())      # original untouched
    torch.testing.assert_close(folded(x), model(x))
    a, b = fgm.full_gradients(model, x, 3), fgm.full_gradients(folded, x, 3)
    assert list(a.bias) == list(b.bias)
    torch.testing.assert_close(a.total(), b.total())
    for post in fgm.POSTS:
        assert (fullgrad(model, x, 3, post=post) - fullgrad(folded, x, 3, post=post)).abs().max() <= 1e-5
    # the authors' separate conv and BN terms are not invariant: conv biases before BN matter
    sep = fullgrad(model, x, 3, merge_batchnorm=False)
    assert (sep - fullgrad(folded, x, 3, merge_batchnorm=False)).abs().max() > 1e-3
    # without an example, pairs are read from the registration order: same result here
    torch.testing.assert_close(fgm.fold_batchnorm(model)(x), folded(x))


def test_saliency_shapes_and_variants():
    model, x = _model("cnn_bn", 2)
    full = fullgrad(model, x, 1)
    assert full.shape == (4, 1, 32, 32) and full.min() >= 0
    maps = fgm.layer_maps(fgm.full_gradients(model, x, 1), x.shape)
    assert set(maps) == {"input", "features.conv1", "features.conv2", "features.conv3"}
    torch.testing.assert_close(sum(maps.values()), full)
    simple = simple_fullgrad(model, x, 1)
    assert simple.shape == full.shape and not torch.allclose(simple, full)
    one = smooth_fullgrad(model, x, 1, n_samples=6, seed=3)
    assert one.shape == full.shape
    torch.testing.assert_close(one, smooth_fullgrad(model, x, 1, n_samples=6, seed=3, batch_size=5))
    assert not torch.allclose(one, smooth_fullgrad(model, x, 1, n_samples=6, seed=4))
    tiny = smooth_fullgrad(model, x, 1, sigma=1e-9, n_samples=2, average="terms")
    torch.testing.assert_close(tiny, full, rtol=1e-5, atol=1e-5)
    mlp, xt = _model("mlp", 0)
    assert fullgrad(mlp, xt, 0).shape == xt.shape


def test_registered_in_the_attribution_registry():
    from xailab import attribution

    model, x = _model("cnn", 0)
    for name in ("fullgrad", "simple_fullgrad", "smooth_fullgrad"):
        out = attribution.attribute(model, x, 1, method=name)
        assert out.shape == (4, 1, 32, 32)
    torch.testing.assert_close(attribution.attribute(model, x, 1, method="fullgrad"), fullgrad(model, x, 1))


def test_smooth_fullgrad_averages_agree_for_one_noisy_copy():
    # one noisy copy: averaging maps or terms is the same map, so both paths see the same noise
    model, x = _model("cnn", 1)
    for post in ("abs", "signed"):
        torch.testing.assert_close(smooth_fullgrad(model, x, 2, n_samples=1, seed=5, post=post),
                                   smooth_fullgrad(model, x, 2, n_samples=1, seed=5, post=post, average="terms"))



@pytest.mark.parametrize("act", [nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Softplus, nn.ELU, nn.Hardswish])
def test_implicit_biases_make_smooth_activations_complete(act):
    """The paper's implicit biases sigma(z) - sigma'(z) z: completeness for any element-wise activation."""
    g = torch.Generator().manual_seed(3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cnn = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), act(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                            nn.BatchNorm2d(8), act(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), act(),
                            nn.Linear(16, 3))
        mlp = nn.Sequential(nn.Linear(10, 32), act(), nn.Linear(32, 32), act(), nn.Linear(32, 4))
    for net, x in ((cnn, torch.randn(6, 3, 8, 8, generator=g)), (mlp, torch.randn(6, 10, generator=g))):
        net.train()
        with torch.no_grad():
            net(x)                                   # non-trivial batch-norm statistics
        net.eval()
        assert fgm.decomposition_gap(net, x, 2).max() <= 1e-4                     # float32, as trained
        assert fgm.decomposition_gap(net.double(), x.double(), 2).max() <= 1e-10
        net.float()
        terms = fgm.full_gradients(net, x, 2)
        implicit = [k for k in terms.bias if k.endswith("(implicit)")]
        assert implicit and all(terms.bias[k].abs().sum() > 0 for k in implicit)
        # without the implicit terms the split is visibly incomplete
        partial = terms.total() - sum(terms.bias[k].flatten(1).sum(1) for k in implicit)
        assert ((partial - terms.output).abs() / terms.output.abs()).max() > 1e-3


def test_relu_networks_have_no_implicit_terms():
    model, x = _model("cnn_bn", 0)
    assert not [k for k in fgm.full_gradients(model, x, 1).bias if "implicit" in k]


def test_perturbation_table_keeps_every_image_for_paired_comparisons():
    from xailab.metrics import pixel_perturbation
    from xailab.papers.fullgrad import perturbation_figure, perturbation_table

    model, x = _model("cnn", 0)
    target = torch.tensor([0, 1, 2, 3])
    maps = {"FullGrad": fullgrad(model, x, target), "Random": torch.rand(4, 1, 32, 32, dtype=x.dtype)}
    fractions = [0.1, 0.5]
    table = perturbation_table(model, x, target, maps, fractions, fills=("image_mean",))
    assert set(table) == {("image_mean", "least"), ("image_mean", "most")}
    for (fill, which), rows in table.items():
        for label, values in rows.items():
            assert values.shape == (len(fractions), len(x))     # (fractions, images), not a mean
            expected = [pixel_perturbation(maps[label], model=model, x=x, target=target, fractions=[f], fill=fill,
                                           most_salient=(which == "most")) for f in fractions]
            torch.testing.assert_close(values, torch.stack(expected).cpu())
    assert len(perturbation_figure(table, fractions, "test").axes) == 2
    least = perturbation_table(model, x, target, maps, fractions, fills=("image_mean",), directions=("least",))
    assert set(least) == {("image_mean", "least")}
    torch.testing.assert_close(least[("image_mean", "least")]["FullGrad"], table[("image_mean", "least")]["FullGrad"])
    with pytest.raises(ValueError, match="directions"):
        perturbation_table(model, x, target, maps, fractions, directions=("lowest",))
