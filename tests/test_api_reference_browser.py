"""viewcode's source pages (``_modules/``), which the table of contents does not list, in the browser.

The API pages are in the toc, so tests/test_browser.py checks them with every other page. The highlighted
source pages that their "[source]" links open are checked here the same way, with the same fixtures (served
offline from the built site, Debian's Chromium): each loads without console errors; at 1280 px and 390 px no
code is cut off (a long line scrolls in its own box) and the page never scrolls sideways; axe-core finds no
serious or critical violation.
"""

from __future__ import annotations

import re

import pytest
from test_browser import (  # noqa: F401  (fixtures)
    CONSOLE_ALLOWLIST,
    SITE,
    WIDTHS,
    assert_fits_every_width,
    assert_no_serious_axe_violations,
    browser,
    server,
    visit,
)


def _source_pages() -> list[str]:
    pages = sorted(p.relative_to(SITE).with_suffix("").as_posix() for p in (SITE / "_modules").rglob("*.html"))
    return pages or ["_modules/index"]  # not built: the test fails with the fixture's message


@pytest.mark.parametrize("name", _source_pages())
def test_source_page_renders_fits_and_is_accessible(visit, server, name) -> None:
    page, external, errors = visit(name)
    assert page.locator("div.highlight pre").count() or name == "_modules/index", "no highlighted source"
    assert not external, f"the page requested the network: {external[:5]}"
    unexplained = [e for e in errors if not any(re.search(p, e) for p in CONSOLE_ALLOWLIST)]
    assert not unexplained, f"console errors: {unexplained[:5]}"
    assert_fits_every_width(page)
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 800})
    assert_no_serious_axe_violations(page, server)
