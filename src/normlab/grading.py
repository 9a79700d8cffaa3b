"""Grade submitted chapter notebooks: execute each in a fresh kernel and collect the checkers' verdicts.

``python -m normlab.grading SUBMISSION [SUBMISSION ...] [--csv scores.csv] [--timeout 120]``
(or ``make grade SUBMISSIONS=folder``). A submission is a notebook or a folder of them.
Each notebook runs top to bottom in a new kernel with ``allow_errors`` (a failing cell
does not stop the others) and a time limit per cell. Every check cell displays a
:class:`normlab.exercises.CheckResult`, whose HTML carries its verdict; those verdicts
are the grade. The exercises expected are those of the chapter (the student notebook's
``normbook.checks`` metadata, else the check cells of ``chapters/<name>.ipynb``), so a
check whose cell was deleted counts as missing, not as absent from the chapter.

A notebook that is not valid JSON, crashes its kernel, or loops still gets a report,
with the reason in the ``notes`` column.
Used by instructors; described in README.md, section "Teaching with normbook".
"""

from __future__ import annotations

import argparse
import csv
import html
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from normlab.exercises.checker import STRICT_ENV_VAR
from normlab.student_edition import expected_checks

__all__ = ["NotebookReport", "Verdict", "grade_notebook", "grade_paths", "main", "score_table", "write_csv"]

_VERDICT = re.compile(
    r'class="normlab-check" data-exercise="([^"]*)" data-passed="(true|false)" '
    r'data-cases-passed="(\d+)" data-cases-total="(\d+)"'
)


@dataclass(frozen=True)
class Verdict:
    """One exercise's outcome: ``status`` is ``passed``, ``failed`` or ``missing``."""

    exercise: str
    status: str
    cases_passed: int = 0
    cases_total: int = 0


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


def _verdicts_in(nb: nbformat.NotebookNode) -> dict[str, Verdict]:
    found: dict[str, Verdict] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            text = output.get("data", {}).get("text/html", "")
            text = "".join(text) if isinstance(text, list) else text
            for name, passed, done, total in _VERDICT.findall(text):
                name = html.unescape(name)
                found[name] = Verdict(name, "passed" if passed == "true" else "failed", int(done), int(total))
    return found


def _expected(nb: nbformat.NotebookNode | None, path: Path, chapters: Path) -> tuple[str, list[str]]:
    meta = (nb.metadata.get("normbook", {}) if nb is not None else {}) or {}
    chapter = meta.get("chapter") or path.stem
    if meta.get("checks"):
        return chapter, list(meta["checks"])
    reference = chapters / f"{chapter}.ipynb"
    if reference.exists():
        return chapter, expected_checks(nbformat.read(reference, as_version=4))
    return chapter, expected_checks(nb) if nb is not None else []


def grade_notebook(path: Path, chapters: Path = Path("chapters"), timeout: int = 120) -> NotebookReport:
    """Execute ``path`` in a fresh kernel and return its :class:`NotebookReport`; never raises for a bad submission."""
    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as err:  # not JSON, not a notebook, unreadable
        chapter, checks = _expected(None, path, chapters)
        report = NotebookReport(path, chapter, [Verdict(c, "missing") for c in checks])
        report.notes.append(f"not a readable notebook ({type(err).__name__}: {str(err)[:120]})")
        return report
    chapter, checks = _expected(nb, path, chapters)
    report = NotebookReport(path, chapter)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # grade what runs now, never outputs saved in the file
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    strict = os.environ.pop(STRICT_ENV_VAR, None)  # the kernel must report, not raise
    try:
        client.execute()
    except CellTimeoutError:
        report.notes.append(f"a cell ran longer than {timeout} s and was stopped (an infinite loop?); "
                            "later cells did not run")
    except DeadKernelError:
        report.notes.append("the kernel died (the notebook crashed or exited); later cells did not run")
    except Exception as err:
        report.notes.append(f"execution stopped: {type(err).__name__}: {str(err)[:160]}")
    finally:
        if strict is not None:
            os.environ[STRICT_ENV_VAR] = strict
    errors = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              and any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
    if errors:
        report.notes.append(f"{len(errors)} cell(s) raised an error (cells {', '.join(map(str, errors[:8]))})")
    seen = _verdicts_in(nb)
    report.verdicts = [seen.get(name, Verdict(name, "missing")) for name in checks]
    extra = sorted(set(seen) - set(checks))
    if extra:
        report.notes.append(f"checks not in this chapter ignored: {', '.join(extra)}")
    if any(v.status == "missing" for v in report.verdicts):
        report.notes.append("missing checks: their check cell was deleted or did not run")
    return report


def _notebooks(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        else:
            found.append(path)
    return found


def grade_paths(paths: list[Path], chapters: Path = Path("chapters"), timeout: int = 120) -> list[NotebookReport]:
    """Grade every notebook named in ``paths`` (folders are searched recursively)."""
    return [grade_notebook(path, chapters, timeout) for path in _notebooks([Path(p) for p in paths])]


def score_table(reports: list[NotebookReport]) -> str:
    """A plain-text table: one row per submission with its score and notes."""
    rows = [("submission", "chapter", "score", "failed or missing", "notes")]
    for r in reports:
        lost = ", ".join(f"{v.exercise} ({v.status})" for v in r.verdicts if v.status != "passed")
        rows.append((str(r.path), r.chapter, f"{r.score}/{r.total}", lost or "-", "; ".join(r.notes) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)) for row in rows]
    return "\n".join([lines[0], "-" * len(lines[0])] + lines[1:])


def write_csv(reports: list[NotebookReport], path: Path) -> None:
    """One row per submission and exercise: status and cases, with the submission's score and notes."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["submission", "chapter", "exercise", "status", "cases_passed", "cases_total",
                         "score", "total", "notes"])
        for r in reports:
            for v in r.verdicts or [Verdict("", "missing")]:
                writer.writerow([str(r.path), r.chapter, v.exercise, v.status, v.cases_passed, v.cases_total,
                                 r.score, r.total, "; ".join(r.notes)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlab.grading",
                                     description="Grade submitted normbook notebooks.")
    parser.add_argument("submissions", nargs="+", type=Path, help="notebooks or folders of notebooks")
    parser.add_argument("--csv", type=Path, help="also write the grades to this CSV file")
    parser.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell (default 120)")
    parser.add_argument("--chapters", type=Path, default=Path("chapters"),
                        help="the book's chapters, to know each chapter's exercises (default: chapters)")
    args = parser.parse_args(argv)
    reports = grade_paths(args.submissions, args.chapters, args.timeout)
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
