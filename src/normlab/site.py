"""The built site, for the tools and tests that read it: page order, a local server, headless Chromium.

- :func:`toc_documents`: the documents of ``_toc.yml`` in reading order (root first).
- :func:`repository_url`: the book's repository, ``repository.url`` of ``_config.yml``: the one place it is
  set (the launch buttons and the notebooks' Colab setup cell take it from there).
- :func:`serve_directory`: serve a folder on 127.0.0.1 for as long as a ``with`` block runs.
- :data:`CHROMIUM_FLAGS`: the flags that let Debian's Chromium run headless on a machine with no
  network (without the background-networking flags it keeps trying to reach Google's hosts).
- The print edition: :data:`PRINT_PAGE` (paper and margins of ``tools/book-pdf``), :data:`PRINT_WIDTH_PX`
  (the text width they leave, in CSS pixels) and :data:`PRINT_PREPARE_JS` (what a page needs before it is
  printed, beyond ``_static/normbook-print.css``).

Used by ``normlab.student_edition``, ``tools/book-pdf`` and the site and browser tests.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

__all__ = ["CHROMIUM_FLAGS", "PRINT_PAGE", "PRINT_PREPARE_JS", "PRINT_WIDTH_PX", "repository_url", "serve_directory",
           "toc_documents"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

#: Paper and margins of the print edition (arguments of Playwright's ``page.pdf``). The bottom margin holds
#: the page number.
PRINT_PAGE = {"format": "A4", "margin": {"top": "14mm", "bottom": "16mm", "left": "12mm", "right": "12mm"}}

#: The text width those leave, in CSS pixels (96 per inch): A4's 210 mm less 24 mm of margins, 186 mm.
PRINT_WIDTH_PX = round((210 - 24) / 25.4 * 96)

#: Run on a page laid out at :data:`PRINT_WIDTH_PX` in print media, once MathJax has typeset, before printing:
#: - opens every ``<details>``;
#: - wraps each line of code and text output in ``span.print-line``, so that normbook-print.css can hang
#:   the continuation of a long line under a "↪" (a ``<pre>`` has no element per line to style);
#: - shrinks each display equation wider than its box until it fits (MathJax 3 cannot break lines, and CSS
#:   cannot scale to fit). Returns how many equations it shrank.
PRINT_PREPARE_JS = r"""
() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  for (const pre of document.querySelectorAll('div.highlight pre, div.cell_output pre')) {
    if (pre.dataset.printLines) continue;
    pre.dataset.printLines = '1';
    const lines = [];
    let open = [], line = '';
    for (const [, tag, text] of pre.innerHTML.matchAll(/(<[^>]*>)|([^<]+)/g)) {
      if (tag) {
        if (tag.startsWith('</')) open.pop(); else if (!tag.endsWith('/>')) open.push(tag);
        line += tag;
        continue;
      }
      const pieces = text.split('\n');
      pieces.forEach((piece, i) => {
        line += piece;
        if (i < pieces.length - 1) { lines.push(line + '</span>'.repeat(open.length)); line = open.join(''); }
      });
    }
    if (line.replace(/<[^>]*>/g, '')) lines.push(line);
    const blank = l => !l.replace(/<[^>]*>/g, '');  // an empty line keeps its height with a zero-width space
    pre.innerHTML = lines.map(l => `<span class="print-line">${blank(l) ? l + '\u200b' : l}</span>`).join('');
  }
  let shrunk = 0;
  for (const el of document.querySelectorAll('mjx-container[display="true"]')) {
    for (let round = 0; round < 3 && el.scrollWidth > el.clientWidth + 1; round++) {
      const size = parseFloat(getComputedStyle(el).fontSize);
      el.style.fontSize = `${size * (el.clientWidth - 2) / el.scrollWidth}px`;
      if (round === 0) shrunk += 1;
    }
  }
  return shrunk;
}
"""


def toc_documents(toc: Path) -> list[str]:
    """The document names of a Jupyter Book ``_toc.yml`` (``format: jb-book``), root first, in order."""
    data = yaml.safe_load(Path(toc).read_text())
    return [data["root"]] + [chapter["file"] for part in data.get("parts", []) for chapter in part["chapters"]]


def repository_url(config: Path) -> str:
    """``repository.url`` of a Jupyter Book ``_config.yml``; a clear error when it is not set."""
    data = yaml.safe_load(Path(config).read_text()) or {}
    url = (data.get("repository") or {}).get("url")
    if not url:
        raise ValueError(f"{config}: set repository.url to the book's repository (https://github.com/OWNER/NAME)")
    return str(url)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free localhost port; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
