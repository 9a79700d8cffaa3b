"""Fixes to the HTML that the pinned toolchain produces; loaded by _config.yml (sphinx.local_extensions).

sphinx-thebe 0.3.1's inline configuration script (``const THEBE_JS_URL = ...``) reaches every page
twice in a Jupyter Book 1.0.4 build, once registered with the file name ``None`` and once with ``""``,
so Sphinx's own check for repeated scripts misses it. The second copy's ``const`` declarations raise
a SyntaxError in every page's console (tests/test_browser.py found it). This extension drops
repeated scripts from each page.

It also mends two accessibility faults in the page body that axe-core reports (tests/test_browser.py):

- myst-nb names each "Show code cell source" toggle ``aria-label="Toggle hidden content"``, so a speech
  user who says what they see ("show code cell source") cannot reach it: the label goes, and the
  visible text names the toggle.
- docutils marks each bibliography entry ``role="doc-biblioentry"`` (deprecated in DPUB-ARIA 1.1) inside
  a ``role="list"``, which must hold list items: the entries become ``role="listitem"``.

Faults in the theme's own navbar and in widgets, which are not in the body, are mended in the browser by
``_static/normbook-a11y.js``.
"""

from __future__ import annotations


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    # The two copies differ only in how "no file" is written: None in one, "" in the other.
    return str(getattr(script, "filename", script) or ""), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    # In place: the list is the builder's own, to which later handlers still add per-page scripts.
    context.get("script_files", [])[:] = unique


#: (what the toolchain writes, what the page gets instead); see the module's docstring.
BODY_FIXES = [
    ('<summary aria-label="Toggle hidden content">', "<summary>"),
    ('role="doc-biblioentry"', 'role="listitem"'),
]


def mend_accessibility(app, pagename, templatename, context, doctree) -> None:
    body = context.get("body")
    if body:
        for wrong, right in BODY_FIXES:
            body = body.replace(wrong, right)
        context["body"] = body


def setup(app):
    # Early, because Sphinx stops calling html-page-context handlers at the first that returns a value.
    app.connect("html-page-context", drop_repeated_scripts, priority=100)
    app.connect("html-page-context", mend_accessibility, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

