"""The command line the prototype screens share: regimes as JSON, one JSON line per regime and seed."""
import json
import os

import torch


def run(measure, default, argv) -> None:
    """``measure(seed, **overrides)`` for every regime ``[name, overrides]`` of ``argv[0]`` (JSON) or ``default``;
    ``overrides["seeds"]`` (default ``[0]``) lists the seeds; ``THREADS`` sets torch's threads (default 2)."""
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    for name, overrides in (json.loads(argv[0]) if argv else default):
        overrides = dict(overrides)
        for seed in overrides.pop("seeds", [0]):
            print(json.dumps({"regime": name, **measure(seed, **overrides)}), flush=True)
