"""Norms of a network's layers as Bartlett, Foster & Telgarsky (2017) need them.

Exact spectral norms of Linear layers; spectral norms of Conv2d layers *as the linear operator
they compute* on a given input size (power iteration with conv / transposed conv, exact FFT for
circular padding, the dense matrix for checking); (2,1) group norms; the spectral complexity R_A.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xailab.hooks import forward_order
from xailab.utils import preserved_state, seeded_generator

__all__ = ["linear_spectral_norm", "conv_dense_matrix", "conv_spectral_norm", "group_norm_21", "layer_norms",
           "spectral_complexity", "model_spectral_complexity", "margins", "linear_layers", "norms_table"]


def linear_spectral_norm(layer_or_weight) -> float:
    """Exact spectral norm (largest singular value) of a Linear layer's weight or of a matrix."""
    w = layer_or_weight.weight if isinstance(layer_or_weight, nn.Module) else layer_or_weight
    return float(torch.linalg.matrix_norm(w.detach().double(), ord=2))


def _conv_args(conv: nn.Conv2d) -> dict:
    if isinstance(conv.padding, str):
        raise ValueError("conv layers with string padding ('same'/'valid') are not supported; "
                         "give the padding as integers")
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


def _conv_operator(conv: nn.Conv2d, input_size):
    """The layer without bias as a pair of functions (A, A^T) on tensors ``(B, C, H, W)``, float64.

    A pads as the layer does (zeros or its padding mode) and convolves with the layer's stride and
    dilation.  For zero padding A^T is ``conv_transpose2d`` with the output padding that restores
    the input size (a strided conv drops the last rows/columns that no window reaches); for other
    padding modes A^T is obtained by automatic differentiation (a vector-Jacobian product)."""
    h, w = _hw(input_size)
    weight = conv.weight.detach().double()
    a = _conv_args(conv)
    if conv.padding_mode == "zeros":
        def A(x):
            return F.conv2d(x, weight, **a)
        out = A(torch.zeros(1, conv.in_channels, h, w, dtype=torch.float64))
        oh, ow = out.shape[-2:]
        op = []
        for size, o, k, s, p, d in zip((h, w), (oh, ow), conv.kernel_size, a["stride"], a["padding"],
                                       a["dilation"]):
            op.append(size - ((o - 1) * s - 2 * p + d * (k - 1) + 1))

        def AT(y):
            return F.conv_transpose2d(y, weight, stride=a["stride"], padding=a["padding"],
                                      output_padding=tuple(op), groups=a["groups"], dilation=a["dilation"])
        return A, AT
    ph, pw = a["padding"]
    mode = {"circular": "circular", "reflect": "reflect", "replicate": "replicate"}[conv.padding_mode]
    flat = dict(a, padding=0)

    def A(x):
        return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode=mode), weight, **flat)

    def AT(y):
        x0 = torch.zeros(y.shape[0], conv.in_channels, h, w, dtype=torch.float64)
        return torch.func.vjp(A, x0)[1](y)[0]
    return A, AT


def _hw(input_size) -> tuple[int, int]:
    if isinstance(input_size, int):
        return input_size, input_size
    size = tuple(int(s) for s in input_size)
    if len(size) < 2:
        raise ValueError(f"input_size must be an int or (..., H, W), got {input_size!r}")
    return size[-2], size[-1]


def conv_dense_matrix(conv: nn.Conv2d, input_size) -> Tensor:
    """The dense matrix of the layer (bias removed) on inputs of ``input_size``, built by applying
    the layer to every basis input: column j is A e_j.  For checking; size (out numel, in numel)."""
    h, w = _hw(input_size)
    A, _ = _conv_operator(conv, (h, w))
    n = conv.in_channels * h * w
    basis = torch.eye(n, dtype=torch.float64).reshape(n, conv.in_channels, h, w)
    return A(basis).reshape(n, -1).T


