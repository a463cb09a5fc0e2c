"""FullGrad aggregation: channel sum before upsampling (ours) against upsampling every channel.

On a torchvision ResNet-18 (random weights, batch-norm statistics warmed up) at 224 px, both
aggregations post-process the same full-gradient decomposition (absolute value, per-layer min-max,
bilinear upsampling, sum over channels and layers).  Ours sums the channels first, at each layer's
own resolution; the straightforward way upsamples all C channels of every layer to 224 x 224 and
sums afterwards.  Prints the median time of each over repeats, their ratio, the same for the whole
saliency call (decomposition included), the largest intermediate tensor of each, and the maps'
largest difference.  Run: ``python bench/fullgrad.py [--batch 2] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from xailab.attribution import fullgrad as fgm


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    with torch.no_grad():                      # non-trivial running statistics for the BN biases
        model.train()
        model(x + 0.1 * torch.randn(x.shape, generator=g))
    model.eval()
    target = 7
    size = x.shape[-2:]

    fg = fgm.full_gradients(model, x, target)
    gap = fgm.decomposition_gap(model, x, target).max().item()
    spatial = [t for t in [fg.input] + list(fg.bias.values()) if t.ndim == 4]
    channels = sum(t.shape[1] for t in spatial)
    big_naive = max(t.shape[1] for t in spatial) * args.batch * size.numel() * 4
    big_ours = max(t[0].numel() for t in spatial) * args.batch * 4

    t_ours, ours = timed(lambda: fgm.aggregate(fg, x.shape), args.repeats)
    t_naive, naive = timed(lambda: fgm.aggregate_per_channel(fg, size), args.repeats)
    t_full_ours, _ = timed(lambda: fgm.aggregate(fgm.full_gradients(model, x, target), x.shape),
                           max(1, args.repeats // 2))
    t_full_naive, _ = timed(lambda: fgm.aggregate_per_channel(fgm.full_gradients(model, x, target), size),
                            max(1, args.repeats // 2))
    diff = (ours - naive).abs().max().item()

    print(f"ResNet-18 (torchvision, random weights), batch {args.batch} at {args.size} px, "
          f"{torch.get_num_threads()} threads; {len(spatial)} spatial terms, {channels} channels; "
          f"completeness gap {gap:.2e}")
    print(f"aggregation  ours {t_ours * 1e3:8.1f} ms   per-channel upsampling {t_naive * 1e3:8.1f} ms   "
          f"ratio {t_naive / t_ours:6.1f}x")
    print(f"whole map    ours {t_full_ours * 1e3:8.1f} ms   per-channel upsampling {t_full_naive * 1e3:8.1f} ms   "
          f"ratio {t_full_naive / t_full_ours:6.2f}x")
    print(f"largest intermediate: ours {big_ours / 2**20:.1f} MiB, per-channel {big_naive / 2**20:.1f} MiB")
    print(f"maps' largest difference {diff:.2e} (map values up to {ours.max().item():.1f})")


if __name__ == "__main__":
    main()
