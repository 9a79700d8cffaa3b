"""The API reference (chapters/api, built by _ext/normlab_api.py) and its links with the chapters, both ways.

- Every public normlab module has a section on an API page; its entries link to viewcode's highlighted source.
- Every chapter ends with "How this is computed", linking to the API entry of every normlab function and class
  its code uses. The expected set comes from reading the chapter's code with the same resolver the build uses
  (_ext/normlab_usage.py), so a chapter that starts calling a new function is checked without a new test.
- Every such entry links back to the chapter (to the section whose code calls it); chapter stems and equation
  labels cited in docstrings are links.

The site tests need the built site (`make book`), found as tests/test_browser.py finds it (NORMBOOK_SITE,
NORMBOOK_TOC for a partial build). The resolver's and the docstring preparation's own tests need nothing built.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from normlab.site import toc_documents

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("NORMBOOK_SITE", ROOT / "_build" / "html"))
TOC = Path(os.environ.get("NORMBOOK_TOC", ROOT / "_toc.yml"))
sys.path.insert(0, str(ROOT / "_ext"))

import normlab_api  # noqa: E402  (the build's extension: needs _ext on the path)
import normlab_usage as usage  # noqa: E402

API_PAGES = [name for name in toc_documents(TOC) if name.startswith("chapters/api/")]
CHAPTERS = [name for name in toc_documents(TOC)
            if name.startswith("chapters/") and usage.CHAPTER_FILE.match(Path(name).name + ".md")]


def _source(name: str) -> Path:
    for suffix in (".ipynb", ".md"):
        if (ROOT / f"{name}{suffix}").exists():
            return ROOT / f"{name}{suffix}"
    raise FileNotFoundError(name)


@lru_cache(maxsize=None)
def _soup(page: str):
    from bs4 import BeautifulSoup

    path = SITE / f"{page}.html"
    if not path.exists():
        pytest.fail(f"{path} is not built: run `make book` (make test does it first)")
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@lru_cache(maxsize=None)
def _api_entries() -> dict[str, str]:
    """id of every documented object (``normlab.layers.batchnorm.BatchNorm1d``) -> the API page holding it."""
    found = {}
    for page in API_PAGES:
        for dt in _soup(page).select("dl.py > dt[id]"):
            found[dt["id"]] = page
    return found


def _target(page: str, href: str) -> tuple[str, str]:
    """(page, fragment) an href of ``page`` points to, pages named as in the toc (``chapters/api/layers``)."""
    parsed = urlparse(href)
    if parsed.scheme or parsed.netloc:
        return "", ""
    if not parsed.path:
        return page, unquote(parsed.fragment)
    path = (Path(page).parent / parsed.path).as_posix()
    parts: list[str] = []
    for part in path.split("/"):
        if part == "..":
            parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return re.sub(r"\.html$", "", "/".join(parts)), unquote(parsed.fragment)


# --- the resolver and the docstrings, without a build ---------------------------------------------------


def test_the_resolver_follows_aliases_attributes_and_re_exports() -> None:
    cells = [
        "import numpy as np\nfrom normlab.experiments import batchnorm as bn_exp\nimport normlab.functional as F",
        None,  # a markdown cell
        "from normlab.layers import BatchNorm1d\nrecord = bn_exp.sigmoid_mlp(8, 3, True)\n"
        "y = F.batch_norm_forward(np.ones((4, 2)), 1.0, 0.0)[0]\nnp.mean(y)",
        "%matplotlib inline\nfrom normlab import plotting\nplotting.use_book_style()",
        "import normlab\nnormlab.init.kaiming_normal_",
    ]
    used = usage.cell_usage(cells)
    assert used[0] == set() and used[1] == set()
    # sigmoid_mlp is defined in the private normlab.experiments._common and listed in batchnorm's __all__:
    # its entry is there. BatchNorm1d is re-exported by normlab.layers: its entry is in its own module.
    assert used[2] == {"normlab.experiments.batchnorm.sigmoid_mlp", "normlab.functional.batch_norm_forward",
                       "normlab.layers.batchnorm.BatchNorm1d"}
    assert used[3] == {"normlab.plotting.use_book_style"}  # an IPython magic does not hide the cell's code
    assert used[4] == {"normlab.init.kaiming_normal_"}


def test_every_documented_object_has_one_home_and_re_exports_are_left_out() -> None:
    for modname in usage.public_modules():
        module = __import__(modname, fromlist=["_"])
        excluded = set(usage.excluded_members(modname))
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if usage.home(obj) is not None:
                documented_here = usage.home(obj) == f"{modname}.{name}"
                assert documented_here != (name in excluded), f"{modname}.{name}"
    assert usage.home(__import__("normlab.layers", fromlist=["_"]).BatchNorm1d) == \
        "normlab.layers.batchnorm.BatchNorm1d"


def test_docstrings_are_prepared_for_restructuredtext() -> None:
    lines = [
        "Shape (N, C, *spatial); |x| is *meant*; chapter ``02_batchnorm``, equation eq-bn-dx, (eq-bn-dx).",
        "Uses:",
        "- one",
        "",
        "The formulas:",
        "",
        "    mu  = mean(x)      (1)",
        "    |x| = abs(x)       (2)",
        "",
        "See :func:`normlab.experiments.ics.",
        "weighted_line_fit` and ``10_000`` steps.",
    ]
    out = normlab_api.prepare_docstring(list(lines), {"chapters/02_batchnorm"}, {"eq-bn-dx"})
    assert out[0] == (r"Shape (N, C, \*spatial); \|x\| is *meant*; chapter :doc:`02_batchnorm </chapters/02_batchnorm>`"
                      ", equation :eq:`eq-bn-dx`, :eq:`eq-bn-dx`.")
    assert out[1:4] == ["Uses:", "", "- one"]  # a list under a paragraph line starts its own block
    assert "::" in [line.strip() for line in out]  # the indented formulas are a literal block, unescaped
    assert "    |x| = abs(x)       (2)" in out
    assert ":func:`normlab.experiments.ics.weighted_line_fit`" in "\n".join(out)
    assert "``10_000``" in out[-1]
    # A stem that is not a built page, or a label no chapter defines, stays text.
    assert normlab_api.prepare_docstring(["chapter ``99_nothing`` and eq-nothing"], set(), set()) == \
        ["chapter ``99_nothing`` and eq-nothing"]


# --- the built site -------------------------------------------------------------------------------------


def test_every_public_module_has_a_section_in_the_api_reference() -> None:
    anchors = {tag["id"] for page in API_PAGES for tag in _soup(page).select("[id^='module-normlab']")}
    missing = [m for m in usage.public_modules() if f"module-{m}" not in anchors]
    assert not missing, f"public modules with no API section (add them to a page in chapters/api): {missing}"
    assert not any(re.search(r"\._", a) for a in anchors), "a private module is documented"


def test_api_entries_link_to_their_highlighted_source() -> None:
    sources = set()
    for page in API_PAGES:
        for link in _soup(page).select("dt.sig a.reference.internal[href*='_modules/']"):
            target, fragment = _target(page, link["href"])
            sources.add(target)
            assert (SITE / f"{target}.html").exists(), f"{page}: [source] link to a missing page {link['href']}"
    assert len(sources) >= 30, f"only {len(sources)} modules have a [source] page"
    viewcode = _soup("_modules/normlab/functional")
    assert viewcode.select("div.highlight pre"), "the source page is not highlighted"
    assert viewcode.select("a.viewcode-back"), "the source page does not link back to the documentation"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_the_chapter_links_to_every_normlab_function_its_code_calls(chapter: str) -> None:
    expected = usage.chapter_usage(_source(chapter)).names
    section = _soup(chapter).find(id="how-this-is-computed")
    if not expected:
        assert section is None, "a chapter whose code uses no normlab function has no such section"
        return
    assert section is not None, "the chapter has no section 'How this is computed'"
    entries = _api_entries()
    undocumented = [name for name in expected if name not in entries]
    assert not undocumented, f"the chapter calls normlab objects with no API entry (give them docstrings): " \
                             f"{undocumented}"
    linked = {_target(chapter, a["href"]) for a in section.select("a.reference.internal")}
    missing = [name for name in expected if (entries[name], name) not in linked]
    assert not missing, f"no link to the API entries of {missing}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_api_entries_link_back_to_the_sections_that_use_them(chapter: str) -> None:
    expected = usage.chapter_usage(_source(chapter)).names
    entries = _api_entries()
    chapter_anchors = {tag["id"] for tag in _soup(chapter).select("[id]")}
    for name in (n for n in expected if n in entries):  # an entry that is missing fails the test above
        page = entries[name]
        dt = _soup(page).find("dt", id=name)
        used_in = dt.find_next_sibling("dd").find("p", class_="normlab-used-in")
        assert used_in is not None, f"{name}: no 'Used in' in its API entry"
        targets = [_target(page, a["href"]) for a in used_in.select("a")]
        to_chapter = [fragment for target, fragment in targets if target == chapter]
        assert to_chapter, f"{name}: 'Used in' does not link to {chapter}"
        assert all(not f or f in chapter_anchors for f in to_chapter), f"{name}: a link to a missing section"


def test_docstrings_link_the_chapters_and_equations_they_cite() -> None:
    to_chapters, to_equations = set(), set()
    for page in API_PAGES:
        for link in _soup(page).select("a.reference.internal"):
            target, fragment = _target(page, link["href"])
            if link.find("span", class_="doc") and usage.CHAPTER_FILE.match(Path(target).name + ".md"):
                to_chapters.add(target)
            if fragment.startswith("equation-eq-"):
                assert (SITE / f"{target}.html").exists() and _soup(target).find(id=fragment), link["href"]
                to_equations.add(fragment)
    assert len(to_chapters) >= min(10, len(CHAPTERS)), f"docstrings cite only {sorted(to_chapters)} as links"
    assert to_equations, "no docstring's equation label became a reference to the equation"
