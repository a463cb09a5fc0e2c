"""xailab.models: shapes, deterministic init, one use per ReLU module, names, Captum compatibility."""
import pytest
import torch
from torch import nn

from xailab.models import MLP, SmallCNN, SmallResNet, make_model

CASES = [
    ("cnn", dict(), (3, 32, 32), 4),
    ("cnn", dict(in_channels=1, num_classes=10, input_size=8, batch_norm=True), (1, 8, 8), 10),
    ("cnn", dict(spectral_norm=True, depth=2, width=8), (3, 32, 32), 4),
    ("resnet", dict(blocks=(1, 2)), (3, 32, 32), 10),
    ("mlp", dict(hidden=(8, 8, 8)), (16,), 2),
]


@pytest.mark.parametrize("name,kw,shape,classes", CASES)
def test_output_shape_and_rng_untouched(name, kw, shape, classes):
    state = torch.random.get_rng_state()
    model = make_model(name, **kw)
    assert torch.equal(state, torch.random.get_rng_state()), "constructor changed the global RNG"
    assert model.training  # nn.Module default
    out = model(torch.rand(5, *shape))
    assert out.shape == (5, classes)


@pytest.mark.parametrize("name,kw,shape,classes", CASES)
def test_same_seed_same_params_other_seed_differs(name, kw, shape, classes):
    a, b, c = (make_model(name, seed=s, **kw) for s in (3, 3, 4))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


@pytest.mark.parametrize("name,kw,shape,classes", CASES)
def test_every_relu_is_a_module_used_once(name, kw, shape, classes):
    model = make_model(name, **kw)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus
    calls = {id(m): 0 for m in relus}
    handles = [m.register_forward_hook(lambda mod, i, o: calls.__setitem__(id(mod), calls[id(mod)] + 1))
               for m in relus]
    model(torch.rand(2, *shape))
    for h in handles:
        h.remove()
    assert set(calls.values()) == {1}
    # and the activations really are these modules: with the ReLUs replaced by identities the
    # network becomes (piecewise-)linear everywhere, so its output changes
    x = torch.rand(2, *shape)
    before = model.eval()(x)
    for m in relus:
        m.forward = lambda t: t
    assert not torch.allclose(before, model(x))


def test_biases_kept_and_readable_names():
    model = SmallCNN(batch_norm=True)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.bias is not None
    names = dict(model.named_modules())
    for n in ("features.conv1", "features.bn1", "features.relu3", "features.pool3", "classifier.fc1",
              "classifier.fc2"):
        assert n in names
    assert model.last_conv is names["features.conv3"]
    res = SmallResNet()
    assert res.last_conv is dict(res.named_modules())["features.stage3.block1.conv2"]


def test_spectral_norm_bounds_weight_matrices():
    model = SmallCNN(spectral_norm=True, width=8, depth=2)
    with torch.no_grad():
        for _ in range(20):  # power iterations run in train mode
            model(torch.rand(4, 3, 32, 32))
        model.eval()
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                sigma = float(torch.linalg.matrix_norm(m.weight.flatten(1), ord=2))
                assert sigma == pytest.approx(1.0, abs=0.05)


def test_depth_too_large_for_input_is_a_clear_error():
    SmallCNN(in_channels=1, input_size=8, depth=3)
    with pytest.raises(ValueError, match="depth"):
        SmallCNN(in_channels=1, input_size=8, depth=4)
    with pytest.raises(ValueError, match="name"):
        make_model("vgg")
    with pytest.raises(ValueError, match="width"):
        SmallCNN(width=0)
    with pytest.raises(ValueError, match="negative_slope"):
        SmallCNN(negative_slope=1.0)


def test_leaky_cnn_passes_gradient_where_every_unit_is_negative():
    """04's recipe: with negative_slope > 0 a unit below zero on every input still has a gradient (a plain
    ReLU network whose last convolution is negative everywhere has none, and cannot recover)."""
    x = torch.rand(4, 3, 32, 32)
    for slope, alive in ((0.0, False), (0.01, True)):
        net = SmallCNN(width=4, negative_slope=slope, seed=0)
        assert all(type(m) is (nn.LeakyReLU if slope else nn.ReLU) for n, m in net.named_modules() if "relu" in n)
        with torch.no_grad():
            net.features.conv3.bias.fill_(-1e3)   # the last convolution dead on every image
        net(x).sum().backward()
        assert bool(net.features.conv3.weight.grad.abs().sum() > 0) == alive
    with pytest.raises(ValueError, match="blocks"):
        SmallResNet(blocks=())


@pytest.mark.parametrize("model,shape", [(SmallCNN(batch_norm=True), (3, 32, 32)),
                                         (SmallResNet(), (3, 32, 32)), (MLP(), (16,))])
def test_captum_deeplift_and_lrp_run(model, shape):
    captum = pytest.importorskip("captum.attr")
    model.eval()
    x = torch.rand(2, *shape)
    dl = captum.DeepLift(model).attribute(x, target=1)
    assert dl.shape == x.shape
    if not any(isinstance(m, nn.MaxPool2d) for m in model.modules()):
        # summation-to-delta against the zero baseline holds for ReLU/BN/residual nets (Captum's
        # max-pool rule only approximates it): the residual addition is handled correctly
        with torch.no_grad():
            delta = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
        assert torch.allclose(dl.detach().flatten(1).sum(1), delta, atol=1e-4, rtol=1e-3)
    lrp = captum.LRP(model).attribute(x, target=1)
    assert lrp.shape == x.shape and torch.isfinite(lrp).all()
