"""Attribution methods: ours against Captum's counterparts, side by side in one run.

For each method Captum also has (Saliency, InputXGradient, IntegratedGradients, GuidedBackprop,
LayerGradCam, GuidedGradCam, NoiseTunnel/SmoothGrad) on (a) a SmallCNN on 32-px images and (b) a
torchvision ResNet-18 (random weights) on 224-px images, batch 8: the median time of each over
at least ``--repeats`` pairs of calls (alternating which goes first; more pairs for fast calls),
the ratio ours/Captum as the median of the per-pair ratios (target <= 1.1; pairs make it robust
to the load of a shared machine drifting between calls), the
largest difference between the outputs relative to Captum's largest value (ensembles with the
same noise fed to both), and each method's time against its floor: the same number of plain
gradient passes done as one batch. Then SmoothGrad, SmoothGrad^2 and VarGrad from shared samples
(``ensemble``) against three separate NoiseTunnel calls (target >= 2.5x), and the peak memory of
IG on the ResNet-18 batch, each measured in a fresh subprocess (``ru_maxrss``: the process's peak
resident memory, which sees torch's allocations; "+" is the growth during the call). Last, the memory
layout: the plain gradient pass as ``score_gradient`` runs it on a CPU (channels-last) against the same pass on
the contiguous batch, as a per-pair time ratio (target < 1).

Run: ``python bench/attribution.py [--quick] [--repeats 3] [--threads 1] [--captum-default-ig]``.
``--quick``: smaller CNN batch, IG steps and samples; the ResNet-18 part with batch 2. ``--captum-default-ig`` also measures Captum's IG
with its default (one batch of steps x N rows) at 64 steps: ~9 GB and minutes, off by default.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F
import torchvision
from captum.attr import (GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients, LayerGradCam,
                         NoiseTunnel, Saliency)

from xailab.attribution import attribute, ensemble, gradient
from xailab.attribution._core import _score_gradient, batch_rows, score_gradient
from xailab.attribution.cam import find_layer
from xailab.models import SmallCNN

warnings.filterwarnings("ignore", category=UserWarning, module="captum")
STATS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def setup(which: str, batch: int):
    g = torch.Generator().manual_seed(0)
    if which == "cnn":
        model = SmallCNN(in_channels=3, num_classes=10, width=16, depth=3, input_size=32, seed=0).eval()
        x = torch.rand(batch, 3, 32, 32, generator=g)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = torchvision.models.resnet18(weights=None).eval()
        x = torch.rand(batch, 3, 224, 224, generator=g)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0  # every sample spans [0, 1]: Captum's absolute σ == ours
    return model, x, torch.arange(batch) % 10


class SameNoise:
    """Feed Captum's NoiseTunnel the standard-normal noise our ensemble used (for the diff only)."""

    def __init__(self, noise):
        self.noise, self.saved = noise, None

    def __enter__(self):
        noise = self.noise
        self.saved = NoiseTunnel.__dict__["_add_noise_to_input"]

        def add(inp, stdev, n):
            return inp.repeat_interleave(n, 0) + stdev * noise.transpose(0, 1).reshape(-1, *inp.shape[1:])

        NoiseTunnel._add_noise_to_input = staticmethod(add)

    def __exit__(self, *exc):
        NoiseTunnel._add_noise_to_input = self.saved


def cases(model, x, t, steps: int, samples: int, sigma: float = 0.15):
    """(name, ours, captum, passes per sample) for every method both libraries have."""
    layer = find_layer(model)
    rows = batch_rows(None, x)
    stdev = sigma * float(x.max() - x.min())  # all samples span [0, 1]: same σ for both
    noise = torch.randn(samples, *x.shape, generator=torch.Generator().manual_seed(1))

    def cam():
        c = LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        return F.interpolate(c, size=x.shape[2:], mode="bilinear", align_corners=False)

    def nt(kind):
        return lambda: NoiseTunnel(Saliency(model)).attribute(x, nt_type=kind, nt_samples=samples, stdevs=stdev,
                                                              target=t, abs=False)

    return [
        ("gradient", lambda: gradient(model, x, t), lambda: Saliency(model).attribute(x, target=t, abs=False), 1),
        ("input_x_gradient", lambda: attribute(model, x, t, "input_x_gradient"),
         lambda: InputXGradient(model).attribute(x, target=t), 1),
        ("integrated_gradients", lambda: attribute(model, x, t, "integrated_gradients", steps=steps),
         lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=steps, internal_batch_size=rows),
         steps),
        ("guided_backprop", lambda: attribute(model, x, t, "guided_backprop"),
         lambda: GuidedBackprop(model).attribute(x, target=t), 1),
        ("grad_cam", lambda: attribute(model, x, t, "grad_cam"), cam, 1),
        ("guided_grad_cam", lambda: attribute(model, x, t, "guided_grad_cam"),
         lambda: GuidedGradCam(model, layer).attribute(x, target=t, interpolate_mode="bilinear"), 2),
        # ours computes all three statistics here (same passes as one); Captum only SmoothGrad
        ("smoothgrad (+sq, var)", lambda: ensemble(model, x, t, n_samples=samples, sigma=sigma)["smoothgrad"],
         nt("smoothgrad"), samples, (noise, lambda: ensemble(model, x, t, n_samples=samples, sigma=sigma,
                                                             draws=noise))),
    ], nt


