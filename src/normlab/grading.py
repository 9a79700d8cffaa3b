"""Grade submitted chapter notebooks with checks that the grader runs itself.

``python -m normlab.grading SUBMISSION [SUBMISSION ...] [--csv scores.csv] [--timeout 120]``
(or ``make grade SUBMISSIONS=folder``). A submission is a notebook or a folder of them.

For each notebook:

1. The chapter is the one the notebook names (``normbook.chapter`` in its metadata, else its
   file name); the exercises to grade are those of the **book's own** chapter notebook
   (``chapters/<chapter>.ipynb``), never a list the submission carries.
2. The submission runs top to bottom in a fresh kernel, without its check cells. A cell that
   raises does not stop the others; a cell that runs past ``--timeout`` seconds or kills the
   kernel is skipped and the notebook is run again without it, so the functions defined
   after it are still graded.
3. In that kernel, each function the chapter asks for is pickled by value (cloudpickle).
   Nothing else leaves the kernel: whatever the notebook displays, prints or edits is ignored.
4. Here, in the grading process, each function is checked by the book's own checker on
   cases drawn from a fresh random seed, in a child process of its own
   (:func:`normlab.exercises.check_pickled`): time limits and crashes are enforced from
   outside, and the verdict is computed here from the outputs alone.

The report gives, per exercise, ``passed``, ``failed`` (with the checker's diagnosis),
``missing`` (no such function in the notebook), ``crashed`` or ``timed out``.
A notebook that is not valid JSON, crashes its kernel, or loops still gets a report,
with the reason in the ``notes`` column.
Used by instructors; described in README.md, section "Teaching with normbook".
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import re
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from normlab.exercises import check_pickled
from normlab.exercises.checker import STRICT_ENV_VAR
from normlab.student_edition import expected_checks

__all__ = ["NotebookReport", "Verdict", "grade_notebook", "grade_paths", "main", "score_table", "write_csv"]

_CHECK_IMPORT = re.compile(r"from\s+normlab\.exercises\s+import\s+(\w+)\s+as\s+check")
_MAX_RUNS = 4  # executions of one notebook, each without the cells that hung or killed the kernel before


@dataclass(frozen=True)
class Verdict:
    """One exercise's outcome: ``status`` is ``passed``, ``failed``, ``missing``, ``crashed`` or ``timed out``."""

    exercise: str
    status: str
    cases_passed: int = 0
    cases_total: int = 0
    diagnosis: str = ""


@dataclass
class NotebookReport:
    """The grade of one submitted notebook."""

    path: Path
    chapter: str
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(v.status == "passed" for v in self.verdicts)

    @property
    def total(self) -> int:
        return len(self.verdicts)


# --------------------------------------------------------------------------- what to grade


def _chapter_of(nb: nbformat.NotebookNode | None, path: Path) -> str:
    meta = (nb.metadata.get("normbook", {}) if nb is not None else {}) or {}
    chapter = meta.get("chapter") if isinstance(meta, dict) else None
    return chapter if isinstance(chapter, str) and re.fullmatch(r"[\w.-]+", chapter) else path.stem


def _book_exercises(chapter: str, chapters: Path) -> tuple[list[str], object | None]:
    """The checker names of the book's chapter and its exercise module (None if the chapter is unknown)."""
    reference = chapters / f"{chapter}.ipynb"
    if not reference.exists():
        return [], None
    nb = nbformat.read(reference, as_version=4)
    modules = {m for cell in nb.cells for m in _CHECK_IMPORT.findall(_source(cell))}
    if not modules:
        return [], None
    return expected_checks(nb), importlib.import_module(f"normlab.exercises.{modules.pop()}")


def _source(cell: nbformat.NotebookNode) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


# --------------------------------------------------------------------------- running the submission


_EXTRACT = """\
import pathlib as _grader_pathlib
from normlab.exercises._isolation import pickle_function as _grader_pickle
for _grader_name in {names!r}:
    _grader_target = _grader_pathlib.Path({out!r}) / (_grader_name + ".pkl")
    _grader_value = globals().get(_grader_name)
    if not callable(_grader_value):
        continue
    try:
        _grader_target.write_bytes(_grader_pickle(_grader_value))
    except BaseException as _grader_error:
        (_grader_pathlib.Path({out!r}) / (_grader_name + ".error")).write_text(repr(_grader_error)[:300])
"""


def _run(nb: nbformat.NotebookNode, cells: list[int], timeout: int, cwd: Path) -> tuple[list[int], int | None, str]:
    """Execute ``cells`` in order in a fresh kernel; stop at the first that hangs or kills it.

    Returns the cells that raised, the cell that stopped the run (or None) and why.
    """
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    raised: list[int] = []
    with client.setup_kernel():
        for index in cells:
            cell = nb.cells[index]
            cell.outputs = []
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                return raised, index, f"ran longer than {timeout} s"
            except DeadKernelError:
                return raised, index, "killed the kernel"
            if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
                raised.append(index)
    return raised, None, ""


