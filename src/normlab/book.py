"""Helpers for the chapters themselves (not for the science).

``glue`` inserts a computed number into the prose through myst-nb. NumPy scalars are
converted to Python numbers first: myst-nb formats ``{glue:text}`x:.2f``` by parsing the
plain-text repr, and NumPy 2 writes ``np.float64(0.5)`` there, which it cannot parse.
"""

from __future__ import annotations

import numbers
import re

import numpy as np


def as_python_number(value):
    """A NumPy scalar or 0-d array as a Python int/float; other values unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
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

    myst_glue(name, as_python_number(value), display=False)


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
