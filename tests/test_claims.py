"""xailab.claims: the register as data and the protocol's rules on known numbers."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from xailab import claims
from xailab.claims.protocol import CONTRADICTED, INCONCLUSIVE, REPRODUCED, decide_claim, judge
from xailab.claims.register import REGISTER, entry
from xailab.stats import TEstimate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "claims" / "REGISTER.md"


def t(mean, se, n=8):
    return TEstimate(mean, se, n - 1, n)


def test_every_registered_id_is_in_the_package_and_no_other():
    ids = [e.id for e in REGISTER]
    assert len(ids) == len(set(ids)) == 51
    if SHARED.exists():   # the shared register beside the project: ids identical
        text = SHARED.read_text(encoding="utf-8")
        assert ids == re.findall(r"^\*\*([A-Z]+-\d+) ·", text, re.M)
        for e in REGISTER:
            kind = re.search(rf"^\*\*{e.id} · (\w+)", text, re.M).group(1)
            assert kind == e.kind, e.id


def test_form_S_reproduces_contradicts_and_stays_open():
    assert judge("S", t(0.10, 0.02), None, None)[0] == REPRODUCED
    assert judge("S", t(-0.10, 0.02), None, None)[0] == CONTRADICTED          # resolved in the wrong direction
    assert judge("S", t(0.001, 0.002), None, 0.05)[0] == CONTRADICTED         # equivalent to 0 within δ (TOST)
    assert judge("S", t(0.001, 0.002), None, None)[0] == INCONCLUSIVE         # δ none: only a sign contradicts
    assert judge("S", t(0.03, 0.03), None, 0.05)[0] == INCONCLUSIVE


def test_form_S_delta_needs_the_size_within_reach():
    assert judge("SΔ", t(0.12, 0.01), 0.10, None)[0] == REPRODUCED
    assert judge("SΔ", t(0.02, 0.005), 0.10, None)[0] == CONTRADICTED         # a resolved gain, but the size ruled out
    assert judge("SΔ", t(0.06, 0.02), 0.10, None)[0] == REPRODUCED            # resolved, and the size within reach
    assert judge("SΔ", t(0.04, 0.03), 0.10, None)[0] == INCONCLUSIVE          # no resolved gain, size not ruled out


def test_forms_N_and_E_are_one_and_two_sided_equivalence():
    assert judge("N", t(-0.01, 0.01), None, 0.05)[0] == REPRODUCED            # CI90 lower end above −δ
    assert judge("N", t(-0.20, 0.02), None, 0.05)[0] == CONTRADICTED          # CI90 upper end below −δ
    assert judge("N", t(-0.05, 0.02), None, 0.05)[0] == INCONCLUSIVE
    assert judge("N", t(0.30, 0.02), None, 0.05)[0] == REPRODUCED             # "no better": worse is fine
    assert judge("E", t(0.0, 0.01), None, 0.05)[0] == REPRODUCED
    assert judge("E", t(0.2, 0.01), None, 0.05)[0] == CONTRADICTED
    assert judge("E", t(0.04, 0.02), None, 0.05)[0] == INCONCLUSIVE


def test_families_need_every_component_and_contradict_after_holm():
    e = entry("ROAR-3")                                  # SΔ, Δ = 0.10, k = 6
    good = {f"c{i}": t(0.15, 0.01) for i in range(6)}
    assert decide_claim(e, good)[0] == REPRODUCED
    one_open = dict(good, c5=t(0.04, 0.03))
    assert decide_claim(e, one_open)[0] == INCONCLUSIVE
    # one component just short of the size: contradicted alone (q < 1) but not after Holm over six
    borderline = dict(good, c5=t(0.06, 0.014))
    verdict, comps, _ = decide_claim(e, borderline)
    assert comps[-1].outcome == CONTRADICTED and comps[-1].q > 1 / 6 and verdict == INCONCLUSIVE
    assert decide_claim(e, dict(good, c5=t(0.01, 0.005)))[0] == CONTRADICTED
    with pytest.raises(ValueError, match="family of 6"):
        decide_claim(e, {"c0": t(0.1, 0.01)})
    assert decide_claim(e, {"c0": t(0.1, 0.01)}, whole_family=False)[0] == REPRODUCED   # a CI-sized run's part
    with pytest.raises(ValueError, match="family of 6"):
        decide_claim(e, dict(good, c6=t(0.1, 0.01)), whole_family=False)               # never more than registered


def test_spade2_over_four_networks_contradicts_only_past_holm_at_three_degrees_of_freedom():
    e = entry("SPADE-2")                                 # S, δ none, k = 10, unit networks (deviation of 2026-12-05)
    assert (e.unit, e.statistic, e.min_replicates) == ("networks", "t", 4)
    gains = {m: TEstimate.of([0.010, 0.012, 0.008, 0.011]) for m in "abcdefghi"}
    assert decide_claim(e, dict(gains, j=TEstimate.of([0.01, -0.002, 0.004, -0.008])))[0] == INCONCLUSIVE
    # a method below 0 on every network at t ≈ −5: resolved on its own, not after Holm over ten (needs t < −7.45)
    verdict, comps, _ = decide_claim(e, dict(gains, j=t(-0.010, 0.002, n=4)))
    assert comps[-1].outcome == CONTRADICTED and verdict == INCONCLUSIVE
    assert decide_claim(e, dict(gains, j=t(-0.010, 0.001, n=4)))[0] == CONTRADICTED     # t = −10
    assert decide_claim(e, dict(gains, j=t(0.010, 0.001, n=4)))[0] == REPRODUCED
    three = {m: t(0.01, 0.001, n=3) for m in "abcdefghij"}
    assert "under-powered" in decide_claim(e, three)[2]


def test_under_powered_claims_are_inconclusive_whatever_they_show():
    verdict, _, note = decide_claim(entry("ROAR-1"), {b: t(0.0, 0.001, n=3) for b in "abc"})
    assert verdict == INCONCLUSIVE and "under-powered" in note


def test_margins_are_the_registers_unless_it_defines_them_from_the_run():
    with pytest.raises(ValueError, match="registered"):
        decide_claim(entry("ROAR-1"), {b: t(0.0, 0.01) for b in "abc"}, margin=0.2)
    with pytest.raises(ValueError, match="from the run"):
        decide_claim(entry("FG-7"), {"x": t(1.0, 0.1, n=200)})
    assert decide_claim(entry("FG-7"), {"x": t(1.0, 0.1, n=200)}, margin=0.5)[0] == REPRODUCED
    gen = entry("GEN-1")                                  # two metrics, two margins
    v, comps, _ = decide_claim(gen, {"spearman": t(0.001, 0.002, 48), "l2": t(0.001, 0.002, 48)})
    assert [c.margin for c in comps] == [0.025, 0.07] and v == CONTRADICTED   # both equivalent to 0 within δ
    v, comps, _ = decide_claim(gen, {"spearman": t(0.01, 0.002, 48), "l2": t(0.001, 0.002, 48)})
    assert [c.outcome for c in comps] == [REPRODUCED, CONTRADICTED] and v == CONTRADICTED  # both metrics needed


def test_rows_premises_probes_and_quick_mode(tmp_path, monkeypatch):
    log = tmp_path / "claims.jsonl"
    monkeypatch.setenv(claims.LOG_ENV, str(log))
    claims.start(quick=False, seed=3, notebook="test")
    row = claims.decide("SPADE-1", claims.over_images({"mean": np.full(256, 0.05) + np.linspace(-0.01, 0.01, 256)},
                                                      id="SPADE-1"), probes={"oracle gain": 0.06})
    assert row["verdict"] == REPRODUCED and row["threshold"] == {"Δ": 0.042} and row["replicates"] == 256
    claims.premise("SPADE-7", {"mean dense AUC": 0.91})
    with pytest.raises(claims.PremiseFailed, match="SPADE-6"):
        claims.premise("SPADE-6", {"P(T) on clean class-T images": 0.5, "P(T) on triggered images": 0.95,
                                   "P(T) on clean images of other classes": 0.02, "smallest flip rate of a design": 0.9,
                                   "object-facet share": 0.3})
    with pytest.raises(ValueError, match="measure them"):
        claims.premise("SPADE-7", {"dense AUC": 0.9})
    with pytest.raises(claims.IdentityFailed):
        claims.identity("FG-1", {"largest relative gap, float64": 1e-3})
    claims.not_measured("SPADE-5", "the Sparse-FC baseline is not built")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["id"] for r in records if r["record"] == "verdict"] == ["SPADE-1", "SPADE-7", "SPADE-6", "FG-1", "SPADE-5"]
    assert {"record": "probe", "notebook": "test", "id": "SPADE-1", "name": "oracle gain", "value": 0.06} in records
    assert claims.rows()[0]["probes"] == {"oracle gain": 0.06}
    assert "| SPADE-5 |" in claims.table()
    claims.start(quick=True, seed=0)
    assert claims.decide("ATTR-5", claims.over_images({"g": np.full(64, 0.3)}, id="ATTR-5"))["verdict"] == "not measured"
    partial = claims.over_images({m: np.full(64, 0.05) for m in "abcd"}, id="SPADE-2")   # 4 of 10 methods
    assert claims.decide("SPADE-2", partial)["verdict"] == "not measured"


def test_tables_show_every_metric_of_a_claim_beside_the_one_that_decided(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.LOG_ENV, str(tmp_path / "claims.jsonl"))
    claims.start(quick=False, seed=0, notebook="test")
    two = claims.decide("GEN-1", claims.over_replicates({"spearman": np.full(48, 0.01) + np.linspace(-1e-3, 1e-3, 48),
                                                         "l2": np.linspace(-0.01, 0.012, 48)}))
    text = claims.effect_text(two)   # l2 decided (equivalent to 0 within δ); spearman is shown beside it
    assert two["component"] == "l2" and text.startswith("l2: ") and "contradicted" in text
    assert "spearman: +0.01 [" in text and text.endswith("reproduced")
    spread = np.linspace(-0.02, 0.02, 64)   # method "a" has no gain, the nine others +0.01
    family = claims.decide("SPADE-2", claims.over_images({m: spread + 0.01 * (m != "a") for m in "abcdefghij"},
                                                         id="SPADE-2"))
    assert claims.effect_text(family).endswith("of 10 components 1 inconclusive, 9 reproduced")
    one = claims.decide("ATTR-5", claims.over_images({"g": np.linspace(0.2, 0.4, 64)}, id="ATTR-5"))
    assert claims.effect_text(one) == f"{one['effect']:+.4g} [{one['interval'][0]:+.4g}, {one['interval'][1]:+.4g}]"
    assert claims.effect_text({"effect": None}) == ""
    assert text in claims.table()


def test_image_bootstrap_shares_resamples_across_components_and_is_seeded():
    claims.start(seed=1)
    a = np.random.default_rng(0).normal(0.02, 0.05, 80)
    one = claims.over_images({"x": a, "y": a + 0.01}, id="SPADE-2")
    two = claims.over_images({"x": a, "y": a + 0.01}, id="SPADE-2")
    assert np.allclose(one["y"].boot - one["x"].boot, 0.01)
    assert np.array_equal(one["x"].boot, two["x"].boot)
    with pytest.raises(ValueError, match="same images"):
        claims.over_images({"x": a, "y": a[:10]}, id="SPADE-2")


def test_stratified_resamples_stay_inside_each_network_and_keep_its_weight():
    claims.start(seed=3)
    strata = np.repeat([0, 1], [64, 48])                         # two networks, unequal image counts
    idx = claims.image_resamples(112, id="SPADE-1", n_boot=500, strata=strata)
    assert idx.shape == (500, 112)
    assert (strata[idx] == strata[None, :]).all()                # every slot draws from its own network
    # a network-level shift never enters the spread: each resample holds 64 images of network 0 and 48 of network 1
    v = np.where(strata == 0, 0.0, 1.0)
    est = claims.over_images({"x": v}, id="SPADE-1", strata=strata)["x"]
    assert np.allclose(est.boot, 48 / 112) and est.mean == pytest.approx(48 / 112)
    # without strata the same call is the plain resample of every image (unchanged)
    plain = np.random.default_rng(claims.derive_seed(3, "SPADE-1", "bootstrap")).integers(0, 112, (500, 112))
    assert np.array_equal(claims.image_resamples(112, id="SPADE-1", n_boot=500), plain)
    with pytest.raises(ValueError, match="one label per image"):
        claims.image_resamples(112, id="SPADE-1", strata=strata[:10])


def test_stop_unless_records_nothing_when_the_premise_holds_and_stops_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv(claims.LOG_ENV, str(tmp_path / "claims.jsonl"))
    claims.start(quick=False, seed=1, notebook="test")
    claims.stop_unless("GEN-6", {"smallest final training accuracy": 0.99}, note="plain arm")
    assert claims.rows() == []                                   # held: the full check is recorded later
    with pytest.raises(claims.PremiseFailed, match="GEN-6"):
        claims.stop_unless("GEN-6", {"smallest final training accuracy": 0.25}, replicates=120,
                           note="plain arm: network (2500, 6, A') at 0.250")
    (row,) = claims.rows()
    assert row["verdict"] == "fails" and row["replicates"] == 120 and "(2500, 6, A')" in row["note"]
