"""The workbook's pre-registration (``shared/claims/REGISTER.md``) as data: one :class:`Entry` per id.

An entry fixes what the protocol (:mod:`xailab.claims.protocol`) needs to decide its id: the kind, the
verdict form of a claim with its effect size ``delta`` (Δ) and margin ``margin`` (δ), the family of
components, the unit of replication and its statistic, the minimum replicates, and for premises and
identities the registered thresholds. The statement and the rest of the specification (measured
quantity, sources, probes) are the register's; ``statement`` is its heading. Change an entry only through
a dated deviation in ``docs/deviations.md``, written before the run that uses it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Entry", "REGISTER", "KINDS", "FORMS", "UNITS", "entry"]

KINDS = ("premise", "identity", "claim")
#: Verdict forms of a claim (register §1.2): S ("A beats B"), SΔ ("beats by Δ"), N ("no better than"),
#: E ("equals").
FORMS = ("S", "SΔ", "N", "E")
#: Units of replication and the statistic each takes (register §1.3).
UNITS = {"seeds": "t", "pairs": "t", "splits": "t", "networks": "t", "images": "bootstrap", "image pairs": "bootstrap"}


@dataclass(frozen=True)
class Entry:
    """One registered id. ``delta`` / ``margin``: a number, ``{component: number}``, ``None`` (none), or
    ``"run"`` where the register defines it from a quantity measured in the run (the notebook passes it).
    ``checks``: for premises and identities, ``{statistic: (op, threshold)}`` with ``op`` in ``>=``,
    ``<=``, ``<``, ``>``, ``is`` (a condition that must be true)."""
    id: str
    kind: str
    paper: str
    statement: str
    notebook: str
    setting: str = ""
    form: str | None = None
    delta: object = None
    margin: object = None
    family: int = 1
    unit: str = ""
    min_replicates: int = 0
    checks: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: kind must be one of {KINDS}")
        if self.kind == "claim":
            if self.form not in FORMS or self.unit not in UNITS:
                raise ValueError(f"{self.id}: a claim needs a form in {FORMS} and a unit in {sorted(UNITS)}")
            if self.form == "SΔ" and self.delta is None:
                raise ValueError(f"{self.id}: form SΔ needs its Δ")
            if self.form in ("N", "E") and self.margin is None:
                raise ValueError(f"{self.id}: form {self.form} needs its margin δ")
        elif not self.checks:
            raise ValueError(f"{self.id}: a {self.kind} needs its registered checks")

    @property
    def statistic(self) -> str:
        return UNITS.get(self.unit, "")


def _claim(id, paper, statement, notebook, setting, form, unit, n, *, delta=None, margin=None, family=1):
    return Entry(id, "claim", paper, statement, notebook, setting, form, delta, margin, family, unit, n)


def _premise(id, paper, statement, notebook, setting, checks, kind="premise"):
    return Entry(id, kind, paper, statement, notebook, setting, checks=checks)


def _identity(id, paper, statement, notebook, checks):
    return Entry(id, "identity", paper, statement, notebook, checks=checks)


GEN_MARGINS = {"spearman": 0.025, "l2": 0.07}     # δ_S and δ_L, 5 % of each scale's range
SPADE_POOLED = "four trojaned ResNets, images pooled"    # SPADE-1, 3, 5, 9, 10, 12 (deviations of 2026-12-05)

REGISTER: tuple[Entry, ...] = (
    # ---------------------------------------------------------------- ATTR: the attribution engine
    _identity("ATTR-1", "Attribution", "Integrated Gradients converges to completeness as its steps grow",
              "01_attribution", {"g(64)": ("<=", 0.01), "g(4) > g(16) > g(64)": ("is", True)}),
    _identity("ATTR-2", "Attribution", "every method shared with Captum equals Captum's", "01_attribution",
              {"largest difference / largest Captum value": ("<=", 1e-5)}),
    _identity("ATTR-3", "Attribution", "SmoothGrad, SmoothGrad² and VarGrad come from one set of samples",
              "01_attribution", {"SmoothGrad vs mean of the base maps (relative)": ("<=", 1e-6),
                                 "VarGrad vs SmoothGrad² − SmoothGrad² of the mean (relative)": ("<=", 1e-5)}),
    _identity("ATTR-4", "Attribution", "the controls ignore the model", "01_attribution",
              {"random and Sobel bitwise identical at every stage": ("is", True)}),
    _claim("ATTR-5", "Attribution", "gradient maps decorrelate when the weights are randomised", "01_attribution",
           "32-px shapes CNN", "S", "images", 64),
    # ---------------------------------------------------------------- ROAR
    _claim("ROAR-1", "ROAR", "the base estimators are no better than random", "02_roar", "spread", "N", "seeds", 8,
           margin=0.05, family=3),
    _claim("ROAR-2", "ROAR", "SmoothGrad² and VarGrad far outperform the controls", "02_roar", "spread", "SΔ", "seeds",
           8, delta=0.10, family=12),
    _claim("ROAR-3", "ROAR", "SmoothGrad² and VarGrad far outperform their base estimator", "02_roar", "spread", "SΔ",
           "seeds", 8, delta=0.10, family=6),
    _claim("ROAR-4", "ROAR", "classic SmoothGrad improves on neither its base nor random", "02_roar", "spread", "N",
           "seeds", 8, margin=0.05, family=6),
    _premise("ROAR-5", "ROAR", "a model retrained after random removal of 90 % of the pixels keeps most of its accuracy",
             "02_roar", "spread", {"mean share of the above-chance accuracy kept": (">=", 0.5)}),
    _premise("ROAR-6", "ROAR", "a ranking that knows the evidence beats random by a wide margin", "02_roar", "spread",
             {"mean Ā(random) − Ā(oracle)": (">=", 0.20)}),
    _premise("ROAR-7", "ROAR", "no retraining collapses", "02_roar", "spread",
             {"collapsed replicates": ("<=", 0), "unmodified median test accuracy": (">=", 0.9)}),
    _premise("ROAR-8", "ROAR", "on the toy data, ROAR orders known rankings correctly", "02_roar", "toy",
             {"smallest CI95 lower end of the six differences": (">", 0.0)}),
    _claim("ROAR-9", "ROAR", "the base estimators are no better than a Sobel edge filter", "02_roar", "spread", "N",
           "seeds", 8, margin=0.05, family=3),
    _claim("ROAR-10", "ROAR", "without retraining the verdict changes: base estimators look better than random, and "
           "random removal costs more", "02_roar", "spread", "S", "seeds", 8, margin=0.05, family=4),
    _claim("ROAR-11", "ROAR", "the base estimators fall further behind random as more is removed", "02_roar", "spread",
           "S", "seeds", 8, margin=0.0625),
    # ---------------------------------------------------------------- FullGrad
    _identity("FG-1", "FullGrad", "the full-gradient terms add up to the output", "03_fullgrad",
              {"largest relative gap, float64": ("<=", 1e-10)}),
    # FG-2: over eight trained networks instead of the images of one (docs/deviations.md, 2026-12-03)
    _claim("FG-2", "FullGrad", "removing the least salient pixels changes the output least with FullGrad",
           "03_fullgrad", "colour shapes", "S", "networks", 8, margin="run", family=12),
    _claim("FG-3", "FullGrad", "under remove-and-retrain, FullGrad's removal lowers accuracy faster than the other "
           "methods'", "03_fullgrad", "spread", "S", "seeds", 8, margin=0.05, family=6),
    _premise("FG-4", "FullGrad", "the bias terms carry a real share of the output", "03_fullgrad", "",
             {"smallest median bias share over the networks": (">=", 0.05)}),
    _identity("FG-5", "FullGrad", "with a convolution and its batch-norm as one term, folding the batch-norm leaves "
              "the map unchanged", "03_fullgrad", {"largest relative change, float64": ("<=", 1e-8)}),
    _identity("FG-6", "FullGrad", "summing channels before upsampling gives the same map", "03_fullgrad",
              {"largest relative difference": ("<=", 1e-5)}),
    _claim("FG-7", "FullGrad", "signed FullGrad maps are class-sensitive (digit flipping)", "03_fullgrad", "digits",
           "S", "images", 100, margin="run"),
    _claim("FG-8", "FullGrad", "FullGrad passes the model-randomisation sanity check as the gradient does",
           "03_fullgrad", "digits", "N", "images", 64, margin=0.1),
    # ---------------------------------------------------------------- generalization
    # GEN-1, GEN-10, GEN-11: 48 pairs (16 per size), doubled under §1.5 (docs/deviations.md, 2026-12-03)
    _claim("GEN-1", "Generalization", "maps of networks trained on disjoint data grow more consistent with the "
           "training-set size", "04_generalization", "32-px shapes", "S", "pairs", 48, margin=GEN_MARGINS, family=2),
    _claim("GEN-2", "Generalization", "predictions agree long before maps do", "04_generalization", "32-px shapes",
           "S", "pairs", 8, margin=0.05, family=6),
    _claim("GEN-3", "Generalization", "SmoothGrad maps grow more consistent as σ grows", "04_generalization",
           "32-px shapes, n = 2500", "S", "pairs", 8, margin=GEN_MARGINS, family=2),
    _claim("GEN-4", "Generalization", "spectral normalisation makes maps more consistent, at equal accuracy",
           "04_generalization", "32-px shapes, n = 2500", "S", "splits", 8, margin=GEN_MARGINS, family=2),
    _premise("GEN-5", "Generalization", "the Monte-Carlo error of a SmoothGrad map is small beside the distance "
             "between networks", "04_generalization", "", {"largest floor / between-pair distance": ("<=", 1 / 3)}),
    _premise("GEN-6", "Generalization", "every network is trained to its fit", "04_generalization", "",
             {"smallest final training accuracy": (">=", 0.95)}),
    _premise("GEN-7", "Generalization", "the spectrally normalised networks are as accurate as the plain ones",
             "04_generalization", "n = 2500", {"|accuracy(SN) − accuracy(plain)|": ("<=", 0.02)}),
    _identity("GEN-8", "Generalization", "the bound calculators", "04_generalization",
              {"operator norm vs dense matrix (relative)": ("<=", 1e-3),
               "smoothed step's slope vs √(2/π)/σ": ("<=", 1e-9),
               "complexity term × σ constant over σ (relative)": ("<=", 1e-12)}),
    _identity("GEN-9", "Generalization", "the SmoothGrad estimator is unbiased", "04_generalization",
              {"largest deviation in standard errors": ("<=", 4.0)}),
    _claim("GEN-10", "Generalization", "SmoothGrad maps are more consistent than plain gradient maps",
           "04_generalization", "32-px shapes", "S", "pairs", 48, margin=GEN_MARGINS, family=2),
    # GEN-11: 96 pairs (32 per size), doubled again under §1.5 (docs/deviations.md, 2026-12-05, third entry)
    _claim("GEN-11", "Generalization", "Grad-CAM maps grow more consistent with the training-set size",
           "04_generalization", "32-px shapes", "S", "pairs", 96, margin=GEN_MARGINS, family=2),
    _claim("GEN-12", "Generalization", "starting from a network trained on more data makes maps more consistent",
           "04_generalization", "32-px shapes", "S", "splits", 24, margin=GEN_MARGINS, family=2),
    _claim("GEN-13", "Stability-fidelity", "the follow-up's trade-off: as σ grows, SmoothGrad becomes more stable "
           "and less faithful", "04_generalization", "32-px shapes, n = 2500", "S", "pairs", 8, margin=0.05, family=2),
    # ---------------------------------------------------------------- SPADE
    # SPADE-1, 3, 5, 9, 10, 12: the evaluation images of four trained networks, pooled (4 × 64), doubled twice
    # under §1.5 (docs/deviations.md, 2026-12-05)
    _claim("SPADE-1", "SPADE", "SPADE raises the mean saliency AUC by the paper's margin", "05_spade", SPADE_POOLED,
           "SΔ", "images", 256, delta=0.042),
    # SPADE-2: Student-t over the four networks (docs/deviations.md, 2026-12-05, fourth entry)
    _claim("SPADE-2", "SPADE", "SPADE raises the AUC of every method", "05_spade", "four trojaned ResNets, mean per "
           "network", "S", "networks", 4, family=10),
    _claim("SPADE-3", "SPADE", "SPADE raises the pointing-game score", "05_spade", SPADE_POOLED, "S", "images", 256,
           margin=0.01),
    _claim("SPADE-4", "SPADE", "SPADE maps rank first the pixels that matter to the dense network", "05_spade",
           "trojaned ResNet, exact solver", "SΔ", "images", 32, delta={"insertion": 0.0874, "deletion": 0.0112},
           family=2),
    _claim("SPADE-5", "SPADE", "SPADE is more accurate than the sparse final layer of Wong et al.", "05_spade",
           SPADE_POOLED, "SΔ", "images", 256, delta=0.0366),
    _premise("SPADE-6", "SPADE", "the class unit has two facets, and both act on the explained images", "05_spade",
             "trojaned ResNet", {"P(T) on clean class-T images": (">=", 0.9), "P(T) on triggered images": (">=", 0.9),
                                 "P(T) on clean images of other classes": ("<=", 0.1),
                                 "smallest flip rate of a design": (">=", 0.8), "object-facet share": (">=", 0.1)}),
    _premise("SPADE-7", "SPADE", "the dense maps leave room for the paper's gain", "05_spade", "trojaned ResNet",
             {"mean dense AUC": ("<=", 0.958)}),
    _identity("SPADE-8", "SPADE", "traces are exact, reproducible computations", "05_spade",
              {"sparsity 0: outputs (relative)": ("<=", 1e-6), "sparsity 0: maps (relative)": ("<=", 1e-5),
               "achieved sparsity within one weight per row": ("is", True),
               "reported vs recomputed error (relative)": ("<=", 1e-4), "bitwise identical in any batch": ("is", True)}),
    _claim("SPADE-9", "SPADE", "traces keep the dense network's prediction (the paper's sanity check)", "05_spade",
           SPADE_POOLED, "N", "images", 256, margin=0.05),
    _claim("SPADE-10", "SPADE", "the fixed schedule, which needs no calibration, also raises the AUC", "05_spade",
           SPADE_POOLED, "S", "images", 256, margin=0.01),
    _claim("SPADE-11", "SPADE", "the exact solver gives better maps than the fast one", "05_spade",
           "trojaned ResNet, exact solver", "SΔ", "images", 24, delta=0.0139),
    _claim("SPADE-12", "SPADE", "pruning later layers harder works better than a uniform budget", "05_spade",
           SPADE_POOLED, "S", "images", 256, margin=0.01),
    _claim("SPADE-13", "SPADE", "traces separate the two facets in the class unit's visualisation", "05_spade",
           "trojaned ResNet", "S", "image pairs", 16, margin=0.1),
    _claim("SPADE-14", "SPADE", "traces of similar images overlap more", "05_spade", "trojaned ResNet", "S", "images",
           64, margin=0.01),
)

_BY_ID = {e.id: e for e in REGISTER}
if len(_BY_ID) != len(REGISTER):
    raise RuntimeError("the register holds an id twice")


def entry(id: str) -> Entry:
    """The registered entry ``id`` (a clear error naming the known ids otherwise)."""
    try:
        return _BY_ID[id]
    except KeyError:
        raise ValueError(f"{id!r} is not a registered id; the register has {', '.join(_BY_ID)}") from None
