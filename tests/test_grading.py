"""The grading command: the book's solutions score full marks, stubs score zero, bad submissions get a report."""

from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest

from normlab.grading import grade_notebook, main, score_table
from normlab.student_edition import student_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
REFERENCE = CHAPTERS / "02_batchnorm.ipynb"  # the fastest chapter with coding exercises (~10 s)


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("submissions") / "alice.ipynb"
    nbformat.write(student_notebook(nbformat.read(REFERENCE, as_version=4), REFERENCE.stem), path)
    return path


def test_reference_solutions_score_full_marks() -> None:
    report = grade_notebook(REFERENCE, CHAPTERS)
    assert report.total == 5 and report.score == report.total, score_table([report])
    assert report.notes == []


def test_untouched_student_notebook_scores_zero_and_says_why(student_copy) -> None:
    report = grade_notebook(student_copy, CHAPTERS)
    assert report.chapter == "02_batchnorm" and report.total == 5 and report.score == 0
    assert {v.status for v in report.verdicts} == {"failed"}


def test_deleted_check_cells_count_as_missing(tmp_path, student_copy) -> None:
    nb = nbformat.read(student_copy, as_version=4)
    nb.cells = [c for c in nb.cells if "check" not in c.metadata.get("tags", [])]
    path = tmp_path / "bob.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, CHAPTERS)
    assert report.total == 5 and {v.status for v in report.verdicts} == {"missing"}
    assert any("deleted" in note for note in report.notes)


def _submission(tmp_path: Path, name: str, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["normbook"] = {"chapter": "02_batchnorm", "checks": ["batchnorm_forward"]}
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_a_looping_notebook_is_stopped_and_reported(tmp_path) -> None:
    report = grade_notebook(_submission(tmp_path, "loop.ipynb", "while True:\n    pass"), CHAPTERS, timeout=3)
    assert report.score == 0 and report.verdicts[0].status == "missing"
    assert any("longer than 3 s" in note for note in report.notes)


def test_a_crashing_kernel_is_reported(tmp_path) -> None:
    report = grade_notebook(_submission(tmp_path, "crash.ipynb", "import os\nos._exit(1)"), CHAPTERS, timeout=20)
    assert any("kernel died" in note for note in report.notes)


def test_a_file_that_is_not_a_notebook_is_reported(tmp_path) -> None:
    path = tmp_path / "02_batchnorm.ipynb"
    path.write_text("{ this is not json")
    report = grade_notebook(path, CHAPTERS)
    assert report.total == 5 and report.score == 0
    assert "not a readable notebook" in report.notes[0]


def test_a_failing_cell_does_not_stop_the_checks_after_it(tmp_path) -> None:
    solution = ("import numpy as np\n"
                "def batchnorm_forward(x, gamma, beta, eps):\n"
                "    mu, var = x.mean(0), x.var(0)\n"
                "    return gamma * (x - mu) / np.sqrt(var + eps) + beta")
    path = _submission(tmp_path, "carol.ipynb", "1 / 0", solution,
                       "from normlab.exercises import batchnorm as check\ncheck.batchnorm_forward(batchnorm_forward)")
    report = grade_notebook(path, CHAPTERS)
    assert report.score == 1 and any("raised an error" in note for note in report.notes)


def test_command_line_prints_a_table_and_writes_csv(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.ipynb"
    bad.write_text("nope")
    out = tmp_path / "grades.csv"
    assert main([str(tmp_path), "--csv", str(out), "--chapters", str(CHAPTERS)]) == 0
    printed = capsys.readouterr().out
    assert "broken.ipynb" in printed and "not a readable notebook" in printed
    rows = list(csv.DictReader(out.open()))
    assert rows and rows[0]["submission"].endswith("broken.ipynb")
