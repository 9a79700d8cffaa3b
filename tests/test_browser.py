"""The built site as a reader's browser shows it: Playwright driving Debian's Chromium, with no network.

Every page of the table of contents is served from `_build/html` on localhost; any request
that leaves localhost is blocked and counts as a failure (the site must render offline:
MathJax and the widget scripts are served from `_vendor/`). For each page: it loads, the
math is typeset (no raw TeX), every image loads, widget demos render from their saved
state, the internal links of every page answer 200, notebook pages carry Binder and Colab links, and the
console shows no error beyond ``CONSOLE_ALLOWLIST``. At a desktop's and a phone's width, nothing wide
(math, code, tables, outputs) is cut off: it fits or scrolls in its own box, and the page itself never
scrolls sideways. In print media at the PDF's text width (`make pdf`) nothing is wider than its box, since
paper cannot scroll, and no control of the site is printed. The site's search finds a term, and every download
button gives a file.

Needs Chromium at /usr/bin/chromium (`make test` installs it with apt-get when missing).
A partial build can be checked with NORMBOOK_TOC=/tmp/toc.yml NORMBOOK_SITE=/tmp/b/_build/html.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from normlab.site import CHROMIUM_FLAGS, PRINT_PREPARE_JS, PRINT_WIDTH_PX, serve_directory, toc_documents

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("NORMBOOK_SITE", ROOT / "_build" / "html"))
TOC = Path(os.environ.get("NORMBOOK_TOC", ROOT / "_toc.yml"))

#: Console messages that are not faults of the site, each with the reason it is allowed.
CONSOLE_ALLOWLIST: dict[str, str] = {
    # Chromium reports the favicon it looks for on every origin; the book has none.
    r"favicon\.ico.*404|404.*favicon": "no favicon",
}


def _pages() -> list[str]:
    return toc_documents(TOC)


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
        pytest.fail("Chromium is not installed: `apt-get install chromium` (make test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def _new_context(browser, external: list[str]):
    """A browser context at a desktop's width whose requests that leave localhost are blocked and recorded."""
    context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 800})

    def route(request_route):
        host = urlparse(request_route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or request_route.request.url.startswith("data:"):
            request_route.continue_()
        else:
            external.append(request_route.request.url)
            request_route.abort()

    context.route("**/*", route)
    return context


def _open(context, url: str, errors: list[str]):
    """Load ``url`` in a new page of ``context`` and wait until the network is idle; console errors, uncaught
    exceptions and HTTP errors go into ``errors``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    page = context.new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    # Generous limits: on CI's 2 cores another test worker may be printing the PDF with Chromium meanwhile.
    page.goto(url, wait_until="load", timeout=120_000)
    try:
        page.wait_for_load_state("networkidle", timeout=60_000)
    except PlaywrightTimeoutError:
        # Seen once under full load (a page that never went network-idle in 120 s, and passed alone in 5 s):
        # load it once more. A page that stalls twice still fails.
        page.reload(wait_until="load", timeout=120_000)
        page.wait_for_load_state("networkidle", timeout=120_000)
    return page


@pytest.fixture()
def visit(server, browser):
    """Open a page of its own with the network cut off; return (page, external requests, console errors).
    For the checks that change the page (clicks, print emulation) or a page no other check loads."""
    external: list[str] = []
    errors: list[str] = []
    context = _new_context(browser, external)
    yield lambda name: (_open(context, f"{server}/{name}.html", errors), external, errors)
    context.close()


@pytest.fixture(scope="module", params=_pages())
def loaded(request, server, browser):
    """One load of each page of the table of contents, shared by the checks of that page: (name, page,
    external requests, console errors). pytest runs all the tests that use one parameter of a module-scoped
    fixture together, in the order they are written, so the page loads once for all of them (it used to load
    once per check: a third of the test run's time). The checks that read the page come first; the one that
    changes it (unfolds, resizes, emulates print) comes last."""
    external: list[str] = []
    errors: list[str] = []
    context = _new_context(browser, external)
    try:
        yield request.param, _open(context, f"{server}/{request.param}.html", errors), external, errors
    finally:
        context.close()


#: The widths at which every page must fit: a laptop's browser window and a phone's screen (CSS pixels).
WIDTHS = {"desktop": 1280, "phone": 390}

#: What can be wider than the text column. Each must fit or scroll in a box of its own, never be cut off.
WIDE_CONTENT = "mjx-container, div.math, pre, div.highlight, table, div.cell_output > div.output, img"

#: For each element of a selector that is displayed: why it is cut off (no reader can see all of it), if it is.
#: An element is cut off when its own overflow-x hides content wider than it, or when its box (with any
#: content spilling out of it) reaches past an ancestor whose overflow-x hides; an ancestor that scrolls
#: makes everything inside reachable, and the check goes on with that ancestor's box.
CUT_OFF_JS = r"""
(selector) => {
  const scrolls = el => /auto|scroll/.test(getComputedStyle(el).overflowX);
  const hides = el => /hidden|clip/.test(getComputedStyle(el).overflowX);
  const describe = el => el.tagName.toLowerCase() + [...el.classList].slice(0, 3).map(c => '.' + c).join('');
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.getClientRects().length) continue;  // not displayed
    const box = el.getBoundingClientRect();
    let left = box.left, right = box.right, problem = null;
    if (!scrolls(el) && el.scrollWidth > el.clientWidth + 1) {
      if (hides(el)) problem = `its overflow hides ${el.scrollWidth - el.clientWidth} px`;
      else right = Math.max(right, box.left + el.scrollWidth);
    }
    for (let a = el.parentElement; !problem && a && a !== document.body; a = a.parentElement) {
      const outer = a.getBoundingClientRect();
      const past = Math.max(right - outer.right, outer.left - left);
      if (hides(a) && past > 1) problem = `${Math.round(past)} px cut off by ${describe(a)}`;
      else if (scrolls(a)) { left = outer.left; right = outer.right; }
    }
    if (problem) found.push(`${describe(el)} "${el.textContent.trim().slice(0, 50)}": ${problem}`);
  }
  return found;
}
"""

#: The outermost elements that stick out past the right edge of the window (why the page scrolls sideways);
#: what lies inside a box that scrolls or clips cannot widen the page.
PAST_THE_WINDOW_JS = r"""
() => {
  const contained = el => /auto|scroll|hidden|clip/.test(getComputedStyle(el).overflowX);
  const found = [];
  const walk = el => {
    for (const child of el.children) {
      if (!child.getClientRects().length || getComputedStyle(child).position === 'fixed') continue;
      const right = child.getBoundingClientRect().right;
      if (right > innerWidth + 1) found.push(child.tagName.toLowerCase()
        + [...child.classList].slice(0, 3).map(c => '.' + c).join('')
        + ` "${child.textContent.trim().slice(0, 40)}" (right edge ${Math.round(right)} px)`);
      else if (!contained(child)) walk(child);
    }
  };
  walk(document.body);
  return found;
}
"""


#: In print, what is wider than its box or reaches past the page's text width: on paper nothing scrolls, so
#: either is cut off.
TOO_WIDE_FOR_PAPER_JS = r"""
(selector) => {
  const width = document.documentElement.clientWidth;
  const describe = el => el.tagName.toLowerCase() + [...el.classList].slice(0, 3).map(c => '.' + c).join('');
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.getClientRects().length) continue;
    const box = el.getBoundingClientRect();
    let problem = null;
    const over = el.scrollWidth - el.clientWidth;
    if (el.clientWidth && over > 1) problem = `${over} px wider than its box`;
    else if (box.right > width + 1) problem = `${Math.round(box.right - width)} px past the page`;
    else if (box.left < -1) problem = `${Math.round(-box.left)} px before the page`;
    if (problem) found.push(`${describe(el)} "${el.textContent.trim().slice(0, 50)}": ${problem}`);
  }
  return found;
}
"""

#: What only works on a screen, none of which may print: buttons and form controls (widget sliders too), the
#: folds of hidden code and solutions, the navigation (not the printed contents of the page), and the code of
#: hidden-input cells.
SCREEN_ONLY = ("button, input, select, textarea, summary, nav:not(#jb-print-toc *), .dropdown-toggle, "
               ".toggle-button, .copybtn, .widget-slider, .widget-hprogress, .bd-sidebar-primary, .bd-sidebar-secondary, "
               ".bd-header, .prev-next-area, .cell.tag_hide-input .cell_input")

PRINTED_JS = r"""
(selector) => [...document.querySelectorAll(selector)]
  .filter(el => el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden')
  .map(el => el.tagName.toLowerCase() + [...el.classList].slice(0, 3).map(c => '.' + c).join('')
             + ` "${el.textContent.trim().slice(0, 30)}"`)
"""


#: Unfold what the page folds (hidden code, solutions, dropdowns): folded content must fit once opened too.
UNFOLD_JS = r"""
() => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(el => el.classList.remove('toggle-hidden'));
}
"""


def _wait_for_math(page) -> None:
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.document", timeout=20_000)
    page.evaluate("() => MathJax.startup.promise")


def _wait_for_widgets(page) -> int:
    """Wait until the embedded manager has drawn every saved widget view; return how many there are."""
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if views:
        page.wait_for_selector(".widget-subarea .jupyter-widgets", state="attached", timeout=20_000)
        page.wait_for_function(
            f"() => document.querySelectorAll('.widget-subarea').length >= {views} && "
            "[...document.querySelectorAll('.widget-subarea')].every(a => a.querySelector('.jupyter-widgets'))",
            timeout=20_000)
    return views


def test_page_renders_offline_with_math_images_and_no_console_errors(loaded) -> None:
    _, page, external, errors = loaded
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


def test_widgets_render_from_saved_state(loaded) -> None:
    """Every saved widget view (demos, and tqdm's progress bars) is drawn by the embedded manager."""
    name, page, _, _ = loaded
    if name not in _notebook_pages():
        pytest.skip("not a notebook page")
    if not _wait_for_widgets(page):
        pytest.skip("no widget on this page")
    failed = page.locator(".jupyter-widgets-error-widget").count()
    assert not failed, f"{failed} widget views failed to render (the manager drew its error icon instead)"
    images = page.evaluate("() => [...document.querySelectorAll('.widget-subarea img')].map(i => i.naturalWidth)")
    assert all(width > 0 for width in images), "a widget's image did not render"
    if name.endswith("01_why_normalize"):  # the figure explorer: sliders and the figure they redraw
        assert page.locator(".widget-subarea .widget-slider").count() >= 2 and images


def test_internal_links_of_every_page_answer(loaded, server) -> None:
    name, page, _, _ = loaded
    hrefs = page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)")
    internal = sorted({h.split("#")[0] for h in hrefs if h.startswith(server)})
    assert internal
    for url in internal:
        response = page.request.get(url)
        assert response.status == 200, f"{url} answered {response.status}"
    if name in _notebook_pages():
        assert any("mybinder.org" in h for h in hrefs), "a notebook page needs its Binder link"
        assert any("colab.research.google.com" in h for h in hrefs), "a notebook page needs its Colab link"


