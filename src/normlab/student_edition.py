"""The student edition of the book, made from the same sources as the book.

``python -m normlab.student_edition`` (or ``make student``) writes

- ``_build/student/notebooks/chapters/*.ipynb``: every chapter notebook with each gated
  solution (``solution-start`` … ``solution-end``) removed; a solution's code cell becomes a
  stub whose functions raise ``NotImplementedError`` saying what to return (not how), and the
  ``check`` cells stay, so the student runs them against their own code. The notebook's
  metadata lists the checks it expects (``normbook.checks``), which :mod:`normlab.grading`
  reads even when a student deletes cells.
- ``_build/student/html``: the site built from those notebooks, with the main build's outputs
  (taken from its execution cache, so nothing is re-executed) on every cell but the stubs and
  checks. It holds no solution text at all, and its API reference leaves out the pages of
  ``normlab.functional`` and ``normlab.exercises`` (:data:`STUDENT_HIDDEN_API_PAGES`): their entries
  and highlighted source are the reference implementations the checkers compare against.

sphinx-exercise's ``hide_solutions`` option is not used: it fails on gated solutions.
Used by instructors; described in README.md, section "Teaching with normbook".
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml
from nbformat import NotebookNode

from normlab.site import toc_documents

__all__ = [
    "STUDENT_HIDDEN_API_PAGES",
    "SolutionRegion",
    "build_student_site",
    "expected_checks",
    "solution_regions",
    "stub_source",
    "student_notebook",
    "write_student_notebooks",
]

_START = re.compile(r"^\s*```\{solution-start\}\s*(\S+)", re.MULTILINE)
_END = re.compile(r"^\s*```\{solution-end\}", re.MULTILINE)
_EXERCISE = re.compile(r"```\{exercise-start\}\s*([^\n]*)\n:label:\s*(\S+)")
_CHECK_IMPORT = re.compile(r"from\s+normlab\.exercises\s+import\s+(\w+)\s+as\s+check")
_CHECK_CALL = re.compile(r"\bcheck\.(\w+)\(")


#: API reference pages the student site leaves out: the NumPy reference passes (the answers to the coding
#: exercises of chapters 02_batchnorm and 07_layernorm) and the checkers, whose source holds every reference.
STUDENT_HIDDEN_API_PAGES = ("chapters/api/functional", "chapters/api/exercises")


def student_toc(toc: dict) -> dict:
    """The book's ``_toc.yml`` (as loaded) without :data:`STUDENT_HIDDEN_API_PAGES`."""
    toc = copy.deepcopy(toc)
    for part in toc.get("parts", []):
        part["chapters"] = [entry for entry in part.get("chapters", [])
                            if entry.get("file") not in STUDENT_HIDDEN_API_PAGES]
    return toc


def student_api_index(text: str) -> str:
    """The API reference's index page without the bullets that link the hidden pages, and saying why."""
    hidden = {page.rsplit("/", 1)[-1] for page in STUDENT_HIDDEN_API_PAGES}
    lines = [line for line in text.splitlines()
             if not any(line.startswith(f"- {{doc}}`{name}`") for name in hidden)]
    note = ("The student edition leaves out `normlab.functional` and `normlab.exercises`: their code is the "
            "reference the exercise checkers compare your answers with.")
    return "\n".join(lines).replace("\n```{eval-rst}", f"\n{note}\n\n```{{eval-rst}}", 1) + "\n"


@dataclass(frozen=True)
class SolutionRegion:
    """Cells ``start`` … ``end`` (inclusive) of a notebook form the solution to exercise ``label``."""

    label: str
    start: int
    end: int


def _source(cell: NotebookNode) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _tags(cell: NotebookNode) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def solution_regions(nb: NotebookNode, name: str = "notebook") -> list[SolutionRegion]:
    """The gated solutions of a notebook, from its ``solution-start``/``solution-end`` cells.

    Raises ``ValueError`` for an unbalanced pair and for a ``solution``-tagged cell outside
    every region, since either would leak or lose a solution.
    """
    regions, open_at, label = [], None, ""
    for index, cell in enumerate(nb.cells):
        text = _source(cell) if cell.cell_type == "markdown" else ""
        start, end = _START.search(text), _END.search(text)
        if start:
            if open_at is not None:
                raise ValueError(f"{name}: cell {index} starts a solution inside the solution that starts at "
                                 f"cell {open_at}; close it with solution-end first.")
            open_at, label = index, start.group(1)
        if end:
            if open_at is None:
                raise ValueError(f"{name}: cell {index} ends a solution that was never started.")
            regions.append(SolutionRegion(label, open_at, index))
            open_at = None
    if open_at is not None:
        raise ValueError(f"{name}: the solution to {label!r} starting at cell {open_at} has no solution-end.")
    inside = {i for r in regions for i in range(r.start, r.end + 1)}
    stray = [i for i, cell in enumerate(nb.cells) if "solution" in _tags(cell) and i not in inside]
    if stray:
        raise ValueError(f"{name}: cells {stray} are tagged 'solution' but lie outside every "
                         "solution-start/solution-end pair.")
    return regions


