"""Which normlab functions and classes a chapter's code uses, found by reading the code (no execution).

Shared by the Sphinx extension ``normlab_api`` (which links every chapter to the API reference entries of what
its code calls, and every entry back to the chapter sections that call it) and by tests/test_api_reference.py,
which checks the built site against the same answer.

A chapter's code cells are parsed with :mod:`ast`, in order, as one namespace. Every ``import normlab...`` and
``from normlab... import ...`` binds a local name to a dotted path (``from normlab.experiments import
batchnorm as bn_exp`` binds ``bn_exp`` to ``normlab.experiments.batchnorm``); every later use of such a name,
alone or followed by attributes (``bn_exp.sigmoid_mlp``), is resolved by importing normlab and following the
attributes. Each function or class met on the way is named by its *home*: the module under which the API
reference documents it (see :func:`home`). Names rebound by the notebook itself are not followed.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import json
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "normlab"

#: A chapter's file name: two digits, an underscore, a lower-case name (the stems docstrings cite).
CHAPTER_FILE = re.compile(r"^\d\d_[a-z][a-z0-9_]*\.(ipynb|md)$")


def is_public(dotted: str) -> bool:
    return not any(part.startswith("_") for part in dotted.split("."))


@functools.lru_cache(maxsize=None)
def public_modules() -> tuple[str, ...]:
    """Every public module of normlab (no part of its name starts with ``_``), sorted."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [info.name for info in pkgutil.walk_packages(package.__path__, PACKAGE + ".")]
    return tuple(sorted(name for name in names if is_public(name)))


def _module(name: str):
    return importlib.import_module(name)


def _documentable(obj) -> bool:
    return inspect.isfunction(obj) or inspect.isclass(obj)


def _exported(modname: str) -> list[str]:
    """The names autodoc's ``:members:`` considers in a module: its ``__all__`` when it has one (imported objects
    included), else its public names (autodoc then keeps only the objects the module defines)."""
    module = _module(modname)
    names = getattr(module, "__all__", None)
    if names is None:
        return [name for name in vars(module) if not name.startswith("_")]
    return [name for name in names if not name.startswith("_")]


@functools.lru_cache(maxsize=None)
def _exporters() -> dict[int, list[str]]:
    """id(object) -> ``module.name`` of every public module whose ``__all__`` lists a function or class."""
    found: dict[int, list[str]] = {}
    for modname in public_modules():
        module = _module(modname)
        if getattr(module, "__all__", None) is None:
            continue
        for name in _exported(modname):
            obj = getattr(module, name, None)
            if _documentable(obj):
                found.setdefault(id(obj), []).append(f"{modname}.{name}")
    return found


def _defined_home(obj) -> str | None:
    """``module.qualname`` when the object's own module is public, holds it under that name, and autodoc
    documents it there (the module lists it in ``__all__`` or has none)."""
    modname, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not modname or not qualname or "<" in qualname or "." in qualname:
        return None
    if not is_public(modname) or not is_public(qualname) or not modname.startswith(PACKAGE + "."):
        return None
    try:
        module = _module(modname)
    except ImportError:
        return None
    if getattr(module, qualname, None) is not obj:
        return None
    listed = getattr(module, "__all__", None)
    if listed is not None and qualname not in listed:
        return None
    return f"{modname}.{qualname}"


def home(obj) -> str | None:
    """The fully qualified name under which the API reference documents a normlab function or class, or None.

    An object lives where it is defined, when that module is public and documents it; otherwise (defined in a
    private module, or made by a factory such as the exercise checkers) in the first public module, in sorted
    order, that lists it in ``__all__``. Every other module that re-exports it leaves it out (the API pages'
    ``:exclude-members:``), so each object is documented exactly once.
    """
    if not _documentable(obj):
        return None
    defined = _defined_home(obj)
    if defined:
        return defined
    exporters = sorted(_exporters().get(id(obj), []))
    return exporters[0] if exporters else None


def excluded_members(modname: str) -> list[str]:
    """Names in a module's members that are documented elsewhere (their home is another module)."""
    module = _module(modname)
    out = []
    for name in _exported(modname):
        obj = getattr(module, name, None)
        if _documentable(obj) and home(obj) != f"{modname}.{name}":
            out.append(name)
    return sorted(out)


