"""SPADE's replicate networks side by side in one-thread processes, against one after another in this process.

05 takes several trojaned networks through the same evaluation (``spade.pipeline.replicate``). They are
independent, so ``pipeline.Replicates`` builds them in ``workers`` processes of one thread each. The reference
builds the same networks one after another here, with this process's threads (``--threads``, default 2, as 05
alone). On tiny trojaned ResNets (the test suite's task: 1 600 training images, four evaluation images, two
gradient methods, two calibration maxima) the script prints the median wall time of each over ``--repeats``, their
ratio, and whether the networks agree with those built here at one thread (they must, to the last bit).
Run: ``python bench/spade_networks.py [--networks 3] [--workers 3] [--repeats 3]``; a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from xailab.papers.spade import evaluate as ev
from xailab.papers.spade import pipeline as pipe

TASK = dict(target_class=0, calib_designs=(0, 1), eval_designs=(2, 3, 4), n_calib=3, n_eval=4, progress=False,
            architecture="resnet", lr=0.05, fit_options=dict(optimiser="sgd", momentum=0.9, lr_schedule="cosine"),
            size=32, trigger_size=10, width=8, network_options=dict(blocks=(1, 1, 1)), n_train=1600, n_test=400,
            epochs=12, opacity=0.5)
OPTIONS = dict(methods={m: ev.PAPER_METHODS[m] for m in ("gradient", "input_x_gradient")}, grid=[0.5, 0.9],
               fixed=0.99, device="cpu", common=dict(n_views=16, seed=3, steps=8, device="cpu", progress=False,
                                                     batch=4))


def timed(seeds, workers):
    t0 = time.perf_counter()
    nets = pipe.Replicates(TASK, seeds, workers=workers, **OPTIONS).results()
    return time.perf_counter() - t0, nets


def key(net):
    return [(r["variant"], r["method"], r["sample"], r["auc"], r["insertion"]) for r in net.rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=3)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the one-after-another reference")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    seeds = list(range(11, 11 + args.networks))
    torch.set_num_threads(args.threads)
    seq, pool = [], []
    for _ in range(args.repeats):        # alternately, so that a change in the machine's load hits both
        seq.append(timed(seeds, 1)[0])
        t, pooled = timed(seeds, args.workers)
        pool.append(t)
    torch.set_num_threads(1)
    same = all(key(a) == key(b) for a, b in zip(timed(seeds, 1)[1], pooled))
    t_seq, t_pool = statistics.median(seq), statistics.median(pool)
    print(f"{args.networks} tiny trojaned ResNets, median of {args.repeats}: one after another ({args.threads} "
          f"threads) {t_seq:.1f} s, {args.workers} one-thread processes {t_pool:.1f} s, ratio {t_seq / t_pool:.2f}x")
    print(f"the pool's networks equal those built here with one thread: {same}")


if __name__ == "__main__":
    main()
