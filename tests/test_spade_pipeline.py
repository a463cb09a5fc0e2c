"""papers.spade.pipeline: one network's evaluation, step by step and as a replicate, on a tiny trojaned ResNet."""
import numpy as np
import pytest
import torch

from xailab.papers.spade import evaluate as ev
from xailab.papers.spade import facets as fa
from xailab.papers.spade import pipeline as pipe

TASK = dict(target_class=0, calib_designs=(0, 1), eval_designs=(2, 3, 4), n_calib=3, n_eval=4, progress=False,
            architecture="resnet", lr=0.05, fit_options=dict(optimiser="sgd", momentum=0.9, lr_schedule="cosine"),
            size=32, trigger_size=10, width=8, network_options=dict(blocks=(1, 1, 1)), n_train=1600, n_test=400,
            epochs=12, opacity=0.5)
METHODS = {m: ev.PAPER_METHODS[m] for m in ("gradient", "input_x_gradient")}
COMMON = dict(n_views=16, seed=3, steps=8, device="cpu", progress=False, batch=4)
GRID, FIXED = [0.5, 0.9], 0.99
OPTIONS = dict(methods=METHODS, grid=GRID, fixed=FIXED, device="cpu", common=COMMON)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every network of this module is built with one thread, as each process of Replicates' pool builds its
    own: then a network built here and one built in the pool are the same to the last bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def task(one_thread):
    return ev.trojan_task(seed=11, device="cpu", **TASK)


@pytest.fixture(scope="module")
def replicate(one_thread):
    return pipe.replicate(TASK, seed=11, **OPTIONS)


def test_replicate_is_the_notebook_steps_on_a_network_of_its_seed(replicate, task):
    """The replicate equals the steps 05 runs on its first network, called one by one on the same task."""
    model, T = task.model, task.target_class
    _, schedule = pipe.layer_plan(model, task.calib_x, n_views=16, seed=COMMON["seed"], device="cpu")
    dense = ev.dense_rows(model, task.eval_x, task.eval_mask, T, METHODS, steps=COMMON["steps"])
    calibration = pipe.calibrate_schedule(model, task.calib_x, task.calib_mask, T, METHODS, GRID, schedule, **COMMON)
    evaluation = pipe.evaluate_schedules(model, task, task.eval_x, task.eval_mask, T, METHODS, dense, calibration,
                                         schedule, FIXED, **COMMON)
    assert replicate.overall == calibration.overall
    assert replicate.undetermined == [n for n in schedule.names if n in schedule.dense]
    assert [(r["variant"], r["method"], r["sample"], r["auc"]) for r in replicate.rows] == \
           [(r["variant"], r["method"], r["sample"], r["auc"]) for r in evaluation.rows]
    sparsity = [fa.class_unit_sparsity(t.model, T) for t in evaluation.kept]
    assert replicate.unit_sparsity == pytest.approx(np.mean(sparsity))
    assert replicate.premise["smallest flip rate of a design"] == min(task.flip_rate[d] for d in (2, 3, 4))


def test_every_variant_scores_every_image_and_method(replicate):
    n = len(replicate.agrees_after_bn)
    assert n > 0
    for variant in ("dense", *pipe.VARIANTS):
        assert ev.per_image(replicate.rows, variant).shape == (n,)
        for m in METHODS:
            assert ev.per_image(replicate.rows, variant, m).shape == (n,)
    assert set(np.unique(replicate.agrees_after_bn)) <= {0.0, 1.0}
    assert 0.0 <= replicate.unit_sparsity <= 1.0 and replicate.oracle["high"] >= replicate.oracle["gain"]


def test_evaluation_budgets_and_the_calibrated_choice(task):
    """The constant schedule spends the linear schedule's mean budget on the same layers; "spade" rows of a method
    are its trace under its own calibrated maximum (here the grid's only value)."""
    model, T = task.model, task.target_class
    _, schedule = pipe.layer_plan(model, task.calib_x, n_views=16, seed=3, device="cpu")
    calibration = pipe.calibrate_schedule(model, task.calib_x, task.calib_mask, T, METHODS, [0.7], schedule, **COMMON)
    assert calibration.overall == 0.7 and set(calibration.per_method.values()) == {0.7}
    dense = ev.dense_rows(model, task.eval_x, task.eval_mask, T, METHODS, steps=COMMON["steps"])
    evaluation = pipe.evaluate_schedules(model, task, task.eval_x, task.eval_mask, T, METHODS, dense, calibration,
                                         schedule, FIXED, **COMMON)
    assert evaluation.linear_star == schedule(0.7)
    assert np.mean([evaluation.constant[n] for n in evaluation.pruned]) == pytest.approx(
        np.mean([evaluation.linear_star[n] for n in evaluation.pruned]))
    assert all(evaluation.constant[n] == 0.0 for n in schedule.names if n not in evaluation.pruned)
    spade = {(r["method"], r["sample"]): r["auc"] for r in evaluation.rows if r["variant"] == "spade"}
    star = {(r["method"], r["sample"]): r["auc"] for r in evaluation.rows if r["variant"] == "linear s*"}
    assert spade == star


def test_replicates_in_a_process_pool_are_the_networks_built_here(replicate):
    """Two networks side by side in two one-thread processes: in seed order, the first identical to the one built
    here with one thread, the second another network."""
    others = pipe.Replicates(TASK, [11, 12], workers=2, **OPTIONS)
    assert others.parallel and others.processes == 2
    pooled = others.results()
    assert [r.seed for r in pooled] == [11, 12]
    key = lambda r: [(row["variant"], row["method"], row["sample"], row["auc"], row["insertion"]) for row in r.rows]
    assert key(pooled[0]) == key(replicate) and pooled[0].overall == replicate.overall
    assert key(pooled[1]) != key(replicate)
    assert not pipe.Replicates(TASK, [11], workers=2, **OPTIONS).parallel     # one network: no pool
    with pytest.raises(ValueError, match="workers"):
        pipe.Replicates(TASK, [11], workers=0, **OPTIONS)