@pytest.mark.parametrize("name", _pages())
def test_download_buttons_give_the_pages_files(visit, name) -> None:
    """The download menu: the page's source (.ipynb for a notebook, .md otherwise) is served, whole; the
    theme's ".pdf" is the browser's print dialog (print to PDF), not a file: it must open that dialog.
    (The whole book as one PDF is `make pdf`, tests/test_pdf.py.)"""
    page, _, _ = visit(name)
    page.click(".dropdown-download-buttons button.dropdown-toggle")
    menu = page.locator(".dropdown-download-buttons .dropdown-menu")
    menu.wait_for(state="visible", timeout=5_000)
    links = menu.locator("a[href]")
    assert links.count(), "the download menu offers no file"
    suffix = ".ipynb" if name in _notebook_pages() else ".md"
    labels = []
    for i in range(links.count()):
        link = links.nth(i)
        labels.append(link.inner_text().strip())
        url = link.evaluate("a => a.href")
        response = page.request.get(url)
        body = response.body()
        assert response.status == 200 and body, f"{labels[-1]} download {url}: HTTP {response.status}, {len(body)} bytes"
        if url.endswith(".ipynb"):
            import nbformat

            from normlab.book import colab_setup
            from normlab.site import repository_url

            cells = nbformat.reads(body.decode(), as_version=4).cells
            assert cells[0].source == colab_setup(repository_url(ROOT / "_config.yml")), (
                f"{url}: does not start with the Colab setup cell, so it will not run in Colab")
        if url.endswith(suffix):  # the page's own source: its title is in it
            title = re.sub(r"^[\d.]+\s*", "", page.locator("article h1").first.inner_text()).strip("#¶ \n")
            assert title[:25] in body.decode(), f"{url} does not hold the page's title {title!r}"
    assert suffix in labels, f"no {suffix} download, only {labels}"
    page.evaluate("() => { window.__printed = 0; window.print = () => { window.__printed += 1; }; }")
    menu.locator(".btn-download-pdf-button").click()
    assert page.evaluate("() => window.__printed") == 1, "the .pdf button did not open the print dialog"


