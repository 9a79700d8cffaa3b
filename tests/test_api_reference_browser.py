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
    CUT_OFF_JS,
    PAST_THE_WINDOW_JS,
    SITE,
    WIDE_CONTENT,
    WIDTHS,
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
    for device, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 800})
        cut = page.evaluate(CUT_OFF_JS, WIDE_CONTENT)
        assert not cut, f"at {width} px ({device}), {len(cut)} cut off: {cut[:5]}"
        page_width = page.evaluate("() => document.documentElement.scrollWidth")
        assert page_width <= width, (f"at {width} px ({device}) the page is {page_width} px wide; sticking out: "
                                     f"{page.evaluate(PAST_THE_WINDOW_JS)[:5]}")
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 800})
    assert_no_serious_axe_violations(page, server)