def expected_checks(nb: NotebookNode) -> list[str]:
    """The checker names called in the notebook's ``check`` cells, in order (no repeats)."""
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code" and "check" in _tags(cell):
            names += [n for n in _CHECK_CALL.findall(_source(cell)) if n not in names]
    return names


def _checker_returns(nb: NotebookNode) -> dict[str, str]:
    """Checker name → what its exercise's function returns (the stub's text: what, never how)."""
    modules = {m for cell in nb.cells for m in _CHECK_IMPORT.findall(_source(cell))}
    returns = {}
    for module_name in modules:
        module = importlib.import_module(f"normlab.exercises.{module_name}")
        for name in expected_checks(nb):
            checker = getattr(module, name, None)
            exercise = getattr(checker, "exercise", None)
            if exercise is not None:
                returns[name] = exercise.returns
    return returns


def _exercise_titles(nb: NotebookNode) -> dict[str, str]:
    return {label: title.strip() for cell in nb.cells if cell.cell_type == "markdown"
            for title, label in _EXERCISE.findall(_source(cell))}


def stub_source(source: str, title: str, returns: dict[str, str]) -> str:
    """A stub for one solution cell: its functions' signatures with a body that raises.

    Each top-level ``def`` keeps its name, arguments and docstring; its body becomes
    ``raise NotImplementedError("<name>: not written yet ... <what it returns>")``: what to
    return, not how (the hints come from the check, one tier per failed attempt).
    Everything else in the cell (imports, demonstrations) is dropped. A cell without a
    function becomes a single ``raise`` that names the exercise.
    """
    functions = [node for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)]
    if not functions:
        message = f'Exercise "{title}": write your code here (see the exercise above).'
        return (f"# Exercise: {title}. Replace the line below with your code.\n"
                f"raise NotImplementedError({message!r})\n")
    stubs = []
    for function in functions:
        what = returns.get(function.name, "")
        message = f"{function.name}: not written yet (exercise \"{title}\")."
        if what:
            message += f" {what}"
        body: list[ast.stmt] = []
        docstring = ast.get_docstring(function, clean=False)
        if docstring is not None:
            body.append(function.body[0])
        body.append(ast.Raise(exc=ast.Call(func=ast.Name("NotImplementedError", ast.Load()),
                                           args=[ast.Constant(message)], keywords=[]), cause=None))
        stub = copy.deepcopy(function)
        stub.body = body
        stubs.append(ast.unparse(ast.fix_missing_locations(stub)))
    header = f"# Exercise: {title}. Replace each `raise NotImplementedError(...)` with your code.\n"
    return header + "\n\n\n".join(stubs) + "\n"


def student_notebook(nb: NotebookNode, chapter: str, keep_outputs: bool = False) -> NotebookNode:
    """The student version of a chapter notebook (see the module docstring).

    With ``keep_outputs`` (for the student site) every cell keeps its outputs except the
    stubs and the checks, which would show the reference solution's verdicts.
    """
    regions = solution_regions(nb, chapter)
    returns, titles = _checker_returns(nb), _exercise_titles(nb)
    region_at = {r.start: r for r in regions}
    cells, index = [], 0
    while index < len(nb.cells):
        region = region_at.get(index)
        if region is None:
            cell = copy.deepcopy(nb.cells[index])
            if cell.cell_type == "code" and (not keep_outputs or "check" in _tags(cell)):
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
            index += 1
            continue
        title = titles.get(region.label, region.label)
        region_cells = nb.cells[region.start:region.end + 1]
        for cell in region_cells:
            if cell.cell_type == "code":
                stub = nbformat.v4.new_code_cell(stub_source(_source(cell), title, returns))
                stub.metadata["tags"] = ["stub"]
                cells.append(stub)
        if not any(cell.cell_type == "code" for cell in region_cells):
            cells.append(_answer_cell(title))
        index = region.end + 1
    student = copy.deepcopy(nb)
    student.cells = cells
    if not keep_outputs:
        student.metadata.pop("widgets", None)
    student.metadata["normbook"] = {"chapter": chapter, "edition": "student", "checks": expected_checks(nb)}
    return student


