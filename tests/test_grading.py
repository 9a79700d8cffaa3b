"""The grading command: scores come from checks the grader runs itself, never from what a
notebook displays; hanging, crashing and forged submissions get their true score."""

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
N_EXERCISES = 5

FORWARD = ("import numpy as np\n"
           "def batchnorm_forward(x, gamma, beta, eps):\n"
           "    mu, var = x.mean(0), x.var(0)\n"
           "    return gamma * (x - mu) / np.sqrt(var + eps) + beta")
WRONG_FORWARD = ("import numpy as np\n"
                 "def batchnorm_forward(x, gamma, beta, eps):\n"
                 "    return gamma * (x - x.mean(0)) / x.std(0) + beta")
FAKE_VERDICT = ('from IPython.display import HTML\n'
                'HTML(\'<div class="normlab-check" data-exercise="batchnorm_forward" data-passed="true" '
                'data-cases-passed="4" data-cases-total="4">✓ batchnorm_forward: all 4 cases passed</div>\')')


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("submissions") / "alice.ipynb"
    nbformat.write(student_notebook(nbformat.read(REFERENCE, as_version=4), REFERENCE.stem), path)
    return path


def _submission(tmp_path: Path, name: str, *sources: str, tags: dict[int, list[str]] | None = None) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    for index, cell_tags in (tags or {}).items():
        nb.cells[index].metadata["tags"] = cell_tags
    nb.metadata["normbook"] = {"chapter": "02_batchnorm", "checks": []}  # a forged, empty list: ignored
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def _status(report, name="batchnorm_forward"):
    return {v.exercise: v for v in report.verdicts}[name]


def test_reference_solutions_score_full_marks_on_fresh_cases() -> None:
    report = grade_notebook(REFERENCE, CHAPTERS, seed=987654)
    assert report.total == N_EXERCISES and report.score == report.total, score_table([report])
    assert report.notes == []


def test_untouched_student_notebook_scores_zero_and_says_why(student_copy) -> None:
    report = grade_notebook(student_copy, CHAPTERS)
    assert report.chapter == "02_batchnorm" and report.total == N_EXERCISES and report.score == 0
    assert {v.status for v in report.verdicts} == {"failed"}
    assert all("not implemented yet" in v.diagnosis for v in report.verdicts)


def test_deleted_check_cells_do_not_change_the_score(tmp_path) -> None:
    nb = nbformat.read(REFERENCE, as_version=4)
    nb.cells = [c for c in nb.cells if "check" not in c.metadata.get("tags", [])]
    nb.metadata["normbook"] = {"chapter": REFERENCE.stem}  # as the student edition writes it
    path = tmp_path / "bob.ipynb"
    nbformat.write(nb, path)
    report = grade_notebook(path, CHAPTERS)
    assert report.score == report.total == N_EXERCISES, score_table([report])


def test_a_forged_verdict_in_the_notebook_scores_its_true_score(tmp_path) -> None:
    path = _submission(tmp_path, "mallory.ipynb", WRONG_FORWARD,
                       "import normlab.exercises.checker as c\nc.run_check = lambda *a, **k: True", FAKE_VERDICT)
    report = grade_notebook(path, CHAPTERS)
    assert report.total == N_EXERCISES and report.score == 0
    forward = _status(report)
    assert forward.status == "failed" and "eps" in forward.diagnosis
    assert {v.status for v in report.verdicts if v.exercise != "batchnorm_forward"} == {"missing"}


def test_one_wrong_function_loses_exactly_that_exercise(tmp_path) -> None:
    path = _submission(tmp_path, "dave.ipynb", FORWARD)
    assert _status(grade_notebook(path, CHAPTERS)).status == "passed"
    path = _submission(tmp_path, "erin.ipynb", WRONG_FORWARD)
    assert _status(grade_notebook(path, CHAPTERS)).status == "failed"


def test_a_looping_cell_is_skipped_and_later_functions_still_graded(tmp_path) -> None:
    path = _submission(tmp_path, "loop.ipynb", "while True:\n    try:\n        pass\n    except BaseException:\n"
                       "        pass", FORWARD)
    report = grade_notebook(path, CHAPTERS, timeout=3)
    assert _status(report).status == "passed", score_table([report])
    assert any("longer than 3 s" in note and "skipped" in note for note in report.notes)


def test_a_cell_that_kills_the_kernel_is_skipped(tmp_path) -> None:
    path = _submission(tmp_path, "crash.ipynb", "import os\nos._exit(1)", FORWARD)
    report = grade_notebook(path, CHAPTERS, timeout=20)
    assert _status(report).status == "passed"
    assert any("killed the kernel" in note for note in report.notes)


def test_a_function_that_hangs_is_timed_out_not_waited_for(tmp_path) -> None:
    hang = "def batchnorm_forward(x, gamma, beta, eps):\n    while True:\n        pass"
    report = grade_notebook(_submission(tmp_path, "hang.ipynb", hang), CHAPTERS)
    assert _status(report).status == "timed out"


def test_a_file_that_is_not_a_notebook_is_reported(tmp_path) -> None:
    path = tmp_path / "02_batchnorm.ipynb"
    path.write_text("{ this is not json")
    report = grade_notebook(path, CHAPTERS)
    assert report.total == N_EXERCISES and report.score == 0
    assert "not a readable notebook" in report.notes[0]


def test_a_failing_cell_does_not_stop_the_cells_after_it(tmp_path) -> None:
    path = _submission(tmp_path, "carol.ipynb", "1 / 0", FORWARD)
    report = grade_notebook(path, CHAPTERS)
    assert report.score == 1 and any("raised an error" in note for note in report.notes)


def test_command_line_prints_a_table_and_writes_csv_with_diagnoses(tmp_path, capsys) -> None:
    bad = tmp_path / "broken.ipynb"
    bad.write_text("nope")
    _submission(tmp_path, "erin.ipynb", WRONG_FORWARD)
    out = tmp_path / "grades.csv"
    assert main([str(tmp_path), "--csv", str(out), "--chapters", str(CHAPTERS), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "broken.ipynb" in printed and "not a readable notebook" in printed
    rows = list(csv.DictReader(out.open()))
    assert {r["submission"].rsplit("/", 1)[-1] for r in rows} == {"broken.ipynb", "erin.ipynb"}
    erin = [r for r in rows if r["submission"].endswith("erin.ipynb") and r["exercise"] == "batchnorm_forward"]
    assert erin[0]["status"] == "failed" and erin[0]["diagnosis"]
