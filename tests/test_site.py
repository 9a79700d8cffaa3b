"""Checks of the built site (_build/html), as a reader would notice problems.

`make test` builds the book first. These tests read the HTML; a headless-browser test
of the same site comes with the reader's-edition work.
"""

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from normlab.site import toc_documents

ROOT = Path(__file__).resolve().parents[1]
# A chapter author can check a partial build: NORMBOOK_TOC=/tmp/toc.yml NORMBOOK_SITE=/tmp/b/_build/html.
SITE = Path(os.environ.get("NORMBOOK_SITE", ROOT / "_build" / "html"))
TOC = Path(os.environ.get("NORMBOOK_TOC", ROOT / "_toc.yml"))


def toc_files() -> list[str]:
    return toc_documents(TOC)


def notebook_pages() -> list[str]:
    return [f for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


@pytest.fixture(scope="module", autouse=True)
def built_site():
    if not (SITE / "index.html").exists():
        pytest.fail("the site is not built: run `make book` (make test does it first)")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.links = [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def parse(page: str) -> tuple[str, _Tags]:
    html = (SITE / f"{page}.html").read_text(encoding="utf-8")
    tags = _Tags()
    tags.feed(html)
    return html, tags


@pytest.mark.parametrize("page", toc_files())
def test_every_toc_entry_has_a_page(page):
    assert (SITE / f"{page}.html").exists()


@pytest.mark.parametrize("page", notebook_pages())
def test_notebook_page_has_no_error_output_or_unresolved_glue(page):
    html, _ = parse(page)
    assert "Traceback" not in html and "output traceback" not in html
    assert "{glue" not in html, "a glue reference was not replaced by its value"
    assert "output stderr" not in html


@pytest.mark.parametrize("page", notebook_pages())
def test_every_figure_has_alt_text_and_exists(page):
    _, tags = parse(page)
    figures = [img for img in tags.images if "_images/" in img.get("src", "")]
    assert figures, "a notebook page without figures: is the execution output missing?"
    for img in figures:
        assert len(img.get("alt", "")) > 20, f"figure {img['src']} lacks descriptive alt text"
        assert (SITE / page).parent.joinpath(img["src"]).resolve().exists()


@pytest.mark.parametrize("page", notebook_pages())
def test_exercise_checks_passed_on_the_reference_solutions(page):
    html, _ = parse(page)
    assert "✗" not in html, "an exercise check failed on the book's own solution"


@pytest.mark.parametrize("page", notebook_pages())
def test_internal_links_resolve(page):
    _, tags = parse(page)
    for href in tags.links:
        if href.startswith(("http:", "https:", "mailto:", "#")):
            continue
        target, _, anchor = href.partition("#")
        path = (SITE / page).parent.joinpath(target).resolve()
        assert path.exists(), f"broken link {href}"
        if anchor and path.suffix == ".html":
            other = _Tags()
            other.feed(path.read_text(encoding="utf-8"))
            assert anchor in other.ids, f"link {href} points to a missing anchor"


def test_citations_resolve_to_bibliography_entries():
    html, _ = parse("chapters/01_why_normalize")
    cited = set(re.findall(r'href="references.html#id\d+"', html)) | set(
        re.findall(r'href="references.html#[^"]+"', html))
    assert cited, "the first chapter cites no reference"
    refs, _ = parse("chapters/references")
    for key in ("Ioffe", "LeCun", "Nocedal"):
        assert key in refs


@pytest.mark.parametrize("page", notebook_pages())
def test_notebook_page_launches_this_notebook_from_the_configured_repository(page):
    """Binder, Colab and the repository button all take _config.yml's repository.url (and branch)."""
    import yaml

    repository = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    url, branch = repository["url"].rstrip("/"), repository.get("branch", "main")
    owner_name = url.removeprefix("https://github.com/")
    _, tags = parse(page)
    binder = [h for h in tags.links if "mybinder.org" in h]
    colab = [h for h in tags.links if "colab.research.google.com" in h]
    assert binder and all(f"/v2/gh/{owner_name}/{branch}?" in h for h in binder), binder
    assert colab and all(h.endswith(f"/github/{owner_name}/blob/{branch}/{page}.ipynb") for h in colab), colab
    assert url in tags.links, "the repository button should point to repository.url"


@pytest.mark.parametrize("page", [p for p in notebook_pages() if "/0" in p])
def test_chapter_has_the_books_shape(page):
    """STYLE.md: what you will learn → ... → summary → exercises with folded solutions."""
    html, _ = parse(page)
    learn = html.find("What you will learn")
    summary = html.find('<section id="summary"')
    exercises = html.find('<section id="exercises"')
    assert -1 < learn < summary < exercises, "missing or misordered: learn / summary / exercises"
    assert html.count('class="exercise admonition"') >= 2, "a chapter needs exercises"
    assert "dropdown" in html[exercises:], "solutions must be folded"


@pytest.mark.parametrize("page", [p for p in notebook_pages() if "/0" in p])
def test_chapter_links_its_terms_to_the_glossary(page):
    _, tags = parse(page)
    terms = [href for href in tags.links if "glossary.html#term-" in href]
    assert terms, "link the chapter's key terms to the glossary with {term}"


def test_glossary_terms_are_in_the_index_and_notation_page_exists():
    glossary, tags = parse("chapters/glossary")
    assert sum(1 for i in tags.ids if i.startswith("term-")) >= 15
    index = (SITE / "genindex.html").read_text(encoding="utf-8")
    assert "batch normalization" in index and "dynamical isometry" in index
    assert (SITE / "chapters" / "notation.html").exists()


def test_practical_guide_links_every_chapter_and_quotes_their_numbers():
    html, tags = parse("chapters/10_practical_guide")
    assert "{glue" not in html and "glue_ref" not in html
    chapters = [p.split("/")[-1] for p in notebook_pages() if "/0" in p]
    linked = {href.split("#")[0].removesuffix(".html") for href in tags.links}
    assert set(chapters) <= linked, f"not linked: {set(chapters) - linked}"
    for key_text in ("Three classic bugs", "Debugging checklist", "A timeline of explanations"):
        assert key_text in html
