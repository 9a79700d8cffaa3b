"""Shortcut detection: the implementations an exercise asks for are unavailable while it is checked.

An exercise names, by dotted path, the functions the student is asked to write
(``"torch.nn.functional.batch_norm"``, ``"normlab.functional.batch_norm_forward"``). While
the student's function runs, a profile hook (``sys.setprofile``) watches every call; a
call to one of those functions, however the student reached it (an alias, ``from ... import``,
a ``torch.nn`` module whose ``forward`` calls it), raises :class:`ShortcutUsed` at the call
and is recorded by name. Python functions are recognized by their code object, compiled
ones (``torch.batch_norm``) by identity, torch modules by their ``forward`` and other
classes (``sklearn.preprocessing.StandardScaler``) by every method they define.

Runs in the child process of :mod:`normlab.exercises._child`, for
:mod:`normlab.exercises.checker`.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

__all__ = ["ShortcutGuard", "ShortcutUsed", "resolve"]


class ShortcutUsed(BaseException):
    """Raised at a call to a forbidden implementation; a BaseException so `except Exception` keeps it."""


def resolve(dotted: str) -> Any:
    """The object at ``dotted`` ("package.module.attr.attr"); raises ``LookupError`` if none."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                obj = getattr(obj, attribute)
        except AttributeError:
            break
        return obj
    raise LookupError(f"nothing is called {dotted!r}")


class ShortcutGuard:
    """A context manager that forbids calls to the named implementations in this thread."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.called: list[str] = []
        self._codes: dict[Any, str] = {}
        self._builtins: dict[int, tuple[Any, str]] = {}  # id → (object kept alive, name)
        for name in names:
            try:
                self._forbid(resolve(name), name)
            except LookupError:
                continue

    def _forbid(self, obj: Any, name: str) -> None:
        if isinstance(obj, type):  # a module: its forward; any other class: every method it defines
            forward = getattr(obj, "forward", None)
            methods = [forward] if forward is not None else [
                v for k, v in vars(obj).items() if callable(v) and not (k.startswith("__") and k != "__call__")]
            for method in methods:
                self._forbid(method, name)
            return
        try:  # a decorated function: its own code, not the decorator's wrapper that many functions share
            obj = inspect.unwrap(obj)
        except ValueError:
            pass
        code = getattr(obj, "__code__", None)
        if code is not None:
            self._codes[code] = name
        else:
            self._builtins[id(obj)] = (obj, name)

    def _profile(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            name = self._codes.get(frame.f_code)
        elif event == "c_call":
            found = self._builtins.get(id(arg))
            name = found[1] if found is not None and found[0] is arg else None
        else:
            return
        if name is not None:
            self.called.append(name)
            raise ShortcutUsed(name)

    def __enter__(self) -> "ShortcutGuard":
        if self._codes or self._builtins:
            sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.setprofile(None)
