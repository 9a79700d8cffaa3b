"""The student edition: no solution leaks into its notebooks or its site, and every stub fails its check helpfully.

The site part reads `_build/student/html`, which `make test` builds (`make student`).
"""

from __future__ import annotations

import html as html_lib
import importlib
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import yaml

from normlab import student_edition
from normlab.exercises import STRICT_ENV_VAR
from normlab.student_edition import (
    _chapter_notebooks,
    expected_checks,
    solution_regions,
    stub_source,
    student_notebook,
    write_student_notebooks,
)

ROOT = Path(__file__).resolve().parents[1]
STUDENT_SITE = ROOT / "_build" / "student" / "html"
CHAPTERS = _chapter_notebooks(ROOT)
new_md, new_code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def student_notebooks(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    return {path.stem: nbformat.read(path, as_version=4) for path in write_student_notebooks(ROOT, out)}


def _source(cell) -> str:
    return "".join(cell.source) if isinstance(cell.source, list) else cell.source


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _solution_fingerprints(nb) -> list[str]:
    """Distinctive pieces of every solution: body lines of its code, and runs of plain words of its prose."""
    prints = []
    for region in solution_regions(nb):
        for cell in nb.cells[region.start:region.end + 1]:
            text = _source(cell)
            if cell.cell_type == "code":
                prints += [line.strip() for line in text.splitlines()
                           if len(line.strip()) >= 14 and not line.lstrip().startswith(("def ", "#", "import ", "from "))
                           and not line.strip().startswith(('"""', "return "))]
                prints += [line.strip() for line in text.splitlines() if line.strip().startswith("return ")
                           and len(line.strip()) >= 20]
            else:
                body = re.sub(r"```\{solution-(start|end)\}[^\n]*\n?(:class:[^\n]*\n)?(```)?", " ", text)
                prints += [run.strip() for run in re.findall(r"(?:[A-Za-z][a-z']+[ ,]+){6,}[A-Za-z][a-z']+", body)]
    outside = _outside_solutions(nb)
    return [p for p in prints if p not in outside]  # text the chapter also prints elsewhere gives nothing away


def _outside_solutions(nb) -> str:
    """The chapter's text outside its solutions."""
    inside = {i for region in solution_regions(nb) for i in range(region.start, region.end + 1)}
    return "\n".join(_source(cell) for i, cell in enumerate(nb.cells) if i not in inside)


def test_every_chapter_with_exercises_has_solutions_to_check() -> None:
    fingerprints = [p for path in CHAPTERS for p in _solution_fingerprints(nbformat.read(path, as_version=4))]
    assert len(fingerprints) > 20, "the leak tests would have nothing to look for"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_contains_no_solution_text(path, student_notebooks) -> None:
    nb = nbformat.read(path, as_version=4)
    student = nbformat.writes(student_notebooks[path.stem])
    for fingerprint in _solution_fingerprints(nb):
        assert fingerprint not in student, f"solution text leaked into the student notebook: {fingerprint!r}"
    assert "solution-start" not in student and "solution-end" not in student


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook_keeps_the_exercises_and_every_check(path, student_notebooks) -> None:
    nb, student = nbformat.read(path, as_version=4), student_notebooks[path.stem]
    assert expected_checks(student) == expected_checks(nb) == student.metadata["normbook"]["checks"]
    text = nbformat.writes(student)
    assert text.count("exercise-start") == nbformat.writes(nb).count("exercise-start")
    stubs = [cell for cell in student.cells if "stub" in _tags(cell)]
    solutions = [cell for cell in nb.cells if "solution" in _tags(cell)]
    assert len(stubs) == len(solutions)
    assert all(not cell.get("outputs") for cell in student.cells if cell.cell_type == "code")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_student_site_page_contains_no_solution_text(path) -> None:
    page = STUDENT_SITE / "chapters" / f"{path.stem}.html"
    if not page.exists():
        pytest.fail(f"{page} is missing: run `make student` (make test does it)")
    raw = page.read_text(encoding="utf-8")
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", raw))
    for fingerprint in _solution_fingerprints(nbformat.read(path, as_version=4)):
        assert fingerprint not in text, f"solution text leaked into the student site: {fingerprint!r}"
    assert 'class="solution' not in raw
    assert "✓" not in raw, "a check shows the reference solution's verdict"


def test_student_site_has_no_source_or_entries_of_the_reference_implementations() -> None:
    """The book's site documents normlab.functional and normlab.exercises with their highlighted source; the
    student site has neither (the API pages are left out, so viewcode writes no source pages for them)."""
    book_modules = ROOT / "_build" / "html" / "_modules" / "normlab"
    assert (book_modules / "functional.html").exists() and (book_modules / "exercises").is_dir()
    student_modules = STUDENT_SITE / "_modules" / "normlab"
    assert (student_modules / "layers").is_dir()  # the rest of the reference is there
    assert not (student_modules / "functional.html").exists()
    assert not (student_modules / "exercises").exists()
    for page in student_edition.STUDENT_HIDDEN_API_PAGES:
        assert not (STUDENT_SITE / f"{page}.html").exists()
    for page in (STUDENT_SITE / "chapters").glob("*.html"):
        assert "_modules/normlab/exercises" not in page.read_text(encoding="utf-8"), page.name


def test_student_site_keeps_the_figures_and_numbers_of_the_book() -> None:
    page = (STUDENT_SITE / "chapters" / "02_batchnorm.html").read_text(encoding="utf-8")
    book = (ROOT / "_build" / "html" / "chapters" / "02_batchnorm.html").read_text(encoding="utf-8")
    assert page.count("<img") == book.count("<img") > 0
    assert "{glue" not in page and "Traceback" not in page
    assert "student edition" in page


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_stub_fails_its_checker_with_a_helpful_message(path, student_notebooks) -> None:
    student = student_notebooks[path.stem]
    modules = set(re.findall(r"from normlab\.exercises import (\w+) as check",
                             "\n".join(_source(c) for c in student.cells)))
    checks = expected_checks(student)
    if not checks:
        pytest.skip("no coding exercise with a checker in this chapter")
    module = importlib.import_module(f"normlab.exercises.{modules.pop()}")
    namespace = {"np": np, "torch": torch}
    for cell in student.cells:
        if "stub" in _tags(cell) and "def " in _source(cell):
            exec(compile(_source(cell), f"<stub in {path.stem}>", "exec"), namespace)
    for name in checks:
        assert name in namespace, f"the student notebook has no stub for {name}"
        result = getattr(module, name)(namespace[name])
        assert not result.passed
        message = "\n".join(result.messages)
        assert "not implemented yet" in message
        returns = getattr(module, name).exercise.returns
        assert returns[:40] in message, "the stub's message should say what to return"
        assert not any(m.startswith("Hint") for m in result.messages), "a stub is not an attempt"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_every_derivation_exercise_gets_an_answer_cell(path, student_notebooks) -> None:
    nb = nbformat.read(path, as_version=4)
    derivations = [r for r in solution_regions(nb, path.stem)
                   if not any(c.cell_type == "code" for c in nb.cells[r.start:r.end + 1])]
    answers = [c for c in student_notebooks[path.stem].cells if "answer" in _tags(c)]
    assert len(answers) == len(derivations)
    assert all(c.cell_type == "markdown" and "Your answer" in _source(c) for c in answers)


def _notebook(*cells):
    return nbformat.v4.new_notebook(cells=list(cells))


def test_stub_keeps_signature_and_docstring_and_drops_everything_else() -> None:
    source = 'import math\n\ndef area(r, *, pi=3.14):\n    """Circle area."""\n    return pi * r * r\n\nprint(area(2))\n'
    stub = stub_source(source, "Area", {"area": "Multiply by r twice."})
    namespace: dict = {}
    exec(stub, namespace)
    assert "print" not in stub and "import math" not in stub and "pi * r * r" not in stub
    assert namespace["area"].__doc__ == "Circle area."
    with pytest.raises(NotImplementedError, match="Multiply by r twice"):
        namespace["area"](1.0, pi=3.0)


def test_stub_of_a_cell_without_functions_raises_naming_the_exercise() -> None:
    stub = stub_source("x = compute()\nplot(x)\n", "Plot it", {})
    with pytest.raises(NotImplementedError, match='Exercise "Plot it"'):
        exec(stub, {})


def test_student_notebook_removes_solution_prose_and_code() -> None:
    nb = _notebook(
        new_md("```{exercise-start} Square\n:label: ex-sq\n```\nWrite square.\n```{exercise-end}\n```"),
        new_md("```{solution-start} ex-sq\n:class: dropdown\n```\nMultiply the number by itself, obviously."),
        new_code("def square(x):\n    return x * x"),
        new_md("```{solution-end}\n```"),
        new_code("check.square(square)"),
    )
    nb.cells[2].metadata["tags"] = ["solution"]
    nb.cells[4].metadata["tags"] = ["check"]
    student = student_notebook(nb, "toy")
    text = nbformat.writes(student)
    assert "itself, obviously" not in text and "x * x" not in text
    assert [_tags(c) for c in student.cells] == [[], ["stub"], ["check"]]
    assert student.metadata["normbook"] == {"chapter": "toy", "edition": "student", "checks": ["square"]}


@pytest.mark.parametrize("cells, problem", [
    ([new_md("```{solution-start} a\n```")], "has no solution-end"),
    ([new_md("```{solution-end}\n```")], "never started"),
    ([new_md("```{solution-start} a\n```"), new_md("```{solution-start} b\n```")], "inside the solution"),
])
def test_unbalanced_solutions_are_named(cells, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        solution_regions(_notebook(*cells))


def test_a_solution_tagged_cell_outside_a_solution_is_refused() -> None:
    cell = new_code("answer = 42")
    cell.metadata["tags"] = ["solution"]
    with pytest.raises(ValueError, match="outside every"):
        solution_regions(_notebook(cell))


def test_student_toc_and_api_index_leave_out_the_reference_implementations() -> None:
    """The student site documents neither normlab.functional nor normlab.exercises (their source is the answers)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    assert set(student_edition.STUDENT_HIDDEN_API_PAGES) <= set(files)  # the pages exist in the book
    kept = [entry["file"] for part in student_edition.student_toc(toc)["parts"] for entry in part["chapters"]]
    assert kept == [name for name in files if name not in student_edition.STUDENT_HIDDEN_API_PAGES]
    index = student_edition.student_api_index((ROOT / "chapters" / "api" / "index.md").read_text())
    assert "{doc}`functional`" not in index and "{doc}`exercises`" not in index
    assert "{doc}`layers`" in index and "leaves out `normlab.functional`" in index
    assert index.index("leaves out") < index.index("```{eval-rst}")
