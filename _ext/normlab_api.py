"""The API reference, and links between it and the chapters both ways; loaded by _config.yml.

Chapter -> code. Every chapter whose code uses normlab (found by reading its code cells, see ``normlab_usage``)
gets a last section, "How this is computed", listing the normlab functions and classes its code uses, each a
cross-reference to its entry in the API reference (autodoc), where viewcode's "[source]" link shows the code.
The section is added when the chapter is read, so a new chapter gets it without anyone writing it.

Code -> chapter. Each API entry ends with "Used in": links to the chapter *sections* whose code cells call it
(the section holding the cell, found in the chapter's doctree). In the docstrings, a chapter cited by its file
stem (``02_batchnorm``) becomes a link to that chapter, and an equation label the chapters define
(``eq-residual``) a reference to the equation, numbered as in the chapter.

The API pages use the ``normlab-api`` directive (inside ``{eval-rst}``): a section per module, titled with its
name, holding ``automodule`` with ``:members:``, for a module or for a package and every public submodule
(``:recursive:``); members documented under another module (``normlab_usage.home``) are left out, so each
object has one entry, and functions or submodules added later appear by themselves (a new top-level module
must be named on a page: tests/test_api_reference.py says which).

normlab's docstrings are plain text with some reST; :func:`prepare_docstring` makes reST read them as written
(formula blocks, ``|x|``, ``(N, C, *spatial)``). References in them that Python's domain cannot place are
resolved by :func:`missing_reference` when the name exists in normlab; a name that exists nowhere still warns.

Changing this module or ``normlab_usage`` changes what pages hold without changing their sources: raise
``env_version`` in :func:`setup` so that the next build reads every page again.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util.docutils import SphinxDirective

import normlab_usage as usage

#: The chapters' last section; its id, "how-this-is-computed", is what tests/test_api_reference.py looks for.
SECTION_TITLE = "How this is computed"


class normlab_calls(nodes.General, nodes.Element):
    """Placeholder for the list of normlab objects a chapter uses; replaced after all pages are read."""


class normlab_used_in(nodes.General, nodes.Element):
    """Placeholder for an API entry's "Used in" links; replaced after all pages are read."""


# --- reading the chapters -----------------------------------------------------------------------------


def _chapter_file(env, docname: str) -> Path | None:
    path = Path(env.doc2path(docname))
    if path.parent.name == "chapters" and usage.CHAPTER_FILE.match(path.name):
        return path
    return None


def _sections_of_cells(doctree) -> dict[int, nodes.section]:
    sections = {}
    for container in doctree.findall(nodes.container):
        if container.get("nb_element") == "cell_code" and container.get("cell_index") is not None:
            section = container.parent
            while section is not None and not isinstance(section, nodes.section):
                section = section.parent
            if section is not None:
                sections[int(container["cell_index"])] = section
    return sections


def read_chapter(app, doctree) -> None:
    """doctree-read: record which sections use what; append "How this is computed" to the chapter."""
    env = app.env
    docname = env.docname
    path = _chapter_file(env, docname)
    if path is None:
        return
    top = next(iter(doctree.findall(nodes.section)), None)
    if top is None:
        return
    found = usage.chapter_usage(path)
    if not found.names:
        return
    by_cell = _sections_of_cells(doctree) if path.suffix == ".ipynb" else {}
    record: dict[str, list[str]] = {}
    current = top
    for index, used in enumerate(found.cells):
        # A cell the page removes entirely (input and output) belongs where the previous one did.
        current = by_cell.get(index, current)
        anchor = current["ids"][0] if current is not top and current["ids"] else ""
        for name in used:
            if anchor not in record.setdefault(name, []):
                record[name].append(anchor)
    env.normlab_usage[docname] = record

    section = nodes.section()
    section["names"].append(nodes.fully_normalize_name(SECTION_TITLE))
    section += nodes.title("", SECTION_TITLE)
    section += nodes.paragraph(
        "", "The code on this page calls these functions and classes of normlab. Each links to its entry "
        "in the API reference, which shows its highlighted source and every section of the book that uses it.")
    section += normlab_calls(names=found.names)
    doctree.note_implicit_target(section, section)
    top += section


