"""One vocabulary (docs/glossary.md): no public function, class or argument uses a retired spelling."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import xailab

ROOT = Path(__file__).resolve().parents[1]
#: argument names retired for another (the glossary's right-hand column)
RETIRED_ARGUMENTS = {"attr": "maps", "attribution": "maps", "relevance": "maps", "saliency": "maps", "how": "reduce",
                     "maps_a": "maps", "maps_b": "other", "normalize": "normalise", "optimizer": "optimiser"}
#: American spellings of words the package spells the British way (matplotlib's own terms, such as
#: ``colorbar``, are matplotlib's)
US_SPELLINGS = re.compile(r"normaliz|randomiz|summariz|optimiz|visualiz|initializ|behavior|(?<![a-z])color(?!bar)")


def _public_api():
    """(qualified name, object) for every public function, class, method and dataclass field."""
    seen = []
    for info in pkgutil.walk_packages(xailab.__path__, "xailab."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                seen.append((f"{module.__name__}.{name}", obj))
            elif inspect.isclass(obj):
                seen.append((f"{module.__name__}.{name}", obj))
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__"):
                        seen.append((f"{module.__name__}.{name}.{attr}", member))
    return seen


def _names(qual, obj):
    """The identifiers a user types for ``obj``: its own name, its parameters, its dataclass fields."""
    out = [qual.rsplit(".", 1)[1]]
    if inspect.isfunction(obj):
        out += list(inspect.signature(obj).parameters)
    elif dataclasses.is_dataclass(obj):
        out += [f.name for f in dataclasses.fields(obj)]
    return out


def test_no_public_signature_uses_a_retired_spelling():
    bad = []
    for qual, obj in _public_api():
        for ident in _names(qual, obj):
            if ident in RETIRED_ARGUMENTS:
                bad.append(f"{qual}: '{ident}' (say '{RETIRED_ARGUMENTS[ident]}')")
            elif US_SPELLINGS.search(ident.lower()):
                bad.append(f"{qual}: '{ident}' (British spelling)")
    assert not bad, "retired spellings in the public API (docs/glossary.md):\n" + "\n".join(sorted(set(bad)))


def test_a_sparsity_is_not_a_target():
    from xailab.papers.spade.trace import LayerReport

    assert "target" not in {f.name for f in dataclasses.fields(LayerReport)}


def test_the_glossary_names_every_retired_spelling_it_enforces():
    text = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    for old in RETIRED_ARGUMENTS:
        assert f"`{old}`" in text, f"docs/glossary.md does not list the retired '{old}'"
