"""The book's coding exercises as an nbgrader course, for instructors who already run nbgrader.

``python -m normlab.nbgrader_course --out _build/nbgrader`` (or ``make nbgrader``) writes

- ``nbgrader_config.py``: course ``normbook``, a gradebook in the folder, a per-cell timeout
  long enough for the chapters' experiments;
- ``source/<chapter>/<chapter>.ipynb`` for every chapter with coding exercises, in nbgrader's
  cell metadata (schema 3):

  - each solution code cell is an *autograded answer*: every function keeps its signature and
    docstring, and its body lies between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, which
    ``nbgrader generate_assignment`` replaces with ``raise NotImplementedError()``;
  - each check cell is an *autograder test* (``grade``, ``locked``, one point per exercise) that
    calls the book's checker and fails with the checker's message;
  - the solutions' text is left out; a derivation exercise gets a free markdown cell for the
    answer (graded by hand, outside nbgrader's points);
  - every other cell is *read-only* (``locked``).

nbgrader runs the tests in the student's kernel: it restores edited or deleted test cells from
the source, but code in another cell of the notebook can still tamper with the checker there.
``make grade`` (:mod:`normlab.grading`) is the route that cannot be forged.
Used by instructors; described in README.md, section "Teaching with normbook".
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import sys
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from normlab.site import toc_documents
from normlab.student_edition import expected_checks, solution_regions

__all__ = ["CELL_TIMEOUT_S", "course_notebook", "solution_with_markers", "test_source", "write_course"]

CELL_TIMEOUT_S = 600
"""nbgrader's per-cell execution timeout: the chapters' experiment cells take up to a minute here."""

_CHECK_IMPORT = re.compile(r"from\s+normlab\.exercises\s+import\s+(\w+)\s+as\s+check")
_CHECK_CALL = re.compile(r"\bcheck\.(\w+)\(")

_CONFIG = '''\
"""nbgrader configuration of the normbook course (written by `make nbgrader`)."""
import os

c = get_config()  # noqa: F821 (nbgrader provides it)
here = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "normbook"
c.CourseDirectory.root = here
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
c.Exchange.root = os.path.join(here, "exchange")
# The chapters run their experiments before the exercises: allow each cell {timeout} s.
c.Execute.timeout = {timeout}
c.ExecutePreprocessor.timeout = {timeout}
# One BLAS thread per kernel, as in the book's build.
os.environ.setdefault("OMP_NUM_THREADS", "1")
'''


def _source(cell: NotebookNode) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _metadata(grade_id: str, *, solution: bool = False, grade: bool = False, locked: bool = False,
              points: int = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = points
    return meta


def solution_with_markers(source: str) -> str:
    """A solution cell with each function's body between nbgrader's solution markers.

    Signatures, decorators and docstrings stay outside the markers; imports are kept;
    other top-level statements (demonstrations) are dropped. A cell without a function is
    wrapped whole.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    if not functions:
        return "### BEGIN SOLUTION\n" + source.rstrip("\n") + "\n### END SOLUTION\n"
    pieces = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            pieces.append("\n".join(lines[node.lineno - 1:node.end_lineno]))
        elif isinstance(node, ast.FunctionDef):
            pieces.append(_function_with_markers(node, lines))
    return "\n\n\n".join(pieces) + "\n"


def _function_with_markers(node: ast.FunctionDef, lines: list[str]) -> str:
    body = node.body
    first = body[0]
    has_docstring = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                     and isinstance(first.value.value, str))
    start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
    head_end = first.end_lineno if has_docstring else first.lineno - 1  # last line of the signature/docstring
    head, rest = lines[start - 1:head_end], body[1:] if has_docstring else body
    if not rest:  # only a docstring: nothing to hide
        return "\n".join(head)
    indent = re.match(r"\s*", lines[rest[0].lineno - 1]).group(0)
    code = lines[head_end:node.end_lineno]
    return "\n".join([*head, f"{indent}### BEGIN SOLUTION", *code, f"{indent}### END SOLUTION"])


def test_source(module: str, name: str) -> str:
    """The autograder test of one exercise: the book's checker, failing with its message."""
    return (f"from normlab.exercises import {module} as check\n"
            f"_result = check.{name}({name})\n"
            f"assert _result.passed, repr(_result)\n")


def course_notebook(nb: NotebookNode, chapter: str) -> NotebookNode:
    """The nbgrader source version of a chapter notebook (see the module docstring)."""
    modules = {m for cell in nb.cells for m in _CHECK_IMPORT.findall(_source(cell))}
    if not modules:
        raise ValueError(f"{chapter}: no check cell imports a module of normlab.exercises")
    module = modules.pop()
    regions = {r.start: r for r in solution_regions(nb, chapter)}
    cells, index, checked = [], 0, set()
    while index < len(nb.cells):
        region = regions.get(index)
        if region is not None:
            code = [c for c in nb.cells[region.start:region.end + 1] if c.cell_type == "code"]
            for n, cell in enumerate(code):
                new = nbformat.v4.new_code_cell(solution_with_markers(_source(cell)))
                new.metadata["nbgrader"] = _metadata(f"{chapter}-{region.label}-solution-{n}", solution=True)
                cells.append(new)
            if not code:
                answer = nbformat.v4.new_markdown_cell("**Your answer** (graded by hand): write your derivation here.")
                cells.append(answer)
            index = region.end + 1
            continue
        cell = copy.deepcopy(nb.cells[index])
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        names = _CHECK_CALL.findall(_source(cell)) if "check" in cell.metadata.get("tags", []) else []
        if names:
            for name in names:
                test = nbformat.v4.new_code_cell(test_source(module, name))
                test.metadata["nbgrader"] = _metadata(f"{chapter}-check-{name}", grade=True, locked=True, points=1)
                cells.append(test)
                checked.add(name)
        else:
            cell.metadata["nbgrader"] = _metadata(f"{chapter}-cell-{index}", locked=True)
            cells.append(cell)
        index += 1
    missing = set(expected_checks(nb)) - checked
    if missing:
        raise ValueError(f"{chapter}: checks outside check cells: {sorted(missing)}")
    course = copy.deepcopy(nb)
    course.cells = cells
    course.metadata.pop("widgets", None)
    return course


def write_course(root: Path, out: Path) -> list[Path]:
    """Write the course into ``out`` and return the source notebooks written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "nbgrader_config.py").write_text(_CONFIG.format(timeout=CELL_TIMEOUT_S))
    written = []
    for name in toc_documents(root / "_toc.yml"):
        path = root / f"{name}.ipynb"
        if not path.exists():
            continue
        nb = nbformat.read(path, as_version=4)
        if not expected_checks(nb):
            continue
        target = out / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(course_notebook(nb, path.stem), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlab.nbgrader_course", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the book's root (default: .)")
    parser.add_argument("--out", type=Path, default=Path("_build/nbgrader"), help="the course folder")
    args = parser.parse_args(argv)
    written = write_course(args.root.resolve(), args.out.resolve())
    print(f"nbgrader course: {len(written)} assignments in {args.out / 'source'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