def _resolve(dotted: str) -> list[str]:
    """Homes of the functions and classes along a dotted path (``normlab.layers.BatchNorm1d.forward``)."""
    parts = dotted.split(".")
    obj, start = None, 0
    for i in range(len(parts), 0, -1):  # longest importable module prefix
        try:
            obj = _module(".".join(parts[:i]))
            start = i
            break
        except ImportError:
            continue
    if obj is None:
        return []
    found: list[str] = []
    owner_home = None
    for part in parts[start:]:
        if part.startswith("_"):
            break
        parent, obj = obj, getattr(obj, part, None)
        if obj is None:
            break
        if inspect.isclass(parent) and owner_home and part in vars(parent):
            member = vars(parent)[part]
            if (inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod, property))) \
                    and inspect.getdoc(obj):
                found.append(f"{owner_home}.{part}")
            break
        where = home(obj)
        if where:
            found.append(where)
            owner_home = where if inspect.isclass(obj) else None
    return found


def _chain(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return None


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        pass
    try:  # IPython syntax (magics, shell escapes): what the kernel would run
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))
    except Exception:  # noqa: BLE001 - a cell that is not Python links nothing
        return None


def cell_usage(sources: list[str | None]) -> list[set[str]]:
    """For each cell (None for a cell that is not code), the homes of the normlab objects its code uses.

    ``from normlab.layers import BatchNorm1d`` counts as a use in the importing cell only when no cell of the
    chapter uses the name afterwards: the set-up cell at the top does not claim what later sections call."""
    aliases: dict[str, str] = {}
    used_by_cell: list[set[str]] = []
    imported_by_cell: list[set[str]] = []
    for source in sources:
        used: set[str] = set()
        imported: set[str] = set()
        used_by_cell.append(used)
        imported_by_cell.append(imported)
        tree = _parse(source) if source else None
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        if alias.asname:
                            aliases[alias.asname] = alias.name
                        else:
                            aliases[PACKAGE] = PACKAGE
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    (node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
                for alias in node.names:
                    if alias.name == "*":
                        continue
                    path = f"{node.module}.{alias.name}"
                    aliases[alias.asname or alias.name] = path
                    imported.update(_resolve(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(getattr(node, "ctx", None), ast.Load):
                chain = _chain(node)
                if chain and chain[0] in aliases:
                    used.update(_resolve(".".join([aliases[chain[0]]] + chain[1:])))
    anywhere = set().union(*used_by_cell) if used_by_cell else set()
    return [used | (imported - anywhere) for used, imported in zip(used_by_cell, imported_by_cell)]


_CODE_CELL_MD = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def chapter_sources(path: Path) -> list[str | None]:
    """The cells of a chapter: the source of each code cell, None for the others. A MyST-markdown chapter
    gives its ``{code-cell}`` blocks (its cell numbering is not the notebook's; callers treat it as one block)."""
    path = Path(path)
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        out: list[str | None] = []
        for cell in cells:
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            out.append(source if cell.get("cell_type") == "code" else None)
        return out
    text = path.read_text(encoding="utf-8")
    return [re.sub(r"^:[\w-]+:.*\n", "", block, flags=re.MULTILINE) for block in _CODE_CELL_MD.findall(text)]


@dataclass
class ChapterUsage:
    """What one chapter's code uses: per cell, and all together in first-use order."""

    cells: list[set[str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for used in self.cells:
            for name in sorted(used):
                seen.setdefault(name, None)
        return list(seen)


def chapter_usage(path: Path) -> ChapterUsage:
    return ChapterUsage(cell_usage(chapter_sources(path)))


def chapter_files(chapters: Path) -> list[Path]:
    """The chapters of a book's ``chapters/`` folder (``NN_name.ipynb`` or ``.md``), sorted."""
    return sorted(p for p in Path(chapters).iterdir() if CHAPTER_FILE.match(p.name))


#: An equation label the chapters define (``:label: eq-bn-dx`` in a math directive, or ``(eq-bn-dx)=``).
_EQ_LABEL = re.compile(r"(?::label:\s*|^\((?=eq-))(eq-[a-z0-9-]+)", re.MULTILINE)


def equation_labels(paths: list[Path]) -> set[str]:
    """The equation labels defined in the given chapter files."""
    labels: set[str] = set()
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        if path.suffix == ".ipynb":
            cells = json.loads(text).get("cells", [])
            text = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                             for c in cells if c.get("cell_type") == "markdown")
        labels.update(_EQ_LABEL.findall(text))
    return labels
