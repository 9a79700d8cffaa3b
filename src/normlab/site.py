"""The built site, for the tools and tests that read it: page order, a local server, headless Chromium.

- :func:`toc_documents`: the documents of ``_toc.yml`` in reading order (root first).
- :func:`repository_url`: the book's repository, ``repository.url`` of ``_config.yml``: the one place it is
  set (the launch buttons and the notebooks' Colab setup cell take it from there).
- :func:`serve_directory`: serve a folder on 127.0.0.1 for as long as a ``with`` block runs.
- :data:`CHROMIUM_FLAGS`: the flags that let Debian's Chromium run headless on a machine with no
  network (without the background-networking flags it keeps trying to reach Google's hosts).

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

__all__ = ["CHROMIUM_FLAGS", "repository_url", "serve_directory", "toc_documents"]

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


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