def _answer_cell(title: str) -> NotebookNode:
    """A markdown cell where the student writes the answer to a derivation exercise."""
    cell = nbformat.v4.new_markdown_cell(
        f"**Your answer** (exercise \"{title}\"): double-click this cell and write your derivation "
        "here; `$...$` and `$$...$$` typeset mathematics.")
    cell.metadata["tags"] = ["answer"]
    return cell


def _chapter_notebooks(root: Path) -> list[Path]:
    """The notebooks listed in the book's ``_toc.yml``, in reading order."""
    return [root / f"{name}.ipynb" for name in toc_documents(root / "_toc.yml") if (root / f"{name}.ipynb").exists()]


def write_student_notebooks(root: Path, out: Path) -> list[Path]:
    """Write the student notebooks of every chapter under ``out/chapters``; return their paths."""
    written = []
    for path in _chapter_notebooks(root):
        nb = nbformat.read(path, as_version=4)
        target = out / "chapters" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student_notebook(nb, path.stem), target)
        written.append(target)
    return written


def _executed(nb: NotebookNode, cache_dir: Path, path: Path) -> NotebookNode:
    from jupyter_cache import get_cache

    try:
        _, merged = get_cache(cache_dir).merge_match_into_notebook(nb)
    except KeyError:
        raise RuntimeError(f"{path.name} is not in the execution cache {cache_dir}: run `make book` first, "
                           "so the student site can reuse its outputs.") from None
    return merged


def build_student_site(root: Path, out: Path, quiet: bool = True, cache_dir: Path | None = None) -> Path:
    """Build the student HTML site into ``out/html`` from the main build's cached outputs.

    The source tree is staged in ``out/source`` with notebook execution switched off, with the book's
    ``_static`` (its CSS, print stylesheet included, and scripts). ``cache_dir`` is the main build's execution
    cache (default ``root/_build/.jupyter_cache``; another for a build made with ``--path-output``).
    Returns the directory holding ``index.html``.
    """
    source = out / "source"
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(root / "chapters", source / "chapters",
                    ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    shutil.copy2(root / "references.bib", source / "references.bib")
    toc = student_toc(yaml.safe_load((root / "_toc.yml").read_text()))
    (source / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False, allow_unicode=True))
    for page in STUDENT_HIDDEN_API_PAGES:
        (source / f"{page}.md").unlink(missing_ok=True)
    index = source / "chapters" / "api" / "index.md"
    if index.exists():
        index.write_text(student_api_index(index.read_text()))
    if (root / "_static").is_dir():
        shutil.copytree(root / "_static", source / "_static")
    config = yaml.safe_load((root / "_config.yml").read_text())
    config["title"] = f"{config['title']} (student edition)"
    config["execute"] = {**config.get("execute", {}), "execute_notebooks": "off"}
    sphinx = config.setdefault("sphinx", {})
    sphinx_config = sphinx.setdefault("config", {})
    # Paths in the config are relative to the book's root; the staged copy lives elsewhere.
    sphinx_config["html_extra_path"] = [str((root / path).resolve()) for path in sphinx_config.get("html_extra_path", [])]
    sphinx["local_extensions"] = {name: str((root / path).resolve())
                                  for name, path in (sphinx.get("local_extensions") or {}).items()}
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    cache_dir = Path(cache_dir) if cache_dir else root / "_build" / ".jupyter_cache"
    for path in _chapter_notebooks(root):
        nb = nbformat.read(path, as_version=4)
        student = student_notebook(_executed(nb, cache_dir, path), path.stem, keep_outputs=True)
        nbformat.write(student, source / "chapters" / path.name)
    build = out / "build"
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", "-W", "-n", "--keep-going",
               "--path-output", str(build), str(source)]
    result = subprocess.run(command, capture_output=quiet, text=True)
    if result.returncode != 0:
        detail = (result.stdout or "")[-4000:] + (result.stderr or "")[-4000:] if quiet else ""
        raise RuntimeError(f"the student site failed to build:\n{detail}")
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(build / "_build" / "html", html)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normlab.student_edition", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the book's root (default: .)")
    parser.add_argument("--out", type=Path, default=Path("_build/student"), help="output folder")
    parser.add_argument("--notebooks-only", action="store_true", help="skip the student site")
    parser.add_argument("--cache", type=Path, default=None,
                        help="the book build's execution cache (default: ROOT/_build/.jupyter_cache)")
    args = parser.parse_args(argv)
    root, out = args.root.resolve(), args.out.resolve()
    notebooks = write_student_notebooks(root, out / "notebooks")
    print(f"student notebooks: {len(notebooks)} in {out / 'notebooks' / 'chapters'}")
    if not args.notebooks_only:
        html = build_student_site(root, out, cache_dir=args.cache)
        print(f"student site: {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
