"""Helpers for the chapters themselves (not for the science).

``glue`` inserts a computed number into the prose through myst-nb. NumPy scalars are
converted to Python numbers first: myst-nb formats ``{glue:text}`x:.2f``` by parsing the
plain-text repr, and NumPy 2 writes ``np.float64(0.5)`` there, which it cannot parse.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from pathlib import Path

import numpy as np


def as_python_number(value):
    """A NumPy scalar, 0-d array or 0-d torch tensor as a Python int/float; other values unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if type(value).__module__.startswith("torch") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a 0-d tensor's repr, "tensor(0.5)", is not a number myst-nb can format
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def glue(name: str, value) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` in the page, without displaying it."""
    from myst_nb import glue as myst_glue  # imported lazily: normlab works without myst-nb

    value = as_python_number(value)
    myst_glue(name, value, display=False)
    record_glue(name, value)


GLUE_RECORD_ENV = "NORMLAB_GLUE_RECORD"
NOTEBOOK_ENV = "NORMLAB_NOTEBOOK"


def record_glue(name: str, value) -> None:
    """Append ``name`` and ``value`` to ``$NORMLAB_GLUE_RECORD/<notebook>.jsonl`` when that variable is set.

    ``make test`` sets it for its second execution of every notebook (nbval; tests/conftest.py names the
    notebook in ``$NORMLAB_NOTEBOOK``), and tests/after_notebooks/test_glue_reproducible.py compares the
    record with the values the book's build glued into the pages (issue: reproducible numbers).
    """
    folder, notebook = os.environ.get(GLUE_RECORD_ENV), os.environ.get(NOTEBOOK_ENV)
    if not folder or not notebook:  # no record asked for, or not in a notebook that the record names
        return
    path = Path(folder) / f"{notebook}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"name": name, "text": repr(value)}) + "\n")


_COLAB_SETUP = '''\
# In Colab, install normlab (the package behind this book); elsewhere this cell does nothing.
import sys
if "google.colab" in sys.modules:
    !pip install --quiet "normlab[data] @ git+{url}"'''


def colab_setup(repository_url: str) -> str:
    """The first cell of every chapter notebook, which installs normlab from ``repository_url``.

    The cell is tagged ``remove-cell`` (the site does not show it). In Colab it installs normlab from the
    book's repository; anywhere else it does nothing. The URL is ``_config.yml``'s ``repository.url``
    (:func:`normlab.site.repository_url`), the one the launch buttons use: ``tools/colab-cell`` writes the
    cell into the notebooks and tests/test_build_setup.py checks that they hold it.
    """
    url = repository_url.strip().rstrip("/").removesuffix(".git")
    if not re.fullmatch(r"https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~-]+)+", url):
        raise ValueError(f"repository URL {repository_url!r}: expected https://host/owner/name "
                         "(_config.yml, repository.url)")
    return _COLAB_SETUP.format(url=url)