def _execute_and_extract(nb: nbformat.NotebookNode, names: list[str], timeout: int, cwd: Path,
                         out: Path, notes: list[str]) -> None:
    """Run the submission's cells (not its check cells) and pickle the functions ``names`` into ``out``."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "check" not in c.metadata.get("tags", [])]
    nb.cells.append(nbformat.v4.new_code_cell(_EXTRACT.format(names=names, out=str(out))))
    extract = len(nb.cells) - 1
    skipped: list[int] = []
    for _ in range(_MAX_RUNS):
        raised, stopped, why = _run(nb, [i for i in code if i not in skipped] + [extract], timeout, cwd)
        if stopped is None:
            if raised and raised != [extract]:
                cells = ", ".join(str(i) for i in raised[:8] if i != extract)
                notes.append(f"{len(raised)} cell(s) raised an error (cells {cells})")
            return
        if stopped == extract:
            notes.append(f"collecting the functions {why}; none could be graded")
            return
        notes.append(f"cell {stopped} {why} and was skipped; the notebook was run again without it")
        skipped.append(stopped)
    notes.append(f"stopped after {_MAX_RUNS} runs: too many cells hang or crash")


# --------------------------------------------------------------------------- grading


def grade_notebook(path: Path, chapters: Path = Path("chapters"), timeout: int = 120,
                   seed: int | None = None) -> NotebookReport:
    """Grade ``path`` (see the module docstring); never raises for a bad submission.

    ``seed`` draws the checkers' cases (a fresh random one by default, so that no
    submission can hold the answers to the cases it saw).
    """
    path = Path(path)
    seed = secrets.randbelow(2**31) if seed is None else seed
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook, unreadable
        chapter = _chapter_of(None, path)
        names, _ = _book_exercises(chapter, chapters)
        report = NotebookReport(path, chapter, [Verdict(n, "missing") for n in names])
        report.notes.append(f"not a readable notebook ({type(err).__name__}: {str(err)[:120]})")
        return report
    chapter = _chapter_of(nb, path)
    names, module = _book_exercises(chapter, chapters)
    report = NotebookReport(path, chapter)
    if module is None:
        report.notes.append(f"the book has no chapter {chapter!r} with coding exercises; nothing to grade")
        return report
    strict = os.environ.pop(STRICT_ENV_VAR, None)  # a failing check is a grade, not an error
    try:
        with tempfile.TemporaryDirectory(prefix="normbook-grade-") as folder:
            out = Path(folder)
            _execute_and_extract(nb, names, timeout, path.parent.resolve(), out, report.notes)
            report.verdicts = [_verdict(getattr(module, name).exercise, out, seed) for name in names]
    finally:
        if strict is not None:
            os.environ[STRICT_ENV_VAR] = strict
    missing = [v.exercise for v in report.verdicts if v.status == "missing"]
    if missing:
        report.notes.append(f"not defined in the notebook: {', '.join(missing)}")
    return report


def _verdict(exercise: object, out: Path, seed: int) -> Verdict:
    name = exercise.name  # type: ignore[attr-defined]
    pickled, error = out / f"{name}.pkl", out / f"{name}.error"
    if error.exists():
        return Verdict(name, "crashed", diagnosis=f"the function could not be copied out of the notebook: "
                                                  f"{error.read_text()}")
    if not pickled.exists():
        return Verdict(name, "missing")
    result = check_pickled(exercise, pickled.read_bytes(), seed=seed)  # type: ignore[arg-type]
    diagnosis = "" if result.passed else (result.messages[0] if result.messages else "")
    return Verdict(name, result.status, result.cases_passed, result.cases_total, diagnosis)


def _notebooks(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def grade_paths(paths: list[Path], chapters: Path = Path("chapters"), timeout: int = 120,
                seed: int | None = None) -> list[NotebookReport]:
    """Grade every notebook named in ``paths`` (folders are searched recursively), all on one seed."""
    seed = secrets.randbelow(2**31) if seed is None else seed
    return [grade_notebook(path, chapters, timeout, seed) for path in _notebooks([Path(p) for p in paths])]


def score_table(reports: list[NotebookReport]) -> str:
    """A plain-text table: one row per submission with its score and notes."""
    rows = [("submission", "chapter", "score", "not passed", "notes")]
    for r in reports:
        lost = ", ".join(f"{v.exercise} ({v.status})" for v in r.verdicts if v.status != "passed")
        rows.append((str(r.path), r.chapter, f"{r.score}/{r.total}", lost or "-", "; ".join(r.notes) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def write_csv(reports: list[NotebookReport], path: Path) -> None:
    """One row per submission and exercise: status, cases and diagnosis, with the submission's score and notes."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "chapter", "exercise", "status", "cases_passed", "cases_total",
                         "diagnosis", "score", "total", "notes"])
        for r in reports:
            for v in r.verdicts or [Verdict("", "missing")]:
                writer.writerow([str(r.path), r.chapter, v.exercise, v.status, v.cases_passed, v.cases_total,
                                 v.diagnosis, r.score, r.total, "; ".join(r.notes)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlab.grading",
                                     description="Grade submitted normbook notebooks.")
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks or folders of notebooks")
    parser.add_argument("--csv", type=Path, help="also write the grades to this CSV file")
    parser.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell (default 120)")
    parser.add_argument("--chapters", type=Path, default=Path("chapters"),
                        help="the book's chapters, to know each chapter's exercises (default: chapters)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the checkers' cases (default: a fresh random one)")
    args = parser.parse_args(argv)
    reports = grade_paths(args.submissions, args.chapters, args.timeout, args.seed)
    if not reports:
        print("no notebooks found in " + ", ".join(map(str, args.submissions)), file=sys.stderr)
        return 2
    print(score_table(reports))
    if args.csv:
        write_csv(reports, args.csv)
        print(f"\nwritten: {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