def timed_pair(fa, fb, repeats: int, budget: float = 8.0):
    """Calls in pairs, alternating which goes first; at least ``repeats`` pairs, more for fast
    calls (up to ``budget`` s). Returns the median times, the median of the per-pair ratios
    a/b (robust to load that drifts on a shared machine) and the outputs of the first calls."""
    ta, tb, outs = [], [], []
    while len(ta) < repeats or (sum(ta) + sum(tb) < budget and len(ta) < 30):
        order = ((fa, ta), (fb, tb)) if len(ta) % 2 == 0 else ((fb, tb), (fa, ta))
        for fn, times in order:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
            if len(ta) + len(tb) <= 2:
                outs.append((fn is fa, out))
    outs = [o for _, o in sorted(outs, key=lambda p: not p[0])]
    ratio = statistics.median(a / b for a, b in zip(ta, tb))
    return statistics.median(ta), statistics.median(tb), ratio, outs


def floor_time(model, x, t, passes: int, repeats: int) -> float:
    """Plain gradient passes for ``passes × N`` rows, as ONE batch."""
    xs, ts = x.repeat(passes, *([1] * (x.ndim - 1))), t.repeat(passes)
    return median_time(lambda: gradient(model, xs, ts, batch_size=xs.shape[0]), repeats)


