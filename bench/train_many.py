"""Speed of `xailab.train.fit_many` against a sequential loop of `fit`, measured side by side.

For K = 5 and K = 10 small CNNs on shapes-like 32-px data (and, more briefly, 8-px digits), time
    sequential:  [fit(model_fn(s), data, seed=s, ...) for s in seeds]
    fit_many:    fit_many(model_fn, data, seeds=seeds, ...)        (strategy "auto")
alternately, `--repeats` times, and print the median times and their ratio. Ratios are what to
quote: absolute times depend on the machine and on its load. Both wall-clock and process CPU time
are reported; on a shared machine the CPU-time ratio is the steadier of the two.

    python bench/train_many.py [--threads 2] [--repeats 3] [--n 512]

``--chunks`` measures instead the chunk budget of the fused strategy as 04 uses it: two worker processes at once
(one thread each), each training K = 20 of 04's CNNs for 100 steps, with fused chunks of about 24 MB (the old
budget) and of about 8 MB (xailab's), alternately; the median time per network and step of each, and their ratio.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time

import torch

from xailab.models import SmallCNN
from xailab.train import fit, fit_many, strategy_for


def _data(kind: str, n: int):
    """xailab.data's generators when present, else random tensors of the same shape."""
    try:
        from xailab import data as xd

        if kind == "shapes":
            return xd.shapes(n, size=32, seed=0), "xailab.data.shapes"
        return xd.digits(size=8)[:n], "xailab.data.digits"
    except (ImportError, AttributeError):
        from types import SimpleNamespace

        g = torch.Generator().manual_seed(0)
        c, s, k = (3, 32, 4) if kind == "shapes" else (1, 8, 10)
        return SimpleNamespace(x=torch.rand(n, c, s, s, generator=g),
                               y=torch.randint(0, k, (n,), generator=g)), "random tensors"


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench(kind: str, ks, repeats: int, n: int, epochs: int, batch_size: int) -> None:
    data, source = _data(kind, n)
    c, size = data.x.shape[1], data.x.shape[-1]
    classes = int(data.y.max()) + 1

    def model_fn(seed):
        return SmallCNN(in_channels=c, num_classes=classes, input_size=size, seed=seed)

    kw = dict(epochs=epochs, lr=1e-3, batch_size=batch_size, device="cpu", progress=False)
    print(f"\n{kind}: {n} samples of {tuple(data.x.shape[1:])} from {source}, SmallCNN(width=16, depth=3), "
          f"{epochs} epoch(s), batch {batch_size}; fit_many strategy: {strategy_for(model_fn(0))!r}")
    fit_many(model_fn, data[:2 * batch_size] if hasattr(data, "__getitem__") else data, seeds=[0, 1],
             **{**kw, "epochs": 1})  # warm-up (oneDNN kernels, allocator)
    for k in ks:
        seeds = list(range(k))
        seq, many = [], []
        for _ in range(repeats):
            seq.append(_timed(lambda: [fit(model_fn(s), data, seed=s, **kw) for s in seeds]))
            many.append(_timed(lambda: fit_many(model_fn, data, seeds=seeds, **kw)))
        med = [statistics.median(t[i] for t in seq) for i in (0, 1)]
        medm = [statistics.median(t[i] for t in many) for i in (0, 1)]
        print(f"  K={k:2d}  wall: sequential {med[0]:6.2f}s  fit_many {medm[0]:6.2f}s  ratio {med[0] / medm[0]:.2f}x"
              f"   | CPU time: ratio {med[1] / medm[1]:.2f}x   (medians of {repeats})")


def _chunk_worker(budget: int, times) -> None:
    """One of the two workers of ``--chunks``: K = 20 of 04's CNNs, 100 steps, fused chunks of ``budget`` bytes;
    puts the seconds fit_many took on ``times``."""
    import xailab.train as train
    from xailab.models import ModelFactory

    torch.set_num_threads(1)
    train._CHUNK_BYTES = budget
    data, _ = _data("shapes", 20 * 256)
    cnn = ModelFactory("cnn", in_channels=3, num_classes=4, width=8, depth=3, input_size=32, negative_slope=0.01)
    sets = [data[i * 256:(i + 1) * 256] for i in range(20)]
    start = time.perf_counter()
    fit_many(cnn, sets, seeds=list(range(20)), steps=100, lr=4e-3, batch_size=64, lr_schedule="cosine", warmup=10,
             autocast=True, device="cpu", progress=False)
    times.put(time.perf_counter() - start)


def bench_chunks(repeats: int) -> None:
    budgets = {"24 MB (old)": 24 * 2 ** 20, "8 MB (xailab)": 8 * 2 ** 20}
    per_step = {k: [] for k in budgets}
    ctx = multiprocessing.get_context("spawn")
    for _ in range(repeats):
        for name, budget in budgets.items():
            times = ctx.Queue()
            workers = [ctx.Process(target=_chunk_worker, args=(budget, times)) for _ in range(2)]
            for w in workers:
                w.start()
            per_step[name] += [times.get() / (100 * 20) * 1e3 for _ in workers]   # ms per network-step
            for w in workers:
                w.join()
    med = {k: statistics.median(v) for k, v in per_step.items()}
    old, new = med.values()
    print("two workers at once, each fit_many of K = 20 CNNs (04's) for 100 steps, ms per network-step: "
          + ", ".join(f"{k} {v:.2f}" for k, v in med.items()) + f"; ratio {old / new:.2f}x (medians over "
          f"{repeats} runs of both workers)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=512, help="training samples per model")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--chunks", action="store_true", help="time the fused chunk budget instead (two workers at once)")
    args = ap.parse_args()
    if args.chunks:
        bench_chunks(args.repeats)
        return
    torch.set_num_threads(args.threads)
    print(f"fit_many vs a sequential loop of fit, {args.threads} thread(s), torch {torch.__version__}")
    bench("shapes", (5, 10), args.repeats, args.n, args.epochs, args.batch_size)
    if not args.skip_digits:
        bench("digits", (10,), args.repeats, args.n, args.epochs, args.batch_size)


if __name__ == "__main__":
    main()
