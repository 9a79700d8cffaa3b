"""`make pdf`: the built site printed to one PDF, with a bookmark per page of the table of contents."""

import subprocess
import sys
from pathlib import Path

from pypdf import PdfReader

from normlab.site import toc_documents

ROOT = Path(__file__).resolve().parents[1]


def test_book_pdf_has_every_page_of_the_toc_with_typeset_math() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "book-pdf")], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    reader = PdfReader(ROOT / "_build" / "pdf" / "normbook.pdf")
    entries = len(toc_documents(ROOT / "_toc.yml"))
    assert len(reader.outline) == entries
    assert len(reader.pages) > 2 * entries
    text = "".join(page.extract_text() for page in reader.pages[:12])
    assert "\\frac" not in text and "\\begin{" not in text, "raw TeX in the PDF: MathJax did not run"
    assert "Why normalize" in text
