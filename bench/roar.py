"""ROAR sweep costs: one cell with ``fit_many`` against a loop of ``fit``, and every estimator's
relevance computed with shared noisy samples against one estimator at a time.

1. One sweep cell: ``seeds`` fresh SmallCNNs on the same modified ``shapes`` train set, trained at
   once with :func:`xailab.train.fit_many` against one ``fit`` per seed in a loop (same models).
2. Relevance of a data set for the 12 ensemble-or-plain estimators of one base method family
   (base, base², SmoothGrad, SmoothGrad squared, SmoothGrad², VarGrad for gradient and guided
   backprop): :func:`xailab.papers.roar.relevance_maps` asked for all of them at once (one noisy-sample
   pass per base, shared by its three statistics) against one call per estimator (a pass each).

Prints medians over ``--repeats`` and the ratios.  Run: ``python bench/roar.py [--repeats 3]``.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import timeit

import torch

from xailab.data import shapes, train_test_split
from xailab.papers.roar import ModelFactory, relevance_maps
from xailab.removal import remove
from xailab.train import fit, fit_many


def median_time(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls of ``fn`` and the last call's result."""
    results = []
    times = timeit.repeat(lambda: results.append(fn()), number=1, repeat=repeats)
    return statistics.median(times), results[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=800, help="images in the shapes data set")
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=15, help="noisy samples per ensemble")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); shapes n={args.n}, "
          f"{args.size} px; {args.repeats} repeats, medians")

    data = shapes(args.n, size=args.size, seed=0, distractors=1, scale=(0.3, 0.45))
    train, _ = train_test_split(data, test_fraction=0.25, seed=0)
    model_fn = ModelFactory("cnn", in_channels=3, num_classes=4, width=8, depth=2, input_size=args.size)
    explained = fit(model_fn(0), train, epochs=args.epochs, seed=0, device="cpu", progress=False)

    # 1. one cell: the ROAR-modified train set at 50 %, all seeds at once vs one by one
    rel = relevance_maps(explained, train, ["gradient"], cache_dir=None, progress=False)["gradient"]
    cell = dataclasses.replace(train, x=remove(train.x, rel, 0.5))
    seeds = list(range(args.seeds))
    kw = dict(epochs=args.epochs, device="cpu", progress=False)
    t_many, many = median_time(lambda: fit_many(model_fn, cell, seeds=seeds, **kw), args.repeats)
    t_loop, loop = median_time(lambda: [fit(model_fn(s), cell, seed=s, **kw) for s in seeds], args.repeats)
    gap = max((a - b).abs().max().item() for m1, m2 in zip(many, loop)
              for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    print(f"\n1. one sweep cell ({args.seeds} seeds x {args.epochs} epochs on {len(cell)} images)")
    print(f"   fit_many {t_many:7.2f} s | loop of fit {t_loop:7.2f} s | ratio loop/fit_many "
          f"{t_loop / t_many:5.2f}x | largest weight difference {gap:.1e}")

    # 2. relevance of every estimator of two families: shared samples vs one estimator at a time
    names = [n for base in ("gradient", "guided_backprop") for n in (
        base, f"{base}²", f"smoothgrad({base})", f"smoothgrad({base})²", f"smoothgrad_sq({base})",
        f"vargrad({base})")]
    opts = {"ensemble": {"n_samples": args.n_samples}}
    rk = dict(defaults=opts, cache_dir=None, progress=False)
    t_shared, shared = median_time(lambda: relevance_maps(explained, train, names, **rk), args.repeats)
    t_single, single = median_time(
        lambda: {n: relevance_maps(explained, train, [n], **rk)[n] for n in names}, args.repeats)
    diff = max((shared[n] - single[n]).abs().max().item() for n in names)
    print(f"\n2. relevance of {len(names)} estimators on {len(train)} images ({args.n_samples} noisy samples)")
    print(f"   shared samples {t_shared:7.2f} s | one by one {t_single:7.2f} s | ratio "
          f"{t_single / t_shared:5.2f}x | largest map difference {diff:.1e}")


if __name__ == "__main__":
    main()