def forget_nested_documents(app, doctree) -> None:
    """doctree-read: MyST parses ``{eval-rst}`` into a document of its own and moves the nodes over; each node
    still points at that document, whose settings hold the whole build environment. Pickled with the page,
    it made every API page's doctree 4 MB and every later build load them all (numbered figures walk every
    doctree). The nodes point at their page's document instead."""
    for node in doctree.findall(include_self=False):
        if vars(node).get("_document") not in (None, doctree):
            node.document = doctree


def purge_doc(app, env, docname) -> None:
    getattr(env, "normlab_usage", {}).pop(docname, None)


def merge_info(app, env, docnames, other) -> None:
    env.normlab_usage.update({d: other.normlab_usage[d] for d in docnames if d in other.normlab_usage})


def init_env(app, env, docnames) -> None:
    if not hasattr(env, "normlab_usage"):
        env.normlab_usage = {}
    env.normlab_chapters_read = any(_chapter_file(env, d) for d in docnames)


def api_pages_to_rewrite(app, env) -> list[str]:
    """env-updated: when a chapter was read again, its "Used in" links may have changed on the API pages."""
    if getattr(env, "normlab_chapters_read", False):
        return sorted(d for d in env.found_docs if d.startswith("chapters/api/"))
    return []


# --- the API pages ------------------------------------------------------------------------------------


class NormlabApi(SphinxDirective):
    """``.. normlab-api:: normlab.layers`` (``:recursive:`` adds every public submodule of a package)."""

    required_arguments = 1
    optional_arguments = 20
    option_spec = {"recursive": directives.flag}

    def run(self) -> list[nodes.Node]:
        modules: list[str] = []
        for name in self.arguments:
            modules.append(name)
            if "recursive" in self.options:
                modules += [m for m in usage.public_modules() if m.startswith(name + ".")]
        return [self._module_section(modname) for modname in modules]

    def _module_section(self, modname: str) -> nodes.section:
        """One section per module, titled with its name (so the page's contents list the modules)."""
        lines = [f".. automodule:: {modname}"]
        if modname != usage.PACKAGE:  # the package itself holds nothing but its docstring
            lines += ["   :members:", "   :no-value:"]  # a constant's value can be long; [source] shows it
            excluded = usage.excluded_members(modname) if _has_all(modname) else []
            if excluded:
                lines.append("   :exclude-members: " + ", ".join(excluded))
        section = nodes.section(classes=["normlab-api-module"])
        section["names"].append(nodes.fully_normalize_name(modname))
        section += nodes.title("", "", nodes.literal(modname, modname))
        self.state.document.note_implicit_target(section, section)
        self.state.nested_parse(StringList(lines, source=f"normlab-api {modname}"), self.content_offset, section)
        return section


def _has_all(modname: str) -> bool:
    return getattr(importlib.import_module(modname), "__all__", None) is not None


class NormlabUsedIn(SphinxDirective):
    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        return [normlab_used_in(target=self.arguments[0])]


#: A chapter cited by file stem (as tests/test_docstrings.py finds it), in a literal or bare.
_STEM = re.compile(r"``(\d\d_[a-z][a-z0-9_]*)``|(?<![\w./`-])(\d\d_[a-z][a-z0-9_]*)\b(?![`/.\w]*\.(?:ipynb|md|py))")
#: An equation label, alone or in parentheses (the reference prints its own parentheses).
_EQ = re.compile(r"\((eq-[a-z0-9-]+)\)|``(eq-[a-z0-9-]+)``|(?<![\w`-])(eq-[a-z0-9-]+)\b(?!-)")


