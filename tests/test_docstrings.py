"""Public docstrings are in the numpydoc form the documentation site reads: a Returns section is a
type line with its description indented below it (free text there renders as broken items)."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

MODULES = ("tl", "pl", "im", "ts", "models", "datasets")


def _public_functions():
    for name in MODULES:
        module = importlib.import_module(f"scnapse.{name}")
        for attr in getattr(module, "__all__", dir(module)):
            obj = getattr(module, attr)
            if inspect.isfunction(obj) and obj.__module__.startswith("scnapse"):
                yield f"{name}.{attr}", obj


@pytest.mark.parametrize("name,func", list(_public_functions()), ids=lambda v: v if isinstance(v, str) else "")
def test_returns_section_is_a_type_then_an_indented_description(name, func):
    doc = inspect.getdoc(func) or ""
    match = re.search(r"^Returns\n-{3,}\n(.*?)(?:\n\n[A-Z][a-z]+\n-{3,}|\Z)", doc, re.S | re.M)
    if match is None:
        return
    lines = [ln for ln in match.group(1).split("\n") if ln.strip()]
    assert lines, f"{name}: empty Returns section"
    first, rest = lines[0], lines[1:]
    assert not first.startswith(" "), f"{name}: the Returns section must start with a type"
    if rest:
        assert all(ln.startswith("    ") for ln in rest), (
            f"{name}: under Returns, write the type on one line and indent its description below it"
        )
    else:
        assert len(first.split()) <= 4, f"{name}: a one-line Returns entry is a type; indent the description below it"


COMPLETE = ("tl", "pl", "im", "ts", "models", "datasets", "train")


def _public_names():
    for name in COMPLETE:
        module = importlib.import_module(f"scnapse.{name}")
        for attr in getattr(module, "__all__", [a for a in dir(module) if not a.startswith("_")]):
            obj = getattr(module, attr)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__.startswith("scnapse"):
                yield f"{name}.{attr}", obj


def _takes_parameters(obj) -> bool:
    func = obj.__init__ if inspect.isclass(obj) else obj
    if inspect.isclass(obj) and not getattr(func, "__module__", "").startswith("scnapse"):
        return False  # the constructor is inherited (object, Exception): nothing to document
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    named = [p for p in params if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return bool(named)


def _section(doc: str, *titles: str) -> bool:
    return any(re.search(rf"^{t}\n-{{3,}}", doc, re.M) for t in titles)


@pytest.mark.parametrize("name,obj", list(_public_names()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_name_documents_its_parameters_and_returns(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{name} has no docstring"
    if _takes_parameters(obj):
        assert _section(doc, "Parameters"), f"{name}: no Parameters section"
    if inspect.isfunction(obj):
        returns = inspect.signature(obj).return_annotation
        if returns not in (None, "None"):
            assert _section(doc, "Returns", "Yields"), f"{name}: no Returns section"
