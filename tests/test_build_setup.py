"""The build's own promises: no stale notebook outputs, no CUDA torch, strict checks."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> str:
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_changing_normlab_makes_the_build_reexecute_every_notebook():
    # -W: "what if this file were new". The jupyter cache keys on notebook code only,
    # and Sphinx re-reads only changed sources, so both records must go.
    commands = dry_run("-W", "src/normlab/quadratic.py", "book")
    assert re.search(r"rm -rf .*_build/\.jupyter_cache", commands)
    assert re.search(r"rm -rf .*_build/\.doctrees", commands)


def test_book_build_treats_warnings_as_errors():
    commands = dry_run("-W", "src/normlab/quadratic.py", "book")
    assert re.search(r"jupyter-book build -W -n --keep-going", commands)


def test_requirements_pin_the_cpu_torch_wheel_exactly():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    torch_lines = [ln for ln in lines if re.match(r"torch\b", ln)]
    assert torch_lines == ["torch==2.13.0"]


def test_binder_takes_the_cpu_only_torch():
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in binder and "torch==2.13.0+cpu" in binder


def test_notebooks_are_committed_without_outputs():
    import nbformat

    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"
