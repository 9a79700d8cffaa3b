"""The nbgrader course (`make nbgrader`): its metadata, and a round trip through nbgrader's own CLI.

The round trip runs nbgrader from its own virtual environment (`make nbgrader-env`, which
`make test` builds): generate the release, validate the source (every test passes) and the
release with --invert (every test fails), autograde four submissions and export the grades.
"""

from __future__ import annotations

import copy
import csv
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from normlab.nbgrader_course import course_notebook, solution_with_markers, write_course
from normlab.student_edition import expected_checks

ROOT = Path(__file__).resolve().parents[1]
NBGRADER = ROOT / ".venv-nbgrader" / "bin" / "nbgrader"
CHAPTER = "02_batchnorm"  # the fastest chapter with coding exercises
N_EXERCISES = 5

WRONG_FORWARD = ("import numpy as np\n\n"
                 "def batchnorm_forward(x, gamma, beta, eps):\n"
                 "    return gamma * (x - x.mean(0)) / x.std(0) + beta\n")


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course")
    write_course(ROOT, out)
    return out


def _nbgrader_cells(nb):
    return [c.metadata.get("nbgrader", {}) for c in nb.cells]


def test_every_chapter_with_coding_exercises_is_an_assignment(course) -> None:
    chapters = {p.stem for p in (ROOT / "chapters").glob("*.ipynb")
                if expected_checks(nbformat.read(p, as_version=4))}
    assert {p.name for p in (course / "source").iterdir()} == chapters
    assert (course / "nbgrader_config.py").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "chapters").glob("*.ipynb")), ids=lambda p: p.stem)
def test_cells_carry_nbgrader_metadata(path) -> None:
    nb = nbformat.read(path, as_version=4)
    if not expected_checks(nb):
        pytest.skip("no coding exercise")
    course = course_notebook(nb, path.stem)
    meta = [m for m in _nbgrader_cells(course) if m]
    ids = [m["grade_id"] for m in meta]
    assert len(ids) == len(set(ids)), "grade_id must be unique"
    assert all(m["schema_version"] == 3 for m in meta)
    tests = [m for m in meta if m["grade"]]
    assert len(tests) == len(expected_checks(nb)) and all(m["locked"] and m["points"] == 1 for m in tests)
    solutions = [c for c in course.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert solutions and all("### BEGIN SOLUTION" in c.source and "### END SOLUTION" in c.source for c in solutions)
    unmarked = [c for c in course.cells if not c.metadata.get("nbgrader")]
    assert all(c.cell_type == "markdown" and "Your answer" in c.source for c in unmarked)
    assert not any("solution-start" in c.source for c in course.cells), "solution text must not reach students"


def test_markers_keep_signature_and_docstring_outside() -> None:
    source = 'import numpy as np\n\ndef f(x):\n    """Doc."""\n    y = 2 * x\n    return y\n\nprint(f(1))\n'
    marked = solution_with_markers(source)
    assert marked.index('"""Doc."""') < marked.index("### BEGIN SOLUTION") < marked.index("y = 2 * x")
    assert "print(f(1))" not in marked and "import numpy as np" in marked


# --------------------------------------------------------------------------- the round trip


def _nbgrader(course: Path, *args: str, timeout: int = 900) -> str:
    if not NBGRADER.exists():
        pytest.fail("nbgrader is not installed: run `make nbgrader-env` (make test does)")
    env = {k: v for k, v in os.environ.items() if k != "NORMLAB_STRICT_CHECKS"}
    env["PATH"] = f"{NBGRADER.parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([str(NBGRADER), *args], cwd=course, env=env, capture_output=True, text=True,
                          timeout=timeout)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{output[-3000:]}"
    return output


def _submit(course: Path, student: str, nb) -> None:
    folder = course / "submitted" / student / CHAPTER
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / f"{CHAPTER}.ipynb")


def _cell(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_round_trip_through_nbgrader(course) -> None:
    _nbgrader(course, "generate_assignment", CHAPTER, "--force")
    release = course / "release" / CHAPTER / f"{CHAPTER}.ipynb"
    released = nbformat.read(release, as_version=4)
    assert not any("BEGIN SOLUTION" in c.source for c in released.cells)

    source_path = course / "source" / CHAPTER / f"{CHAPTER}.ipynb"
    assert "Success! Your notebook passes all the tests." in _nbgrader(course, "validate", str(source_path))
    assert "Success! The notebook does not pass any tests." in _nbgrader(course, "validate", "--invert", str(release))

    source = nbformat.read(source_path, as_version=4)
    wrong = copy.deepcopy(source)
    _cell(wrong, f"{CHAPTER}-ex-bn-forward-solution-0").source = WRONG_FORWARD
    forged = copy.deepcopy(wrong)  # the same wrong function, its test cell edited to pass
    _cell(forged, f"{CHAPTER}-check-batchnorm_forward").source = "pass"
    for student, nb in [("ref", source), ("stub", released), ("wrong", wrong), ("forged", forged)]:
        _submit(course, student, nb)
    _nbgrader(course, "autograde", CHAPTER, "--create", "--force")
    _nbgrader(course, "export")
    rows = {r["student_id"]: r for r in csv.DictReader((course / "grades.csv").open())}
    scores = {student: float(rows[student]["score"]) for student in ("ref", "stub", "wrong", "forged")}
    assert {float(r["max_score"]) for r in rows.values()} == {N_EXERCISES}
    assert scores == {"ref": N_EXERCISES, "stub": 0, "wrong": N_EXERCISES - 1, "forged": N_EXERCISES - 1}