def test_search_finds_a_term_offline(visit, server) -> None:
    """The search box of any page (Ctrl+K) leads to the search page, which lists the pages with the term."""
    page, external, errors = visit("chapters/intro")
    page.keyboard.press("Control+k")
    box = page.locator("#pst-search-dialog input[name='q']")
    box.wait_for(state="visible", timeout=5_000)
    box.fill("LayerNorm")
    with page.expect_navigation():
        box.press("Enter")
    assert "/search.html?q=LayerNorm" in page.url
    page.wait_for_selector("#search-results ul.search li", timeout=20_000)
    page.wait_for_function("() => !document.querySelector('#search-results .search-summary') || "
                           "/found|did not match/i.test(document.querySelector('#search-results').textContent)",
                           timeout=20_000)
    hits = page.evaluate("() => [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href)")
    assert any("chapters/07_layernorm.html" in h for h in hits), f"the LayerNorm chapter is not among the hits: {hits}"
    assert all(h.startswith(server) for h in hits)
    assert not external, f"search requested the network: {external[:5]}"
    unexplained = [e for e in errors if not any(re.search(p, e) for p in CONSOLE_ALLOWLIST)]
    assert not unexplained, f"console errors: {unexplained[:5]}"


#: Accessibility rules that axe-core reports as serious or critical on this site and that the book cannot fix
#: itself, each with the reason. Empty: every page must be free of serious and critical violations.
AXE_ALLOWLIST: dict[str, str] = {}