def _link_docstring_line(line: str, found_docs, labels: set[str]) -> str:
    def stem(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if f"chapters/{name}" in found_docs:
            return f":doc:`{name} </chapters/{name}>`"
        return match.group(0)

    def equation(match: re.Match) -> str:
        label = match.group(1) or match.group(2) or match.group(3)
        return f":eq:`{label}`" if label in labels else match.group(0)

    return _EQ.sub(equation, _STEM.sub(stem, line))


#: Inline markup that is meant as such: literals, roles and interpreted text (left as they are).
_INLINE = re.compile(r"``.+?``|:[\w:+-]+:`[^`]+`|`[^`]+`_{0,2}")
#: Emphasis and strong emphasis meant as such: ``*word*``, ``**a few words**``, on one line.
_EMPHASIS = re.compile(r"(?<![\w*\\])\*\*?[^\s*](?:[^*]*?[^\s*\\])?\*\*?(?![\w*])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+\S")
_FIELD_OR_DIRECTIVE = re.compile(r"^\s*(?:\.\. |:[^:\s][^:]*:(?:\s|$))")


def _escape_text(text: str) -> str:
    """Plain-text notation that reST would misread: ``|x|`` (a substitution) and a lone ``*`` (an emphasis
    never closed, as in ``(N, C, *spatial)``). Emphasis that is closed on the same line stays emphasis."""
    out, last = [], 0
    for match in _EMPHASIS.finditer(text):
        out.append(re.sub(r"(?<!\\)([|*])", r"\\\1", text[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(re.sub(r"(?<!\\)([|*])", r"\\\1", text[last:]))
    return "".join(out)


def _prose_line(line: str, found_docs, labels: set[str]) -> str:
    bullet = re.match(r"^\s*\*\s+", line)  # a list item's bullet is not emphasis
    prefix, line = (bullet.group(0), line[bullet.end():]) if bullet else ("", line)
    out, last = [prefix], 0
    for match in _INLINE.finditer(line):
        out.append(_escape_text(line[last:match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape_text(line[last:]))
    return _link_docstring_line("".join(out), found_docs, labels)


def _join_split_roles(lines: list[str]) -> None:
    """``:func:`normlab.experiments.ics.`` at the end of a line and ``weighted_line_fit``` on the next: one
    target, split by the line's length; reST would read the target up to the line break."""
    for i in range(len(lines) - 1):
        if re.search(r":[\w:]+:`[^`\s]*\.$", lines[i].rstrip()):
            following = lines[i + 1].lstrip()
            word = re.match(r"[\w.]+`", following)
            if word:
                indent = lines[i + 1][: len(lines[i + 1]) - len(following)]
                lines[i] = lines[i].rstrip() + word.group(0)
                lines[i + 1] = indent + following[word.end():].lstrip()


def prepare_docstring(lines: list[str], found_docs, labels: set[str]) -> list[str]:
    """normlab's docstrings are plain text with some reST (roles, literals, emphasis). Make reST read them as
    their author wrote them: a block indented under a paragraph after a blank line (the formulas) is shown
    as written (a literal block); a list right under a paragraph line starts its own block; plain-text
    ``|`` and ``*`` are escaped. Chapter stems and equation labels become links."""
    _join_split_roles(lines)
    out: list[str] = []
    in_literal, literal_indent = False, 0
    previous, blank_before = "", True  # the last non-blank line; was there a blank line since?
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            out.append(line)
            blank_before = True
            continue
        if in_literal and indent > literal_indent:
            out.append(line)
            previous, blank_before = line, False
            continue
        in_literal = False
        previous_indent = len(previous) - len(previous.lstrip())
        if blank_before and previous.strip() and indent > previous_indent and \
                not previous.rstrip().endswith("::") and not _LIST_ITEM.match(previous) and \
                not _FIELD_OR_DIRECTIVE.match(previous):
            out += [" " * previous_indent + "::", ""]  # a paragraph of just "::": the block below is literal
            in_literal, literal_indent = True, previous_indent
            out.append(line)
            previous, blank_before = line, False
            continue
        if not blank_before and _LIST_ITEM.match(line) and previous.strip() and not _LIST_ITEM.match(previous) \
                and indent == previous_indent and not _FIELD_OR_DIRECTIVE.match(previous):
            out.append("")
        if stripped.endswith("::") or _FIELD_OR_DIRECTIVE.match(line) and stripped.startswith(".. "):
            in_literal, literal_indent = True, indent
            out.append(line if stripped.startswith(".. ") else _prose_line(line, found_docs, labels))
        else:
            out.append(_prose_line(line, found_docs, labels))
        previous, blank_before = line, False
    return out


def process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """autodoc-process-docstring: see :func:`prepare_docstring`; each entry also gets its "Used in"."""
    lines[:] = prepare_docstring(lines, app.env.found_docs, app.normlab_equation_labels)
    if what in ("function", "class", "method", "exception"):
        lines += ["", f".. normlab-used-in:: {name}", ""]


# --- after reading: filling the placeholders ----------------------------------------------------------


class FillPlaceholders(SphinxPostTransform):
    """Before references are resolved: the chapters' lists become cross-references to documented objects,
    and the API entries' "Used in" become links to the chapter sections (with their numbers)."""

    default_priority = 5

    def run(self, **kwargs) -> None:
        objects = self.env.get_domain("py").objects
        for node in list(self.document.findall(normlab_calls)):
            node.replace_self(self._calls(node["names"], objects))
        for node in list(self.document.findall(normlab_used_in)):
            node.replace_self(self._used_in(node["target"]))

    def _calls(self, names: list[str], objects) -> list[nodes.Node]:
        by_module: dict[str, list[str]] = {}
        for name in names:
            entry = objects.get(name)
            if entry is None or entry.aliased:
                continue
            owner = name.rsplit(".", 1)[0]
            while "." in owner and (owner not in objects or objects[owner].objtype != "module"):
                owner = owner.rsplit(".", 1)[0]
            by_module.setdefault(owner, []).append(name)
        if not by_module:
            return [nodes.paragraph("", "(None of them is documented.)")]
        items = nodes.bullet_list(classes=["normlab-calls"])
        for module in sorted(by_module):
            paragraph = nodes.paragraph()
            paragraph += self._xref(module, module, "mod")
            paragraph += nodes.Text(": ")
            for i, name in enumerate(by_module[module]):
                if i:
                    paragraph += nodes.Text(", ")
                kind = objects[name].objtype
                short = name[len(module) + 1:]
                paragraph += self._xref(name, short + ("()" if kind in ("function", "method") else ""),
                                        {"function": "func", "class": "class", "method": "meth"}.get(kind, "obj"))
            items += nodes.list_item("", paragraph)
        return [items]

    def _xref(self, target: str, text: str, role: str) -> addnodes.pending_xref:
        ref = addnodes.pending_xref("", refdomain="py", reftype=role, reftarget=target, refexplicit=True,
                                    refwarn=True, refdoc=self.env.docname)
        ref += nodes.literal(text, text, classes=["xref", "py", f"py-{role}"])
        return ref

    def _used_in(self, target: str) -> list[nodes.Node]:
        places = [(doc, anchor) for doc, record in sorted(self.env.normlab_usage.items())
                  for anchor in record.get(target, [])]
        if not places:
            return []
        paragraph = nodes.paragraph(classes=["normlab-used-in"])
        paragraph += nodes.strong("", "Used in: ")
        for i, (doc, anchor) in enumerate(places):
            if i:
                paragraph += nodes.Text("; ")
            paragraph += self._section_link(doc, anchor)
        paragraph += nodes.Text(".")
        return [paragraph]

    def _section_link(self, doc: str, anchor: str) -> nodes.Node:
        numbers = self.env.toc_secnumbers.get(doc, {}).get(f"#{anchor}" if anchor else "")
        titles = self.env.titles
        title = _section_title(self.env, doc, anchor) or (titles[doc].astext() if doc in titles else doc)
        number = ".".join(map(str, numbers)) + " " if numbers else ""
        text = f"{number}{title}" if anchor else f"chapter {number}{title}"
        uri = self.app.builder.get_relative_uri(self.env.docname, doc) + (f"#{anchor}" if anchor else "")
        return nodes.reference("", text, internal=True, refuri=uri)


def _section_title(env, doc: str, anchor: str) -> str | None:
    if not anchor:
        return None
    toc = env.tocs.get(doc)
    if toc is None:
        return None
    for ref in toc.findall(nodes.reference):
        if ref.get("anchorname") == f"#{anchor}":
            return ref.astext()
    return None


def _attribute(path: list[str]):
    """The object at a dotted path below a module, or None."""
    for i in range(len(path), 0, -1):
        try:
            obj = importlib.import_module(".".join(path[:i]))
        except ImportError:
            continue
        for part in path[i:]:
            fields = getattr(obj, "__annotations__", {}) if inspect.isclass(obj) else {}
            obj = getattr(obj, part, None)
            if obj is None:
                return part in fields or None  # a dataclass field without a default
        return obj
    return None


def missing_reference(app, env, node, contnode):
    """A docstring's reference to normlab that Python's domain cannot place on its own:

    - a dotted path through a package or a private module (``normlab.layers.BatchNorm1d``,
      ``normlab.experiments._common.sigmoid_mlp``): linked to the object's entry, found by importing it;
    - a short name (``BatchNorm1d`` in ``normlab.layers``) that exactly one documented normlab object ends with;
    - a name that exists in the code but has no entry (a private module, an undocumented constant or
      attribute): shown as code, without a link.

    A name that exists nowhere in normlab still warns (with -W, fails the build)."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip(".~")
    if not target:
        return None
    domain = env.get_domain("py")
    objects = domain.objects
    if target.startswith(usage.PACKAGE + "."):
        homes = usage._resolve(target)
        if homes and homes[-1] in objects and homes[-1] != target:
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], homes[-1], node, contnode)
        if _attribute(target.split(".")) is not None:
            return contnode
        return None
    matches = [name for name, entry in objects.items()
               if name.startswith(usage.PACKAGE + ".") and name.endswith("." + target) and not entry.aliased]
    if len(matches) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode)
    module, cls = node.get("py:module"), node.get("py:class")
    if module and module.startswith(usage.PACKAGE):
        for prefix in ([module] + ([f"{module}.{cls}"] if cls else []))[::-1]:
            if _attribute(prefix.split(".") + target.split(".")) is not None:
                return contnode
    return None


def builder_inited(app) -> None:
    if not hasattr(app.env, "normlab_usage"):
        app.env.normlab_usage = {}
    chapters = Path(app.srcdir) / "chapters"
    app.normlab_equation_labels = usage.equation_labels(usage.chapter_files(chapters)) if chapters.is_dir() \
        else set()


def setup(app):
    app.setup_extension("sphinx.ext.autodoc")
    app.setup_extension("sphinx.ext.viewcode")
    app.add_node(normlab_calls)
    app.add_node(normlab_used_in)
    app.add_directive("normlab-api", NormlabApi)
    app.add_directive("normlab-used-in", NormlabUsedIn)
    app.add_post_transform(FillPlaceholders)
    app.connect("builder-inited", builder_inited)
    app.connect("env-before-read-docs", init_env)
    app.connect("env-purge-doc", purge_doc)
    app.connect("env-merge-info", merge_info)
    app.connect("env-updated", api_pages_to_rewrite)
    # Before the collectors (priority 500) read the doctree, so the new section is in the page's contents.
    app.connect("doctree-read", read_chapter, priority=400)
    app.connect("doctree-read", forget_nested_documents)
    app.connect("autodoc-process-docstring", process_docstring)
    app.connect("missing-reference", missing_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 3}
