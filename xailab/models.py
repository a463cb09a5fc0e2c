"""Small models for the workbook: a plain CNN, a small ResNet and an MLP.

Conventions every model here follows, because the attribution methods rely on them:

- every activation is its own ``nn.ReLU`` module, used exactly once per forward pass (Captum's
  DeepLift and LRP attach state to the module, Guided Backprop patches module ReLUs);
- every ``Conv2d`` / ``Linear`` keeps its bias (FullGrad sums the bias-gradients);
- no ``nn.Flatten`` module: flattening happens in ``forward`` because Captum's LRP has no rule for
  ``Flatten`` and refuses models that contain one;
- initialisation is deterministic given ``seed`` and never changes the global RNG (the
  constructor runs inside ``torch.random.fork_rng``);
- layers have readable names (``features.conv1``, ``classifier.fc2`` ...), so that a Grad-CAM
  layer or a randomisation cascade can be named.

Models are returned in ``nn.Module``'s default train mode; ``xailab.train.fit`` returns eval mode.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from xailab.utils import check_positive, forked_rng

__all__ = ["SmallCNN", "SmallResNet", "MLP", "make_model", "MODELS", "ModelFactory", "warm_up_batchnorm"]


class SmallCNN(nn.Module):
    """``depth`` blocks ``conv3x3 -> [BatchNorm] -> ReLU -> MaxPool2``, then ``fc1 -> ReLU -> fc2``.

    ``negative_slope > 0`` makes every ReLU a leaky one (``nn.LeakyReLU``, still named ``relu*``): a unit
    whose pre-activation is negative on every image still passes gradient, so no layer can die for good
    early in training (04's recipe; a plain ReLU network there lost every unit of its last convolution).

    Block ``i`` (1-based) has ``width * 2**(i-1)`` channels; the hidden layer of the head has
    ``4 * width`` units. Each pooling halves the spatial size (floor), so ``input_size // 2**depth``
    must stay >= 1: an 8-px digit allows ``depth <= 3``.

    Layer names: ``features.conv{i}``, ``features.bn{i}`` (with ``batch_norm``), ``features.relu{i}``,
    ``features.pool{i}``, ``classifier.fc1``, ``classifier.relu``, ``classifier.fc2``;
    :attr:`last_conv` is the last convolution (Grad-CAM's default layer).

    ``output_scale=True`` multiplies the logits by a learned ``exp(t)`` (``t`` starts at 0): a spectrally
    normalised network otherwise cannot make confident predictions and fits slowly; a positive scalar
    scales every gradient-based map by the same factor, so normalised comparisons of maps do not see it.

    ``spectral_norm=True`` wraps every conv and linear weight with
    ``torch.nn.utils.parametrizations.spectral_norm``. For a convolution that parametrisation
    divides by the largest singular value of the weight *reshaped to a matrix*
    ``(out_channels, in_channels*3*3)``, not by the operator norm of the convolution itself; the
    two differ by a factor that depends on the kernel size (at most 3 for a 3x3 kernel here). The
    power iteration updates its estimate at every forward pass in train mode. Captum's LRP cannot
    run on a spectral-normed model (it finds the parametrisation submodules and has no rule for
    them); use ``spectral_norm=False`` for LRP.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 4, width: int = 16, depth: int = 3,
                 input_size: int = 32, batch_norm: bool = False, spectral_norm: bool = False,
                 output_scale: bool = False, negative_slope: float = 0.0, seed: int = 0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("width", width), ("depth", depth), ("input_size", input_size)):
            check_positive(name, value, integer=True)
        if not 0.0 <= float(negative_slope) < 1.0:
            raise ValueError(f"negative_slope must lie in [0, 1) (0: plain ReLU), got {negative_slope!r}")
        final = input_size // 2 ** depth
        if final < 1:
            max_depth = max(int(input_size).bit_length() - 1, 0)
            raise ValueError(f"depth={depth} halves an input of {input_size} px below 1 px; "
                             f"use depth <= {max_depth} for input_size={input_size}")
        self.in_channels, self.num_classes, self.input_size = in_channels, num_classes, input_size
        self.batch_norm, self.spectral_norm = bool(batch_norm), bool(spectral_norm)
        self.negative_slope = float(negative_slope)
        act = (lambda: nn.LeakyReLU(self.negative_slope)) if self.negative_slope else nn.ReLU
        # a learned temperature exp(t) on the logits: lets a spectrally normalised network reach confident outputs,
        # and changes no map's ranking or normalised distance (every map of the network scales by it)
        self.log_scale = nn.Parameter(torch.zeros(())) if output_scale else None
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        with forked_rng(seed):
            layers: "OrderedDict[str, nn.Module]" = OrderedDict()
            c_in = in_channels
            for i in range(1, depth + 1):
                c_out = width * 2 ** (i - 1)
                layers[f"conv{i}"] = wrap(nn.Conv2d(c_in, c_out, 3, padding=1, bias=True))
                if batch_norm:
                    layers[f"bn{i}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{i}"] = act()
                layers[f"pool{i}"] = nn.MaxPool2d(2)
                c_in = c_out
            self.features = nn.Sequential(layers)
            hidden = 4 * width
            self.classifier = nn.Sequential(OrderedDict([
                ("fc1", wrap(nn.Linear(c_in * final * final, hidden))),
                ("relu", act()),
                ("fc2", wrap(nn.Linear(hidden, num_classes))),
            ]))

    @property
    def last_conv(self) -> nn.Conv2d:
        """The last convolution of ``features`` (the usual Grad-CAM layer)."""
        return [m for m in self.features if isinstance(m, nn.Conv2d)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(torch.flatten(self.features(x), 1))
        return logits if self.log_scale is None else logits * self.log_scale.exp()


class BasicBlock(nn.Module):
    """``conv-bn-relu1-conv-bn`` plus a shortcut (identity, or 1x1 conv + BN when the shape
    changes), then ``relu2``. The two ReLUs are separate modules.

    The residual addition is a plain ``+`` in ``forward``. DeepLift handles it (addition is
    linear, gradients pass to both branches; its summation-to-delta holds, see the tests). Captum's
    LRP runs too, but it has no rule for the addition itself: relevance reaching the sum is passed
    to both branches by the gradient, so LRP's conservation does not hold on this model (on a
    random-weight SmallResNet the input relevances summed to -136 and 685 for outputs near 0.07)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=True)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=True)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = None  # identity; not an empty module, which Captum's LRP would reject
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c_in, c_out, 1, stride=stride, bias=True)),
                ("bn", nn.BatchNorm2d(c_out)),
            ]))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu2(out + skip)


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet for 32-px inputs: a 3x3 stem (conv-bn-relu, then a 2x2 max-pool with
    ``stem_pool=True``), then one stage per entry of ``blocks`` with ``width * 2**s`` channels (stride 2
    from the second stage on), global average pooling and a linear head.

    Names: ``features.stem_conv``, ``features.stage{s}.block{b}.conv1`` ..., ``pool``,
    ``classifier.fc``; :attr:`last_conv` is the last block's ``conv2``. See :class:`BasicBlock`
    for what Captum's DeepLift / LRP make of the residual addition.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16,
                 blocks: Sequence[int] = (1, 1, 1), stem_pool: bool = False, seed: int = 0):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("width", width)):
            check_positive(name, value, integer=True)
        blocks = tuple(blocks)
        if not blocks or any(int(b) != b or b < 1 for b in blocks):
            raise ValueError(f"blocks must be a non-empty sequence of positive integers, got {blocks!r}")
        self.in_channels, self.num_classes = in_channels, num_classes
        with forked_rng(seed):
            layers: "OrderedDict[str, nn.Module]" = OrderedDict([
                ("stem_conv", nn.Conv2d(in_channels, width, 3, padding=1, bias=True)),
                ("stem_bn", nn.BatchNorm2d(width)),
                ("stem_relu", nn.ReLU()),
            ] + ([("stem_pool", nn.MaxPool2d(2))] if stem_pool else []))
            c_in = width
            for s, n in enumerate(blocks):
                c_out = width * 2 ** s
                stage = OrderedDict()
                for b in range(n):
                    stride = 2 if (s > 0 and b == 0) else 1
                    stage[f"block{b + 1}"] = BasicBlock(c_in, c_out, stride)
                    c_in = c_out
                layers[f"stage{s + 1}"] = nn.Sequential(stage)
            self.features = nn.Sequential(layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(OrderedDict([("fc", nn.Linear(c_in, num_classes))]))

    @property
    def last_conv(self) -> nn.Conv2d:
        """The last 3x3 convolution of the last block (the usual Grad-CAM layer)."""
        return self.features[-1][-1].conv2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    """``Linear -> ReLU`` for each entry of ``hidden``, then a linear output layer.

    Names: ``features.fc{i}``, ``features.relu{i}``, ``classifier.fc``. Input ``(N, in_features)``,
    or a batch of any shape with ``in_features`` values per sample (images are flattened).
    """

    def __init__(self, in_features: int = 16, num_classes: int = 2, hidden: Sequence[int] = (64, 64),
                 seed: int = 0):
        super().__init__()
        check_positive("in_features", in_features, integer=True)
        check_positive("num_classes", num_classes, integer=True)
        hidden = tuple(hidden)
        for h in hidden:
            check_positive("hidden", h, integer=True)
        self.in_features, self.num_classes = in_features, num_classes
        with forked_rng(seed):
            layers: "OrderedDict[str, nn.Module]" = OrderedDict()
            d = in_features
            for i, h in enumerate(hidden, 1):
                layers[f"fc{i}"] = nn.Linear(d, h)
                layers[f"relu{i}"] = nn.ReLU()
                d = h
            self.features = nn.Sequential(layers)
            self.classifier = nn.Sequential(OrderedDict([("fc", nn.Linear(d, num_classes))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(torch.flatten(x, 1)))


MODELS = {"cnn": SmallCNN, "resnet": SmallResNet, "mlp": MLP}


@torch.no_grad()
def warm_up_batchnorm(model: nn.Module, x: torch.Tensor, passes: int = 3) -> nn.Module:
    """Give an untrained model's batch-norms non-trivial running statistics (``passes`` train-mode
    forward passes on ``x``, no gradients), then return it in eval mode."""
    check_positive("passes", passes, integer=True)
    model.train()
    for _ in range(int(passes)):
        model(x)
    return model.eval()


def make_model(name: str, **kw) -> nn.Module:
    """Build a model by name: ``"cnn"`` (:class:`SmallCNN`), ``"resnet"`` (:class:`SmallResNet`)
    or ``"mlp"`` (:class:`MLP`); keyword arguments go to its constructor."""
    try:
        cls = MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}") from None
    return cls(**kw)


class ModelFactory:
    """A ``model_fn`` that pickles (for process pools and clusters): ``ModelFactory("cnn", width=8)(seed)`` is
    ``make_model("cnn", width=8, seed=seed)``, a fresh untrained model for every seed."""

    def __init__(self, name: str, **kw):
        if name not in MODELS:
            raise ValueError(f"name must be one of {sorted(MODELS)}, got {name!r}")
        self.name, self.kw = name, kw

    def __call__(self, seed: int) -> nn.Module:
        return make_model(self.name, seed=seed, **self.kw)

    def __repr__(self) -> str:
        args = ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.kw.items()])
        return f"ModelFactory({args})"
