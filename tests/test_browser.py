"""The built site as a reader's browser shows it: Playwright driving Debian's Chromium, with no network.

Every page of the table of contents is served from `_build/html` on localhost; any request
that leaves localhost is blocked and counts as a failure (the site must render offline:
MathJax and the widget scripts are served from `_vendor/`). For each page: it loads, the
math is typeset (no raw TeX), every image loads, widget demos render from their saved
state, the internal links of every page answer 200, notebook pages carry Binder and Colab links, and the
console shows no error beyond ``CONSOLE_ALLOWLIST``.

Needs Chromium at /usr/bin/chromium (`apt-get install chromium`; `.ci/run` installs it).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from normlab.site import CHROMIUM_FLAGS, serve_directory, toc_documents

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"

#: Console messages that are not faults of the site, each with the reason it is allowed.
CONSOLE_ALLOWLIST: dict[str, str] = {
    # Chromium reports the favicon it looks for on every origin; the book has none.
    r"favicon\.ico.*404|404.*favicon": "no favicon",
}


def _pages() -> list[str]:
    return toc_documents(ROOT / "_toc.yml")


def _notebook_pages() -> set[str]:
    return {p for p in _pages() if (ROOT / f"{p}.ipynb").exists()}


@pytest.fixture(scope="module")
def server():
    if not (SITE / "index.html").exists():
        pytest.fail("the site is not built: run `make book` (make test does it first)")
    with serve_directory(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("Chromium is not installed: `apt-get install chromium` (.ci/run does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture()
def visit(server, browser, tmp_path):
    """Open a page with the network cut off; return (page, external requests, console errors)."""
    context = browser.new_context()
    external: list[str] = []
    errors: list[str] = []

    def route(request_route):
        host = urlparse(request_route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or request_route.request.url.startswith("data:"):
            request_route.continue_()
        else:
            external.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)

    def open_page(name: str):
        page = context.new_page()
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
        page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        page.goto(f"{server}/{name}.html", wait_until="load")
        page.wait_for_load_state("networkidle")
        return page, external, errors

    yield open_page
    context.close()


def _wait_for_math(page) -> None:
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.document", timeout=20_000)
    page.evaluate("() => MathJax.startup.promise")


@pytest.mark.parametrize("name", _pages())
def test_page_renders_offline_with_math_images_and_no_console_errors(visit, name) -> None:
    page, external, errors = visit(name)
    assert page.title(), "the page has no title"
    math = page.locator("span.math, div.math")
    if math.count():
        _wait_for_math(page)
        untypeset = page.evaluate(
            "() => [...document.querySelectorAll('span.math, div.math')]"
            ".filter(el => !el.querySelector('mjx-container')).map(el => el.textContent.slice(0, 60))")
        assert not untypeset, f"math left as raw TeX: {untypeset[:3]}"
    text = page.inner_text("article")
    raw = re.findall(r"\\\(|\\\[|\$\$|\\begin\{", text)
    assert not raw, f"raw TeX delimiters visible on the page: {raw[:5]}"
    broken = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))"
                           ".map(i => i.getAttribute('src'))")
    assert not broken, f"images that did not load: {broken}"
    assert not external, f"the page requested the network: {external[:5]}"
    unexplained = [e for e in errors if not any(re.search(p, e) for p in CONSOLE_ALLOWLIST)]
    assert not unexplained, f"console errors: {unexplained[:5]}"


@pytest.mark.parametrize("name", sorted(_notebook_pages()))
def test_widgets_render_from_saved_state(visit, name) -> None:
    """Every saved widget view (demos, and tqdm's progress bars) is drawn by the embedded manager."""
    page, _, _ = visit(name)
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if not views:
        pytest.skip("no widget on this page")
    page.wait_for_selector(".widget-subarea .jupyter-widgets", state="attached", timeout=20_000)
    page.wait_for_function(
        f"() => document.querySelectorAll('.widget-subarea').length >= {views} && "
        "[...document.querySelectorAll('.widget-subarea')].every(a => a.querySelector('.jupyter-widgets'))",
        timeout=20_000)
    images = page.evaluate("() => [...document.querySelectorAll('.widget-subarea img')].map(i => i.naturalWidth)")
    assert all(width > 0 for width in images), "a widget's image did not render"
    if name.endswith("01_why_normalize"):  # the figure explorer: sliders and the figure they redraw
        assert page.locator(".widget-subarea .widget-slider").count() >= 2 and images


@pytest.mark.parametrize("name", _pages())
def test_internal_links_of_every_page_answer(visit, server, name) -> None:
    page, _, _ = visit(name)
    hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    internal = sorted({h.split("#")[0] for h in hrefs if h.startswith(server)})
    assert internal
    for url in internal:
        response = page.request.get(url)
        assert response.status == 200, f"{url} answered {response.status}"
    if name in _notebook_pages():
        assert any("mybinder.org" in h for h in hrefs), "a notebook page needs its Binder link"
        assert any("colab.research.google.com" in h for h in hrefs), "a notebook page needs its Colab link"
