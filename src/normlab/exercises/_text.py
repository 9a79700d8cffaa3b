"""Formatting for :mod:`normlab.exercises.checker`'s messages.

Case labels that summarize the arguments, short phrases for outputs, numbers,
indices, bounded reprs, one-line exceptions, and messages as HTML.
"""

from __future__ import annotations

import html
import inspect
import re
import reprlib
from typing import Any, Callable

import numpy as np

from normlab.exercises._outputs import _NUMERIC_KINDS, _is_tensor, _Opaque

from normlab.exercises._spec import Case


# --------------------------------------------------------------------------- cases and outputs


def _case_label(index: int, total: int, case: Case, reference: Callable) -> str:
    about = case.description or _summarize_arguments(case, reference)
    return f"case {index + 1} of {total}" + (f" ({about})" if about else "")


def _summarize_arguments(case: Case, reference: Callable) -> str:
    names = _positional_names(reference)
    parts = [
        f"{names[i] if i < len(names) else f'arg{i + 1}'}={_summarize(v)}"
        for i, v in enumerate(case.args)
    ]
    parts += [f"{key}={_summarize(v)}" for key, v in case.kwargs.items()]
    return ", ".join(parts)


def _summarize(value: Any) -> str:
    if isinstance(value, np.ndarray) or _is_tensor(value):
        kind = "array" if isinstance(value, np.ndarray) else "tensor"
        return f"{kind} of shape {tuple(value.shape)}"
    if isinstance(value, (bool, int, float, np.generic)):
        return _number(value)
    return _short_repr(value)


def _positional_names(fn: Callable) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in positional]


def _signature(fn: Callable) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "of the exercise"


def _describe(value: Any) -> str:
    """A short phrase for a student's output: 'a str 'abc'', 'an array of shape (3,) ...'."""
    if isinstance(value, _Opaque):
        return value.reason or _describe(value.value)
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            return f"an array of {value.dtype} (not numbers)"
        if value.ndim == 0:
            return f"a number ({_number(value[()])})"
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} values"
    return f"a `{type(value).__name__}` ({_short_repr(value)})"


# --------------------------------------------------------------------------- values and exceptions


def _exception_line(err: BaseException) -> str:
    text = _safe_str(err)
    name = type(err).__name__
    return f"{name}: {_shorten(text, 300)}" if text else name


def _number(value: Any) -> str:
    try:
        return f"{value:.6g}"
    except (TypeError, ValueError):
        return _short_repr(value)


def _index_text(index: tuple) -> str:
    return f" at index [{', '.join(str(int(i)) for i in index)}]" if len(index) else ""


def _short_repr(value: Any) -> str:
    limits = reprlib.Repr()
    limits.maxstring = limits.maxother = 60
    try:
        return limits.repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _html_with_code(message: str) -> str:
    """Escape a message for HTML, showing `backticked` spans as code."""
    escaped = html.escape(message).replace("\n", "<br>")
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
