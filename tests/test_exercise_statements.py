"""Every coding exercise's statement agrees with its checker: it prints the signature and the
tolerance the check uses; the checker has a 'returns' text and hints in tiers; no hint and no
stub gives the answer (no line of the solution appears in them)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import nbformat
import pytest

from normlab.student_edition import expected_checks, solution_regions, stub_source

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
_IMPORT = re.compile(r"from\s+normlab\.exercises\s+import\s+(\w+)\s+as\s+check")
_EXERCISE = re.compile(r"```\{exercise-start\}[^\n]*\n:label:\s*(\S+)(.*?)```\{exercise-end\}", re.DOTALL)


def _text(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _coding_exercises():
    """(chapter, label, statement, solution code, exercise) for every checked function."""
    found = []
    for path in CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        modules = {m for cell in nb.cells for m in _IMPORT.findall(_text(cell))}
        if not modules:
            continue
        module = importlib.import_module(f"normlab.exercises.{modules.pop()}")
        statements = {label: body for cell in nb.cells if cell.cell_type == "markdown"
                      for label, body in _EXERCISE.findall(_text(cell))}
        for region in solution_regions(nb, path.stem):
            code = "\n".join(_text(c) for c in nb.cells[region.start:region.end + 1] if c.cell_type == "code")
            for name in expected_checks(nb):
                if re.search(rf"^def {name}\(", code, re.MULTILINE):
                    exercise = getattr(module, name).exercise
                    found.append((path.stem, region.label, statements.get(region.label, ""), code, exercise))
    return found


EXERCISES = _coding_exercises()
IDS = [f"{chapter}:{exercise.name}" for chapter, _, _, _, exercise in EXERCISES]


def test_every_chapter_with_checks_is_found():
    assert len(EXERCISES) >= 27


@pytest.mark.parametrize("chapter, label, statement, code, exercise", EXERCISES, ids=IDS)
def test_statement_prints_the_signature_and_the_tolerance(chapter, label, statement, code, exercise):
    flat = " ".join(statement.split())
    assert exercise.signature_text() in flat, f"{chapter} {label}: state `{exercise.signature_text()}`"
    if exercise.tolerance_text():
        assert exercise.tolerance_text() in flat, f"{chapter} {label}: state '{exercise.tolerance_text()}'"


@pytest.mark.parametrize("chapter, label, statement, code, exercise", EXERCISES, ids=IDS)
def test_checker_says_what_to_return_and_has_hints_in_tiers(chapter, label, statement, code, exercise):
    assert exercise.returns, f"{exercise.name}: say what the function returns (for the stub)"
    assert len(exercise.hints) >= 2, f"{exercise.name}: give a pointer to the equation, then the idea"


def _solution_lines(code: str) -> list[str]:
    """The solution's computing lines, without spaces: what a hint or a stub must not contain."""
    lines = []
    for line in code.splitlines():
        text = line.split("#")[0].strip()
        if not text or text.startswith(("def ", "import ", "from ", '"""', "'''", "return x", "@")):
            continue
        if "=" in text and not text.startswith("return"):
            text = text.split("=", 1)[1].strip()
        text = re.sub(r"\s+", "", text.removeprefix("return"))
        if len(text) >= 12:
            lines.append(text)
    return lines


@pytest.mark.parametrize("chapter, label, statement, code, exercise", EXERCISES, ids=IDS)
def test_no_hint_and_no_stub_contains_a_line_of_the_solution(chapter, label, statement, code, exercise):
    stub = stub_source(code, label, {exercise.name: exercise.returns})
    texts = {"stub": stub, "returns": exercise.returns, **{f"hint {i + 1}": h for i, h in enumerate(exercise.hints)}}
    for line in _solution_lines(code):
        for where, text in texts.items():
            assert line not in re.sub(r"\s+", "", text), f"{exercise.name}: the {where} gives away `{line}`"
