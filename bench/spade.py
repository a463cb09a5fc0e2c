"""SPADE trace cost: seconds per trace for each solver, split into capture and solve.

On ``SmallResNet`` (width 16, one block per stage, random weights, batch-norm in eval) at 32 px,
one image, 128 augmented views, CPU, constant sparsity (first conv dense). For each solver
(``fast`` = SparseGPT-style, ``obc`` = exact Optimal Brain Compression, ``magnitude`` =
reference without reconstruction) the median over repeats of: capture time (forward passes up
to each layer + Hessians), solve time, total per trace. Exact OBC costs ~rows·cols³ per layer, so
layers with more than ``--obc-max-cols`` inputs per row fall back to ``fast`` inside the OBC trace;
the fast/exact ratio is therefore also printed on the layers OBC actually solved, which is the
like-for-like number. Mean relative reconstruction error per solver on those layers too.
Run: ``python bench/spade.py [--views 128] [--repeats 3] [--obc-repeats 2] [--sparsity 0.7]
[--obc-max-cols 300] [--batch 4]``; a few minutes on one core. Last, the same batched traces on
CPU and, when a GPU is present, on CUDA, with the speed-up.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from xailab.models import SmallResNet
from xailab.papers.spade import trace, trace_batch


def run(model, x, solver, args):
    t = trace(model, x, args.sparsity, solver=solver, n_views=args.views, seed=0, device="cpu",
              progress=False, obc_max_cols=args.obc_max_cols)
    return t.report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--obc-repeats", type=int, default=2, help="repeats for OBC (~50 s each)")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--obc-max-cols", type=int, default=300)
    ap.add_argument("--batch", type=int, default=4, help="images per batched trace in the device comparison")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = SmallResNet(num_classes=10, width=16, blocks=(1, 1, 1), seed=0).eval()
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    run(model, x, "fast", argparse.Namespace(**{**vars(args), "views": 8}))    # warm-up

    reports = {s: [run(model, x, s, args) for _ in range(args.obc_repeats if s == "obc" else args.repeats)]
               for s in ("magnitude", "fast", "obc")}
    print(f"SmallResNet(width 16, blocks 1-1-1), 32 px, {args.views} views, sparsity {args.sparsity}, "
          f"CPU threads {torch.get_num_threads()}, median of {args.repeats} ({args.obc_repeats} for obc)")
    print(f"{'solver':10s} {'capture s':>10s} {'solve s':>10s} {'total s':>10s}")
    med = {}
    for s, reps in reports.items():
        cap = statistics.median(r.capture_seconds for r in reps)
        sol = statistics.median(r.solve_seconds for r in reps)
        med[s] = (cap, sol)
        print(f"{s:10s} {cap:10.3f} {sol:10.3f} {cap + sol:10.3f}")
    obc_layers = [l.name for l in reports["obc"][0].layers if l.solver == "obc"]
    fell_back = [l.name for l in reports["obc"][0].layers if l.solver == "fast"]

    def solve_on(s, names):
        return statistics.median(sum(l.solve_s for l in r.layers if l.name in names) for r in reports[s])

    def err_on(s, names):
        ls = [l for l in reports[s][0].layers if l.name in names]
        return sum(l.rel_error for l in ls) / len(ls)

    print(f"OBC solved {len(obc_layers)} layers exactly; fell back to fast on {fell_back} "
          f"(> {args.obc_max_cols} inputs per row)")
    print(f"whole trace  fast/exact time ratio: {sum(med['fast']) / sum(med['obc']):.3f}")
    f, o = solve_on("fast", obc_layers), solve_on("obc", obc_layers)
    print(f"solve only, layers OBC solved: fast {f:.3f} s, obc {o:.3f} s, fast/exact ratio {f / o:.4f}")
    print("mean relative reconstruction error on those layers: "
          + ", ".join(f"{s} {err_on(s, obc_layers):.4f}" for s in ("magnitude", "fast", "obc")))
    print(f"capture share of the fast trace: {med['fast'][0] / sum(med['fast']):.0%}")
    devices(model, args)


def per_image(model, xs, solver, device, args) -> float:
    """Seconds per image of one batched trace of ``xs`` (capture batched on ``device``)."""
    t0 = time.perf_counter()
    trace_batch(model, xs, args.sparsity, solver=solver, n_views=args.views, seed=0, device=device,
                progress=False, obc_max_cols=args.obc_max_cols)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / len(xs)


def devices(model, args) -> None:
    """The same batched traces on CPU and, where there is one, on CUDA, side by side."""
    xs = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if not torch.cuda.is_available():
        print("CUDA: not available on this machine (torch.cuda.is_available() is False); CPU numbers only")
    names = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"batched traces of {args.batch} images, seconds per image, median of {args.repeats}:")
    for solver in ("fast", "obc"):
        reps = 1 if solver == "obc" else args.repeats
        sec = {}
        for dev in names:
            per_image(model, xs[:1], solver, dev, argparse.Namespace(**{**vars(args), "views": 8}))   # warm-up
            sec[dev] = statistics.median(per_image(model, xs, solver, dev, args) for _ in range(reps))
        line = "  ".join(f"{d} {v:.3f} s" for d, v in sec.items())
        ratio = f"  (cpu/cuda speed-up {sec['cpu'] / sec['cuda']:.1f}x)" if "cuda" in sec else ""
        print(f"  {solver:5s} {line}{ratio}")


if __name__ == "__main__":
    main()
