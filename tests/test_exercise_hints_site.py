"""The exercises' first-tier hints point at equations by number and label ("Equation (2.5),
`eq-bn-dx`"): the number must be the one the built site prints for that label."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("NORMBOOK_SITE", ROOT / "_build" / "html"))
_IMPORT = re.compile(r"from\s+normlab\.exercises\s+import\s+(\w+)\s+as\s+check")
_POINTER = re.compile(r"\((\d+\.\d+)\),\s*`(eq-[\w-]+)`")


def _chapters_with_checks() -> list[tuple[str, str]]:
    found = []
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        modules = set(_IMPORT.findall(text))
        if modules:
            found.append((path.stem, modules.pop()))
    return found


def _equation_numbers() -> dict[str, str]:
    numbers = {}
    for page in SITE.glob("chapters/*.html"):
        html = page.read_text(encoding="utf-8")
        for label, number in re.findall(r'id="equation-([\w-]+)">\s*<span class="eqno">\(([\d.]+)\)', html):
            numbers[label] = number
    return numbers


@pytest.mark.parametrize("chapter, module_name", _chapters_with_checks())
def test_hints_cite_the_equation_numbers_the_site_prints(chapter, module_name):
    if not (SITE / "index.html").exists():
        pytest.fail("the site is not built: run `make book` (make test does it first)")
    numbers = _equation_numbers()
    module = importlib.import_module(f"normlab.exercises.{module_name}")
    pointers = [(name, number, label) for name in module.__all__
                for hint in getattr(module, name).exercise.hints for number, label in _POINTER.findall(hint)]
    for name, number, label in pointers:
        assert label in numbers, f"{name}: the hint cites `{label}`, which no page defines"
        assert numbers[label] == number, f"{name}: the hint says ({number}) for `{label}`; the site prints ({numbers[label]})"