def conv_spectral_norm(conv: nn.Conv2d, input_size, *, method: str = "auto", n_iter: int = 2000,
                       tol: float = 1e-12, min_iter: int = 0, seed: int = 0) -> float:
    """Spectral norm of a Conv2d layer as the linear operator it computes on ``input_size`` inputs
    (its padding, padding mode, stride, dilation and groups included; the bias is ignored).

    ``method``: ``"power"`` (power iteration on A^T A with conv / transposed conv, float64, until
    the estimate changes by less than ``tol`` relatively, after at least ``min_iter`` and at most ``n_iter``
    iterations), ``"fft"`` (exact for circular padding,
    stride 1 and an output the size of the input: the operator is block-circulant, so its singular
    values are those of the ``C_out x C_in`` matrices of the kernel's 2-D DFT at each frequency,
    Sedghi et al. 2019), ``"dense"`` (SVD of :func:`conv_dense_matrix`; small layers only) or
    ``"auto"`` (fft when it applies, else power).

    Note: this is the operator norm, not the norm of the reshaped kernel matrix that
    ``torch.nn.utils.spectral_norm`` normalises; the two differ by up to a factor of the kernel size.
    """
    h, w = _hw(input_size)
    fft_ok = (conv.padding_mode == "circular" and conv.stride == (1, 1) and conv.dilation == (1, 1)
              and conv.groups == 1 and all(2 * p == k - 1 for p, k in zip(conv.padding, conv.kernel_size)))
    if method == "auto":
        method = "fft" if fft_ok else "power"
    if method == "fft":
        if not fft_ok:
            raise ValueError("method='fft' needs circular padding, stride 1, dilation 1, groups 1 and "
                             "padding (k-1)/2 (an output the size of the input)")
        return _conv_norm_fft(conv, h, w)
    if method == "dense":
        return float(torch.linalg.matrix_norm(conv_dense_matrix(conv, (h, w)), ord=2))
    if method != "power":
        raise ValueError(f"method must be 'auto', 'power', 'fft' or 'dense', got {method!r}")
    if not 0 <= min_iter <= n_iter:
        raise ValueError(f"min_iter must be in [0, n_iter={n_iter}], got {min_iter}")
    A, AT = _conv_operator(conv, (h, w))
    g = seeded_generator(seed)
    v = torch.randn(1, conv.in_channels, h, w, generator=g, dtype=torch.float64)
    v /= v.norm()
    est = 0.0
    for it in range(n_iter):
        u = AT(A(v))
        norm = u.norm()
        if norm == 0:
            return 0.0
        v = u / norm
        new = math.sqrt(float(norm))  # ||A^T A v|| -> sigma_max^2 for the converged unit v
        if it + 1 >= min_iter and abs(new - est) <= tol * max(new, 1e-300):
            est = new
            break
        est = new
    return float(A(v).norm())


def _conv_norm_fft(conv: nn.Conv2d, h: int, w: int) -> float:
    k = conv.weight.detach().double()  # (out, in, kh, kw); cross-correlation with circular wrap
    kh, kw = k.shape[-2:]
    ph, pw = conv.padding
    # place tap (a, b) at offset (a - ph, b - pw) modulo the image: the circulant's generating kernel
    full = torch.zeros(k.shape[0], k.shape[1], h, w, dtype=torch.float64)
    for a in range(kh):
        for b in range(kw):
            full[:, :, (a - ph) % h, (b - pw) % w] += k[:, :, a, b]
    spec = torch.fft.fft2(full)  # (out, in, h, w)
    mats = spec.permute(2, 3, 0, 1)  # (h, w, out, in): one small matrix per frequency
    return float(torch.linalg.matrix_norm(mats, ord=2).max())


def group_norm_21(layer_or_weight, reference=None, *, input_size=None) -> float:
    """Bartlett et al.'s ``||A^T - M^T||_{2,1}``: the sum over output units of the L2 norm of each
    unit's incoming weights (rows of A - M), with reference weights ``M`` (None: zero).

    For a Conv2d layer (``input_size`` required) A is the full operator: each output channel at
    each output position is a row; its norm counts only the taps that fall inside the (zero-padded)
    input, computed exactly by convolving an all-ones input with the squared kernel."""
    layer = layer_or_weight if isinstance(layer_or_weight, nn.Module) else None
    w = (layer.weight if layer is not None else layer_or_weight).detach().double()
    if reference is not None:
        ref = reference.weight if isinstance(reference, nn.Module) else reference
        ref = torch.as_tensor(ref).detach().double()
        if ref.shape != w.shape:
            raise ValueError(f"reference weights have shape {tuple(ref.shape)}, the layer {tuple(w.shape)}")
        w = w - ref
    if isinstance(layer, nn.Conv2d):
        if input_size is None:
            raise ValueError("input_size is needed for the (2,1) norm of a conv layer")
        h, wd = _hw(input_size)
        ones = torch.ones(1, layer.in_channels, h, wd, dtype=torch.float64)
        if layer.padding_mode == "zeros":
            sq = F.conv2d(ones, w * w, **_conv_args(layer))
            return float(sq.clamp_min(0).sqrt().sum())
        if layer.padding_mode == "circular" and all(h0 >= k for h0, k in zip((h, wd), layer.kernel_size)):
            # taps wrap onto distinct pixels: every row holds the whole kernel of its channel
            ph, pw = layer.padding
            sq = F.conv2d(F.pad(ones, (pw, pw, ph, ph), value=1.0), w * w, **dict(_conv_args(layer), padding=0))
            return float(sq.clamp_min(0).sqrt().sum())
        # reflect / replicate padding fold several taps onto one pixel: rows = A^T e_r, in chunks
        delta = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                          padding=layer.padding, dilation=layer.dilation, groups=layer.groups, bias=False,
                          padding_mode=layer.padding_mode)
        delta.weight.data = w
        A, AT = _conv_operator(delta, (h, wd))
        out_shape = A(torch.zeros(1, layer.in_channels, h, wd, dtype=torch.float64)).shape[1:]
        m = math.prod(out_shape)
        total = 0.0
        for i in range(0, m, 256):
            eye = torch.zeros(min(256, m - i), m, dtype=torch.float64)
            eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1.0
            total += float(AT(eye.reshape(-1, *out_shape)).flatten(1).norm(dim=1).sum())
        return total
    if w.ndim != 2:
        raise ValueError(f"expected a matrix or a Linear/Conv2d layer, got weights of shape {tuple(w.shape)}")
    return float(w.norm(dim=1).sum())


