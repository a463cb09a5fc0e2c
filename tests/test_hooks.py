"""xailab.hooks: hook handles always removed, layers in the order a forward pass calls them."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xailab.hooks import forward_order, hooks_removed, model_device, parameter_layers
from xailab.models import SmallResNet


class Backwards(nn.Module):
    """Modules registered in the opposite order to the one forward calls them in."""

    def __init__(self):
        super().__init__()
        self.late = nn.Linear(3, 2)
        self.early = nn.Linear(4, 3)

    def forward(self, x):
        return self.late(torch.relu(self.early(x)))


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_are_removed_on_errors_too():
    model = Backwards()
    with pytest.raises(RuntimeError, match="boom"):
        with hooks_removed() as handles:
            handles.append(model.early.register_forward_hook(lambda *a: None))
            assert _hooks(model) == 1
            raise RuntimeError("boom")
    assert _hooks(model) == 0


def test_forward_order_follows_the_forward_pass_not_registration():
    model = Backwards()
    calls = forward_order(model, torch.zeros(2, 4))
    assert [c.name for c in calls] == ["early", "late"]
    assert calls[0].input_shape == (2, 4) and calls[0].output_shape == (2, 3)
    assert parameter_layers(model) == ["early", "late"]                    # registration order, reversed
    assert parameter_layers(model, torch.zeros(1, 4)) == ["late", "early"]  # forward order, reversed
    assert _hooks(model) == 0


def test_forward_order_can_refuse_a_layer_used_twice():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert [c.name for c in forward_order(model, torch.zeros(1, 4))] == ["0", "0"]
    with pytest.raises(ValueError, match="more than once"):
        forward_order(model, torch.zeros(1, 4), once=True)
    assert _hooks(model) == 0


def test_model_device():
    assert model_device(SmallResNet(num_classes=2, width=4)) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")
