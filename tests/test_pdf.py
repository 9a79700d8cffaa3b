"""`make pdf`: the print edition, two PDFs printed from the built sites by tools/book-pdf.

- `_build/pdf/normbook.pdf` from `_build/html` (with the solutions, for instructors);
- `_build/pdf/normbook-student.pdf` from `_build/student/html` (`make student`; no solution text).

Each has a title page, a contents page, every page of the table of contents with a bookmark and a bookmark per
section under it, and page numbers in the footer. The sites can be pointed elsewhere with NORMBOOK_SITE and
NORMBOOK_STUDENT_SITE (e.g. a build made with `jupyter-book build --path-output`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from pypdf import PdfReader

from normlab.site import toc_documents
from normlab.student_edition import _chapter_notebooks

ROOT = Path(__file__).resolve().parents[1]
SITES = {
    "instructor": Path(os.environ.get("NORMBOOK_SITE", ROOT / "_build" / "html")),
    "student": Path(os.environ.get("NORMBOOK_STUDENT_SITE", ROOT / "_build" / "student" / "html")),
}
NAMES = {"instructor": "normbook.pdf", "student": "normbook-student.pdf"}


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory) -> dict[str, PdfReader]:
    """Both editions, printed once for the module (each takes a minute or two)."""
    out = tmp_path_factory.mktemp("pdf")
    readers = {}
    for edition, site in SITES.items():
        if not (site / "index.html").exists():
            pytest.fail(f"{site} is not built: run `make book` and `make student` (make test does both)")
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "book-pdf"), "--site", str(site),
                                 "--out", str(out / NAMES[edition]), "--edition", edition],
                                cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        readers[edition] = PdfReader(out / NAMES[edition])
    return readers


def _outline(reader: PdfReader, items=None, depth: int = 0) -> list[tuple[int, str, int]]:
    entries = []
    for item in reader.outline if items is None else items:
        if isinstance(item, list):
            entries += _outline(reader, item, depth + 1)
        else:
            entries.append((depth, item.title, reader.get_destination_page_number(item)))
    return entries


@pytest.mark.parametrize("edition", SITES)
def test_pdf_has_a_title_page_and_a_bookmark_per_page_and_per_section(pdfs, edition) -> None:
    reader = pdfs[edition]
    documents = toc_documents(ROOT / "_toc.yml")
    outline = _outline(reader)
    top = [entry for entry in outline if entry[0] == 0]
    assert [title for _, title, _ in top][0] == "Contents"
    assert len(top) == 1 + len(documents), "one bookmark for the contents and one per page of the toc"
    pages = [page for _, _, page in top]
    assert pages == sorted(pages) and pages[0] == 1, "bookmarks out of order"
    sections = [entry for entry in outline if entry[0] == 1]
    assert len(sections) >= 5 * 13, "the chapters' sections are not bookmarked"
    assert any(re.match(r"2\.2\. Training versus inference", title) for _, title, _ in sections)
    assert all(page is not None and 0 <= page < len(reader.pages) for _, _, page in outline)
    assert 150 < len(reader.pages) < 400, f"{len(reader.pages)} pages"
    title_page = reader.pages[0].extract_text()
    assert "normbook" in title_page and ("with the solutions" if edition == "instructor" else "without") in title_page


@pytest.mark.parametrize("edition", SITES)
def test_pdf_pages_are_numbered_and_math_is_typeset(pdfs, edition) -> None:
    reader = pdfs[edition]
    for number in (2, 10, len(reader.pages)):
        text = reader.pages[number - 1].extract_text().rstrip()
        assert text.endswith(str(number)), f"page {number} has no page number in its footer: {text[-80:]!r}"
    text = "".join(page.extract_text() for page in reader.pages[:20])
    assert "\\frac" not in text and "\\begin{" not in text, "raw TeX in the PDF: MathJax did not run"
    assert "Why normalize" in text
    assert "Show code cell source" not in text, "the site's fold toggles are printed"


def test_student_pdf_has_no_solution_text_and_the_instructor_pdf_has_it(pdfs) -> None:
    from test_student_edition import _outside_solutions, _solution_fingerprints  # tests/ is on sys.path

    squash = lambda text: re.sub(r"\s+", "", text)  # noqa: E731 (wrapped lines and hyphenless breaks)
    student = squash("".join(page.extract_text() for page in pdfs["student"].pages))
    instructor = squash("".join(page.extract_text() for page in pdfs["instructor"].pages))
    notebooks = [nbformat.read(path, as_version=4) for path in _chapter_notebooks(ROOT)]
    outside = "\n".join(_outside_solutions(nb) for nb in notebooks)
    # a line one chapter's solution shares with another chapter's text gives nothing away
    fingerprints = [f for nb in notebooks for f in _solution_fingerprints(nb) if f not in outside]
    leaked = [f for f in fingerprints if squash(f) in student]
    assert not leaked, f"solution text in the student PDF: {leaked[:3]}"
    found = [f for f in fingerprints if squash(f) in instructor]
    assert len(found) > len(fingerprints) / 2, "the instructor PDF should print the solutions open"