def linear_layers(model: nn.Module, input_size) -> list[tuple[str, nn.Module, tuple]]:
    """Linear and Conv2d layers of ``model`` in forward order with the shape of their input
    (found by one forward pass on zeros of shape ``(1, *input_size)``, in eval mode)."""
    p = next(model.parameters())
    with preserved_state(model):
        model.eval()
        calls = forward_order(model, torch.zeros(1, *input_size, dtype=p.dtype, device=p.device))
    return [(c.name, c.module, c.input_shape) for c in calls]


def layer_norms(model: nn.Module, input_size, *, reference=None, n_iter: int = 500) -> list[dict]:
    """Per Linear/Conv2d layer of ``model`` (forward order): name, spectral norm (operator norm on
    the layer's actual input size) and ``||A^T - M^T||_{2,1}``.  ``input_size``: ``(C, H, W)`` or
    ``(D,)``.  ``reference``: None / ``"zero"`` (M = 0) or a model of the same architecture / its
    state dict (M = e.g. the initial weights)."""
    layers = linear_layers(model, tuple(input_size))
    refs = {}
    if reference is not None and reference != "zero":
        if isinstance(reference, nn.Module):
            ref_layers = linear_layers(reference, tuple(input_size))
            refs = {name: mod.weight for name, mod, _ in ref_layers}
        else:
            missing = [name + ".weight" for name, _, _ in layers if name + ".weight" not in reference]
            if missing:
                raise ValueError(f"reference state dict lacks {missing}; for spectral-normed models pass the "
                                 "reference model itself (its .weight is the normalised weight)")
            refs = {name: reference[name + ".weight"] for name, _, _ in layers}
    rows = []
    for name, mod, shape in layers:
        if isinstance(mod, nn.Conv2d):
            s = conv_spectral_norm(mod, shape[-2:], n_iter=n_iter)
            b = group_norm_21(mod, refs.get(name), input_size=shape[-2:])
        else:
            s = linear_spectral_norm(mod)
            b = group_norm_21(mod, refs.get(name))
        rows.append(dict(name=name, kind=type(mod).__name__, input_shape=shape, spectral=s, group21=b))
    return rows


def spectral_complexity(spectral_norms: Sequence[float], group_norms: Sequence[float],
                        lipschitz: float | Sequence[float] = 1.0) -> float:
    """Bartlett, Foster & Telgarsky (2017) spectral complexity

        R_A = (prod_i rho_i ||A_i||_sigma) * (sum_i ||A_i^T - M_i^T||_{2,1}^{2/3} / ||A_i||_sigma^{2/3})^{3/2}

    from the layers' spectral norms ``||A_i||_sigma``, their (2,1) distances to the reference
    matrices, and the Lipschitz constants ``rho_i`` of the activations (1 for ReLU, max-pooling and
    identity).  Exact as in the paper (their eq. 1.2)."""
    s = torch.as_tensor(spectral_norms, dtype=torch.float64)
    b = torch.as_tensor(group_norms, dtype=torch.float64)
    if s.ndim != 1 or s.shape != b.shape or s.numel() == 0:
        raise ValueError(f"spectral_norms and group_norms must be equal-length sequences, got {tuple(s.shape)} "
                         f"and {tuple(b.shape)}")
    rho = torch.as_tensor(lipschitz, dtype=torch.float64).expand_as(s)
    if (s < 0).any() or (b < 0).any() or (rho < 0).any():
        raise ValueError("norms and Lipschitz constants must be non-negative")
    if (s == 0).any():
        return 0.0
    return float(torch.prod(rho * s) * ((b / s) ** (2 / 3)).sum() ** 1.5)


def model_spectral_complexity(model: nn.Module, input_size, *, reference=None, lipschitz=1.0,
                              n_iter: int = 500) -> float:
    """R_A of ``model`` from :func:`layer_norms` (biases are left out, as in Bartlett et al.'s
    bias-free networks; ReLU and max-pooling are 1-Lipschitz)."""
    rows = layer_norms(model, input_size, reference=reference, n_iter=n_iter)
    return spectral_complexity([r["spectral"] for r in rows], [r["group21"] for r in rows], lipschitz)


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """Multiclass margins ``f(x)_y - max_{j != y} f(x)_j`` per sample (negative when misclassified)."""
    true = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, y.view(-1, 1), float("-inf")).max(1).values
    return true - others


def norms_table(model: nn.Module, input_size, *, n_iter: int = 300):
    """:func:`layer_norms` of ``model`` as a Markdown table (layer, input shape, operator norm, (2,1) norm)."""
    from xailab.viz import markdown_table

    rows = layer_norms(model, input_size, n_iter=n_iter)
    return markdown_table(["layer", "input", "operator norm", "‖A − 0‖₂,₁"],
                          [[r["name"], str(r["input_shape"][1:]), f"{r['spectral']:.3f}", f"{r['group21']:.2f}"]
                           for r in rows])