def test_page_has_no_serious_accessibility_violations(loaded, server) -> None:
    """axe-core (vendored by tools/vendor-js, served from the site) finds no serious or critical violation."""
    _, page, _, _ = loaded
    if page.locator("span.math, div.math").count():
        _wait_for_math(page)
    _wait_for_widgets(page)
    assert_no_serious_axe_violations(page, server)


def test_nothing_is_cut_off_and_the_page_never_scrolls_sideways(loaded) -> None:
    """At 1280 px and at 390 px: wide equations, code, tables and outputs scroll inside their own box. In print
    (the same page load, as tools/book-pdf prints it): each fits the page's text width, and no control shows.
    Last of the checks that share a page's load: it unfolds the page, resizes it and emulates print."""
    _, page, _, _ = loaded
    if page.locator("span.math, div.math").count():
        _wait_for_math(page)
    _wait_for_widgets(page)
    page.evaluate(UNFOLD_JS)
    assert_fits_every_width(page)
    page.set_viewport_size({"width": PRINT_WIDTH_PX, "height": 1000})
    page.emulate_media(media="print")
    page.evaluate(PRINT_PREPARE_JS)
    too_wide = page.evaluate(TOO_WIDE_FOR_PAPER_JS, WIDE_CONTENT)
    assert not too_wide, f"in print at {PRINT_WIDTH_PX} px, {len(too_wide)} cut off: {too_wide[:5]}"
    page_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert page_width <= PRINT_WIDTH_PX, (f"in print the page is {page_width} px wide: "
                                          f"{page.evaluate(PAST_THE_WINDOW_JS)[:5]}")
    printed = page.evaluate(PRINTED_JS, SCREEN_ONLY)
    assert not printed, f"in print, {len(printed)} controls of the screen show: {printed[:5]}"


def assert_fits_every_width(page) -> None:
    """At each of WIDTHS: no wide element is cut off (its content wider than its box with no scrollbar) and the
    page does not scroll sideways. Also used by test_api_reference_browser.py."""
    for device, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 800})
        cut = page.evaluate(CUT_OFF_JS, WIDE_CONTENT)
        assert not cut, f"at {width} px ({device}), {len(cut)} cut off: {cut[:5]}"
        page_width = page.evaluate("() => document.documentElement.scrollWidth")
        assert page_width <= width, (f"at {width} px ({device}) the page is {page_width} px wide; sticking out: "
                                     f"{page.evaluate(PAST_THE_WINDOW_JS)[:5]}")


def assert_no_serious_axe_violations(page, server) -> None:
    """Run axe-core (served by the site itself) on the page; fail naming each serious or critical violation
    that AXE_ALLOWLIST does not excuse. Also used by test_api_reference_browser.py."""
    page.add_script_tag(url=f"{server}/_vendor/axe-core/axe.min.js")
    violations = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length,"
        "            where: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))")
    found = [v for v in violations if v["id"] not in AXE_ALLOWLIST]
    assert not found, "accessibility violations:\n" + "\n".join(
        f"  {v['impact']} {v['id']} ({v['help']}): {v['nodes']} elements, e.g. {v['where']}" for v in found)
