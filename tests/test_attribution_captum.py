"""Our methods against Captum's counterparts (float64, same rule/steps/noise): ≤ 1e-5 relative error."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerGradCam,
                         NoiseTunnel, Saliency)

from xailab.attribution import METHODS, attribute, captum, ensemble
from xailab.models import SmallCNN, MLP

TOL = 1e-5
pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning")


def rel_err(ours, theirs):
    ours, theirs = ours.detach(), theirs.detach()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30))


@pytest.fixture(scope="module")
def setup():
    model = SmallCNN(in_channels=3, num_classes=5, width=4, depth=2, input_size=16, seed=1).double().eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0  # every sample spans [0, 1]: σ fraction == absolute σ
    return model, x, torch.tensor([0, 1, 2, 4])


@pytest.mark.parametrize("ours,cls,kwargs", [
    ("gradient", Saliency, {"abs": False}),
    ("input_x_gradient", InputXGradient, {}),
    ("guided_backprop", GuidedBackprop, {}),
])
def test_gradient_methods_match_captum(setup, ours, cls, kwargs):
    model, x, t = setup
    theirs = cls(model).attribute(x.clone().requires_grad_(), target=t, **kwargs)
    assert rel_err(attribute(model, x, t, method=ours), theirs) <= TOL


@pytest.mark.parametrize("rule,steps", [("gausslegendre", 64), ("riemann_trapezoid", 20), ("riemann_left", 7)])
def test_integrated_gradients_matches_captum(setup, rule, steps):
    model, x, t = setup
    theirs = IntegratedGradients(model).attribute(x, baselines=0.25, target=t, n_steps=steps, method=rule)
    ours = attribute(model, x, t, method="integrated_gradients", baseline=0.25, steps=steps, rule=rule, batch_size=13)
    if rule == "riemann_trapezoid":
        ours = ours * (steps - 1) / steps  # Captum's trapezoid weights sum to (n-1)/n, ours to 1
    assert rel_err(ours, theirs) <= TOL


def test_grad_cam_and_guided_grad_cam_match_captum(setup):
    model, x, t = setup
    layer = model.features.conv2
    cam = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
    cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    assert rel_err(attribute(model, x, t, method="grad_cam"), cam) <= TOL  # auto = last Conv2d
    guided = GuidedGradCam(model, layer).attribute(x.clone().requires_grad_(), target=t, interpolate_mode="bilinear")
    assert rel_err(attribute(model, x, t, method="guided_grad_cam", layer="features.conv2"), guided) <= TOL
    adapter = captum("LayerGradCam")(model, x, t, layer="features.conv2", relu_attributions=True)
    assert rel_err(adapter, cam) <= TOL
    # any layer method: channels summed, upsampled to one (N, 1, H, W) map
    acts = captum("LayerActivation")(model, x, t, layer="features.conv1")
    assert torch.allclose(acts, model.features.conv1(x).sum(1, keepdim=True))


@pytest.mark.parametrize("base,cls,kwargs", [("gradient", Saliency, {"abs": False}),
                                             ("guided_backprop", GuidedBackprop, {})])
def test_ensembles_match_noise_tunnel_with_the_same_noise(setup, monkeypatch, base, cls, kwargs):
    model, x, t = setup
    samples, sigma = 5, 0.2
    noise = torch.randn(samples, *x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)

    def same_noise(inp, stdev, nt_samples_partition):
        # Captum's layout: each input repeated nt_samples times in a row (sample index fastest)
        assert nt_samples_partition == samples and stdev == pytest.approx(sigma)
        return inp.repeat_interleave(samples, 0) + stdev * noise.transpose(0, 1).reshape(-1, *inp.shape[1:])

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(same_noise))
    ours = ensemble(model, x, t, base=base, sigma=sigma, n_samples=samples, draws=noise, batch_size=7)
    tunnel = NoiseTunnel(cls(model))
    for stat in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        # Captum's stdevs is absolute; ours is a fraction of each sample's range (here exactly 1)
        theirs = tunnel.attribute(x, nt_type=stat, nt_samples=samples, stdevs=sigma * 1.0, target=t, **kwargs)
        assert rel_err(ours[stat], theirs) <= TOL, stat


@pytest.mark.parametrize("name", ["deeplift", "lrp", "occlusion", "lime", "gradient_shap", "kernel_shap"])
def test_registered_captum_methods_run_and_clean_up(name):
    for model, x in [(SmallCNN(width=4, depth=2, input_size=16).eval(), torch.rand(2, 3, 16, 16)),
                     (MLP(in_features=6, hidden=(8,)).eval(), torch.rand(3, 6))]:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        a = METHODS[name].fn(model, x, 1, **({"n_samples": 40} if name in ("lime", "kernel_shap") else {}))
        assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().sum() > 0
        assert all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks
                   and "rule" not in m.__dict__ for m in model.modules())
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_seeded_captum_methods_are_reproducible_and_leave_global_rng():
    model, x = SmallCNN(width=4, depth=2, input_size=16).eval(), torch.rand(2, 3, 16, 16)
    state, np_state = torch.random.get_rng_state(), np.random.get_state()[1].copy()
    a = attribute(model, x, 0, method="gradient_shap", seed=1, sigma=0.1)
    assert torch.equal(a, attribute(model, x, 0, method="gradient_shap", seed=1, sigma=0.1))
    assert torch.equal(state, torch.random.get_rng_state())
    assert (np_state == np.random.get_state()[1]).all()


def test_occlusion_of_linear_model_is_weight_times_input():
    """With 1-px windows and a zero baseline, occlusion of a linear model is exactly w ⊙ x."""
    lin = torch.nn.Linear(5, 2).double().eval()
    x = torch.rand(3, 5, dtype=torch.float64)
    assert torch.allclose(attribute(lin, x, 1, method="occlusion"), x * lin.weight[1])


def test_occlusion_pass_holds_at_most_batch_size_rows():
    """Captum evaluates each perturbation on the whole batch: batch_size bounds ppe * N rows."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 2)

        def forward(self, x):
            seen.append(x.shape[0])
            return self.lin(x)

    x = torch.rand(4, 6)
    attribute(Recorder().eval(), x, 0, method="occlusion", batch_size=8)
    assert max(seen) <= 8 and max(seen) % 4 == 0


def test_adapter_errors():
    with pytest.raises(ValueError, match="unknown Captum attribution class 'Salience'.*Saliency"):
        captum("Salience")
    with pytest.raises(TypeError, match="NoiseTunnel"):
        captum("NoiseTunnel")
    model, x = MLP(in_features=6).eval(), torch.rand(2, 6)
    with pytest.raises(TypeError, match="unexpected option.*steps"):
        captum("Saliency")(model, x, 0, steps=3)
    with pytest.raises(ValueError, match="target must lie"):
        captum("Saliency")(model, x, 7)
    assert torch.allclose(captum("Saliency")(model, x, 1, abs=False), attribute(model, x, 1))
