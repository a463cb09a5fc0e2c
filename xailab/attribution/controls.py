"""Model-independent controls: a map that explains nothing (``random``) and one that only sees
the image (``sobel``). A method whose maps look like these is not explaining the model.

Both accept (and ignore) the model, so they fit the ``method(model, x, target)`` signature.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.attribution._core import check_image, check_input, targets_for
from xailab.attribution.registry import register
from xailab.utils import seeded_generator

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@register("random")
def random(model: nn.Module, x: Tensor, target, *, seed: int = 0, batch_size=None) -> Tensor:
    """Uniform noise in [0, 1) shaped like ``x``, from a generator seeded with ``seed``."""
    check_input(x)
    targets_for(target, x)
    g = seeded_generator(seed)
    return torch.rand(x.shape, generator=g, dtype=x.dtype).to(x.device)


@register("sobel")
def sobel(model: nn.Module, x: Tensor, target, *, batch_size=None) -> Tensor:
    """Sobel edge magnitude ``sqrt(gx² + gy²)`` of the grayscale image (channel mean; borders
    replicated), broadcast over the channels so the result is shaped like ``x``."""
    check_image(x, "sobel")
    targets_for(target, x)
    gray = x.detach().mean(1, keepdim=True)
    kx = _SOBEL_X.to(device=x.device, dtype=x.dtype)
    kernels = torch.stack([kx, kx.T])[:, None]  # (2, 1, 3, 3): d/dx and d/dy
    grads = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = grads.pow(2).sum(1, keepdim=True).sqrt()
    return magnitude.expand_as(x).contiguous()