def median_time(fn, repeats: int, budget: float = 1.0) -> float:
    """Median over at least ``repeats`` calls, more for fast calls (up to ``budget`` s)."""
    times: list[float] = []
    while len(times) < repeats or (sum(times) < budget and len(times) < 30):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rel_diff(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def run(which: str, batch: int, steps: int, samples: int, repeats: int) -> list[dict]:
    model, x, t = setup(which, batch)
    print(f"\n== {which}: batch {tuple(x.shape)}, IG {steps} steps, ensembles {samples} samples, "
          f"chunks of {batch_rows(None, x)} rows, median of >= {repeats}")
    print(f"{'method':22s} {'ours ms':>9s} {'captum ms':>10s} {'ours/captum':>12s} {'max rel diff':>13s} "
          f"{'floor ms':>9s} {'ours/floor':>11s}")
    gradient(model, x, t)  # warm-up: kernels, allocator
    table, floors = [], {}
    all_cases, nt = cases(model, x, t, steps, samples)
    shared_time = None
    for name, ours, theirs, passes, *same in all_cases:
        t_ours, t_theirs, ratio, (out_ours, out_theirs) = timed_pair(ours, theirs, repeats)
        if same:  # ensembles: the difference with the same noise fed to both
            noise, with_noise = same[0]
            shared = with_noise()
            with SameNoise(noise):
                diffs = {k: rel_diff(shared[k], nt(k)()) for k in STATS}
            diff, shared_time = max(diffs.values()), t_ours
        else:
            diff = rel_diff(out_ours, out_theirs)
        if passes not in floors:
            floors[passes] = t_ours if name == "gradient" else floor_time(model, x, t, passes, repeats)
        row = dict(model=which, method=name, ours=t_ours, captum=t_theirs, ratio=ratio, diff=diff,
                   floor=floors[passes])
        table.append(row)
        print(f"{name:22s} {1e3 * t_ours:9.1f} {1e3 * t_theirs:10.1f} {row['ratio']:12.2f} {diff:13.1e} "
              f"{1e3 * row['floor']:9.1f} {t_ours / row['floor']:11.2f}")
        if same:
            # the other two statistics from Captum: three separate NoiseTunnel calls in all
            t_three = t_theirs + sum(median_time(nt(k), repeats) for k in STATS[1:])
            print(f"{'3 stats vs 3 tunnels':22s} {1e3 * shared_time:9.1f} {1e3 * t_three:10.1f} "
                  f"{shared_time / t_three:12.2f} {max(diffs.values()):13.1e}   speed-up {t_three / shared_time:.2f}x "
                  "(target >= 2.5x)")
            table.append(dict(model=which, method="ensemble (3 stats)", ours=shared_time, captum=t_three,
                              ratio=shared_time / t_three, diff=diff, floor=float("nan")))
    return table


def layout(which: str, batch: int, repeats: int) -> float:
    """The plain gradient as ``score_gradient`` runs it on a CPU (channels-last) against the same pass on the
    contiguous batch: the median per-pair time ratio (< 1: channels-last is faster), outputs checked equal."""
    model, x, t = setup(which, batch)
    t_last, t_contig, ratio, (a, b) = timed_pair(lambda: score_gradient(model, x, t),
                                                 lambda: _score_gradient(model, x.contiguous(), t), repeats)
    print(f"gradient, channels-last vs contiguous ({which}, batch {batch}): {1e3 * t_last:.1f} ms vs "
          f"{1e3 * t_contig:.1f} ms, ratio {ratio:.2f}, max rel diff {rel_diff(a, b):.1e}")
    return ratio


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would inherit the parent's peak
    across exec), which counts torch's allocations unlike tracemalloc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(kind: str, batch: int, steps: int) -> None:
    """In a fresh process: peak RSS of one IG call on the ResNet-18 batch (prints JSON)."""
    model, x, t = setup("resnet", batch)
    gradient(model, x[:1], t[:1])  # load kernels, allocator warm
    before = peak_rss_mb()
    t0 = time.perf_counter()
    if kind == "ours":
        attribute(model, x, t, "integrated_gradients", steps=steps)
    else:
        chunk = batch_rows(None, x) if kind == "captum" else None
        IntegratedGradients(model).attribute(x, target=t, n_steps=steps, internal_batch_size=chunk)
    seconds = time.perf_counter() - t0
    after = peak_rss_mb()
    print(json.dumps(dict(peak_mb=after, grown_mb=after - before, seconds=seconds)))


def memory(kind: str, batch: int, steps: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", kind, "--batch", str(batch), "--steps", str(steps),
           "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller run (ResNet-18 batch 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--captum-default-ig", action="store_true")
    ap.add_argument("--memory-child", choices=("ours", "captum", "captum-default"), help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        return memory_child(args.memory_child, args.batch, args.steps)

    start = time.perf_counter()
    batch = 2 if args.quick else 8
    if args.quick:
        rows = run("cnn", 16, steps=16, samples=8, repeats=args.repeats)
    else:
        rows = run("cnn", 32, steps=32, samples=15, repeats=args.repeats)
    rows += run("resnet", batch, steps=4, samples=4, repeats=args.repeats)
    print("\n== memory layout of the gradient pass (CPU)")
    layouts = [layout("cnn", 16 if args.quick else 64, args.repeats), layout("resnet", batch, args.repeats)]

    print(f"\n== peak memory of integrated_gradients, ResNet-18, batch {batch} at 224 px, fresh process each")
    # our peak depends on the chunk size only, not on steps; Captum's default grows with steps x N
    kinds = [("ours", 8), ("captum", 8), ("captum-default", 8)] + ([("captum-default", 64)] if args.captum_default_ig else [])
    for kind, steps in kinds:
        m = memory(kind, batch, steps, args.threads)
        label = {"ours": "ours (default chunks)", "captum": "captum, same chunks",
                 "captum-default": "captum default (1 batch)"}[kind]
        print(f"{label:26s} {steps:3d} steps: peak RSS {m['peak_mb']:7.0f} MB (+{m['grown_mb']:6.0f} MB during the "
              f"call), {m['seconds']:.1f} s")

    worst = max(r["ratio"] for r in rows if r["method"] != "ensemble (3 stats)")
    speedups = [1 / r["ratio"] for r in rows if r["method"] == "ensemble (3 stats)"]
    print(f"\nworst ours/captum ratio {worst:.2f} (target <= 1.1); shared-sample ensemble speed-up "
          f"{min(speedups):.2f}x (target >= 2.5x); channels-last/contiguous {max(layouts):.2f} (target < 1); total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
