"""SPADE's evaluation helpers, explain() and the neuron visualisation (small, CPU)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from xailab.papers.spade import explain, trace
from xailab.papers.spade import evaluate as ev
from xailab.papers.spade.neurons import maximize_class


def _model(seed=0):
    g = torch.Generator().manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3))
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m.eval()


def _x(n=1, seed=0):
    return torch.rand(n, 3, 10, 10, generator=torch.Generator().manual_seed(seed))


def test_explain_is_attribute_on_the_trace():
    from xailab import attribute

    model, x = _model(), _x()
    got = explain(model, x[0], 1, method="gradient", sparsity=0.6, n_views=6, device="cpu")
    t = trace(model, x, 0.6, n_views=6, device="cpu", progress=False).model
    assert got.shape == (1, 3, 10, 10)
    assert torch.allclose(got, attribute(t, x, 1, method="gradient"))
    assert not torch.allclose(got, attribute(model, x, 1, method="gradient"))


def test_trace_rows_and_summaries():
    model, x = _model(), _x(3, seed=1)
    mask = torch.zeros(3, 1, 10, 10)
    mask[:, :, 2:5, 2:5] = 1
    methods = {"gradient": {}, "input_x_gradient": {}}
    dense = ev.dense_rows(model, x, mask, 0, methods, steps=4)
    rows, traces = ev.trace_rows(model, x, mask, 0, methods, variant=0.5, sparsity=0.5, n_views=4, steps=4,
                                 batch=2, keep_traces=True)
    assert len(dense) == len(rows) == 6 and len(traces) == 3
    assert all(0 <= r["auc"] <= 1 and r["map"].shape == (10, 10) for r in dense + rows)
    table = ev.summarise(dense + rows)
    assert set(table) == {("dense", "gradient"), ("dense", "input_x_gradient"), (0.5, "gradient"),
                          (0.5, "input_x_gradient")}
    per_method, overall = ev.calibrate(rows + [{**r, "variant": 0.9, "auc": r["auc"] + 0.1} for r in rows])
    assert per_method == {"gradient": 0.9, "input_x_gradient": 0.9} and overall == 0.9
    ov = ev.overlap_by_similarity(traces, [0, 0, 1], [2, 2, 2])
    assert set(ov) == {"similar", "other"}
    assert all(0 <= v <= 1 for d in ov.values() for v in d.values())


def test_maximize_class_raises_the_logit_and_leaves_the_model_alone():
    model = _model()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = maximize_class(model, 2, size=10, steps=30, seed=3, device="cpu")
    b = maximize_class(model, 2, size=10, steps=30, seed=3, device="cpu")
    assert torch.equal(a, b) and a.shape == (1, 3, 10, 10)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    start = torch.sigmoid(0.1 * torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(3)))
    assert model(a)[0, 2] > model(start)[0, 2]
    with pytest.raises(ValueError, match="steps"):
        maximize_class(model, 0, steps=0)
