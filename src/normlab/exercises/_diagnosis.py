"""Comparing an output with the expected one and explaining the difference.

For :mod:`normlab.exercises.checker`: outputs are first converted with
:mod:`normlab.exercises._outputs`, then checked for structure (types, tuple lengths),
shape, non-finite values and values. A wrong output is matched against the
exercise's known mistakes, else named by its pattern: a shape off by an axis of size
1 or transposed, NaNs, a sign error, a constant factor or offset, or, failing those,
the largest errors.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from normlab.exercises._outputs import _NUMERIC_KINDS, _normalize, _Opaque
from normlab.exercises._sandbox import _call_on_copy
from normlab.exercises._text import _describe, _exception_line, _index_text, _number

from normlab.exercises._spec import Case, Exercise, Mistake


# --------------------------------------------------------------------------- verdict


def _judge(exercise: Exercise, case: Case, output: Any, expected: Any) -> str | None:
    """None if the output agrees with the expected one, else the diagnosis."""
    if expected is None:
        if output is None:
            return None
        return f"returned {_describe(output)}, but nothing (None) was expected."
    if output is None:
        return "returned None: did you forget `return`?"
    want = _normalize(expected)
    got = _normalize(output, like=want)
    problem = _difference(exercise, case, got, want)
    if problem is None:
        return None
    for mistake in exercise.mistakes:
        if _matches_mistake(exercise, case, got, want, mistake):
            return mistake.message
    if exercise.compare is None:
        pattern = _order_problem(got, want, exercise.rtol, exercise.atol, exercise.output_names)
        if pattern is not None:
            return pattern
    return problem


def _agrees(got: Any, want: Any, rtol: float, atol: float) -> bool:
    return _structure_problem(got, want) is None and _value_problem(got, want, rtol, atol) is None


def _order_problem(got: Any, want: Any, rtol: float, atol: float, names: tuple[str, ...]) -> str | None:
    """Outputs that are right but in the wrong order: a permuted tuple, a reversed vector."""
    if isinstance(want, tuple) and isinstance(got, tuple) and len(got) == len(want) and 2 <= len(want) <= 5:
        n = len(want)
        for order in itertools.permutations(range(n)):
            if order == tuple(range(n)):
                continue
            if all(_agrees(got[i], want[order[i]], rtol, atol) for i in range(n)):
                label = list(names) if len(names) == n else [f"element [{j}]" for j in range(n)]
                yours = ", ".join(label[order[i]] for i in range(n))
                return (f"your outputs are right but in the wrong order: you returned ({yours}); "
                        f"the exercise asks for ({', '.join(label)}).")
        return None
    if (isinstance(want, np.ndarray) and isinstance(got, np.ndarray) and want.ndim == 1
            and want.shape == got.shape and want.size >= 2 and want.dtype.kind in _NUMERIC_KINDS
            and got.dtype.kind in _NUMERIC_KINDS and _agrees(got[::-1].copy(), want, rtol, atol)):
        label = f" ({', '.join(names)})" if len(names) == want.size else ""
        return f"your values are right but in reverse order: return them in the order the exercise states{label}."
    return None


def _matches_mistake(exercise: Exercise, case: Case, got: Any, want: Any, mistake: Mistake) -> bool:
    try:
        wrong = _normalize(_call_on_copy(mistake.implementation, case), like=want)
    except Exception:  # the mistake may not apply to this case
        return False
    return wrong is not None and _difference(exercise, case, got, wrong) is None


def _difference(exercise: Exercise, case: Case, got: Any, want: Any) -> str | None:
    """None if ``got`` agrees with ``want`` (both normalized), else a diagnosis."""
    problem = _structure_problem(got, want)
    if problem is not None:
        return problem
    if exercise.compare is None:
        return _value_problem(got, want, exercise.rtol, exercise.atol)
    try:
        verdict = exercise.compare(got, want, case)
    except Exception as err:
        return f"your output could not be compared with the expected one ({_exception_line(err)})."
    return None if verdict is None else str(verdict)


def _structure_problem(got: Any, want: Any, where: str = "") -> str | None:
    """Type and tuple-length problems, recursively; shapes and values are not looked at."""
    prefix = f"element {where} of the returned tuple: " if where else ""
    if isinstance(want, tuple):
        if not isinstance(got, tuple):
            return f"{prefix}returned {_describe(got)}, expected a tuple of {len(want)} values."
        if len(got) != len(want):
            return f"{prefix}returned a tuple of {len(got)} values, expected {len(want)}."
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _structure_problem(g, w, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if isinstance(want, np.ndarray) and want.dtype.kind in _NUMERIC_KINDS:
        if isinstance(got, np.ndarray) and got.dtype.kind in _NUMERIC_KINDS:
            return None
        return f"{prefix}returned {_describe(got)}, expected {_describe(want)}."
    if not _equal_objects(got, want):
        return f"{prefix}returned {_describe(got)}, expected {_describe(want)}."
    return None


def _equal_objects(got: Any, want: Any) -> bool:
    try:
        if isinstance(got, np.ndarray) and isinstance(want, np.ndarray):
            return got.shape == want.shape and bool(np.array_equal(got, want))
        raw_got = got.value if isinstance(got, _Opaque) else got
        raw_want = want.value if isinstance(want, _Opaque) else want
        return type(raw_got) is type(raw_want) and bool(raw_got == raw_want)
    except Exception:
        return False


def _value_problem(got: Any, want: Any, rtol: float, atol: float, where: str = "") -> str | None:
    """Shapes, non-finite values and values of structurally equal normalized outputs."""
    if isinstance(want, tuple):
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _value_problem(g, w, rtol, atol, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if not isinstance(want, np.ndarray) or want.dtype.kind not in _NUMERIC_KINDS:
        return None  # compared for equality in _structure_problem
    prefix = f"element {where} of the returned tuple: " if where else ""
    problem = _array_problem(got, want, rtol, atol)
    return None if problem is None else prefix + problem


def _array_problem(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    if got.shape != want.shape:
        return _shape_message(got, want, rtol, atol)
    g, w = _as_float(got), _as_float(want)
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(g) & np.isfinite(w)
        if bad.any():
            return _nonfinite_message(g, bad)
        if np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            return None
        return _value_message(got, g, w, rtol, atol)


def _as_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


# --------------------------------------------------------------------------- messages


def _shape_message(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    message = f"returned shape {got.shape}, expected shape {want.shape}"
    reduction = _missing_reduction(got, want, rtol, atol)
    if reduction is not None:
        return f"{message}: {reduction}"
    off_by_one = _off_by_one(got, want, rtol, atol)
    if off_by_one is not None:
        return f"{message}: {off_by_one}"
    if got.squeeze().shape == want.squeeze().shape:
        return (
            f"{message}: they differ only by an axis of size 1. Check `keepdims=True`, "
            "indexing with `[:, None]`, or broadcasting; `reshape` to the expected shape."
        )
    if got.ndim == 2 and got.shape == want.shape[::-1]:
        exact = np.allclose(_as_float(got).T, _as_float(want), rtol=rtol, atol=atol, equal_nan=True)
        detail = "is exactly the transpose of the expected one" if exact else "looks transposed"
        return f"{message}: your output {detail}. Check the order of a matrix product, or a `.T`."
    if got.ndim == want.ndim and sorted(got.shape) == sorted(want.shape):
        return (
            f"{message}: the same axes in a different order. Check a transpose or an "
            "`axis` argument."
        )
    if got.size > want.size and got.ndim > want.ndim:
        return (
            f"{message}: more values than expected. Broadcasting may have combined arrays of "
            "shapes like (n,) and (n, 1) into an (n, n) result."
        )
    if got.size == 1 and want.size > 1:
        return f"{message}: a single value. Did you reduce over every axis instead of one `axis`?"
    return f"{message}. Check the `axis` of each reduction and the shapes of intermediate results."


def _missing_reduction(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    """An extra leading axis that a sum over the batch would remove."""
    if got.ndim != want.ndim + 1 or got.shape[1:] != want.shape or got.shape[0] < 2:
        return None
    g, w = _as_float(got), _as_float(want)
    with np.errstate(all="ignore"):
        if np.allclose(g, g[:1], rtol=rtol, atol=atol):
            return None  # identical rows: a broadcast, not one value per example
        if np.allclose(g.sum(axis=0), w, rtol=rtol, atol=atol):
            return ("one value per example: your output has the batch axis still in it. These values summed "
                    "over the batch (axis 0) are right; reduce over the batch.")
        if np.allclose(g.mean(axis=0), w, rtol=rtol, atol=atol):
            return ("one value per example: your output has the batch axis still in it. These values averaged "
                    "over the batch (axis 0) are right; reduce over the batch.")
    return None


def _off_by_one(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    """A length one too long or too short along the first axis."""
    if got.ndim != want.ndim or got.ndim == 0 or got.shape[1:] != want.shape[1:]:
        return None
    extra = got.shape[0] - want.shape[0]
    if abs(extra) != 1:
        return None
    longer, shorter = (got, want) if extra > 0 else (want, got)
    g, w = _as_float(longer), _as_float(shorter)
    where = ""
    with np.errstate(all="ignore"):
        if w.size and np.allclose(g[1:], w, rtol=rtol, atol=atol):
            where = " the first value" + (" is extra" if extra > 0 else " is missing")
        elif w.size and np.allclose(g[:-1], w, rtol=rtol, atol=atol):
            where = " the last value" + (" is extra" if extra > 0 else " is missing")
    count = "one value too many" if extra > 0 else "one value too few"
    detail = f" (the others are right:{where})" if where else ""
    return (f"{count} along axis 0{detail}. Check where your loop starts and stops (`range(n)` against "
            "`range(n + 1)`), and whether the starting value belongs in the output.")


def _nonfinite_message(g: np.ndarray, bad: np.ndarray) -> str:
    n_nan = int(np.count_nonzero(np.isnan(g) & bad))
    n_inf = int(np.count_nonzero(np.isinf(g) & bad))
    counts = " and ".join(
        text for text in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else "") if text
    )
    first = _index_text(np.unravel_index(int(np.argmax(bad)), bad.shape))
    return (
        f"your output has {counts} value{'s' if n_nan + n_inf > 1 else ''} where the expected "
        f"output is finite (the first{first}). Look for a division by zero, a log or sqrt "
        "of a negative number, or an overflow."
    )


def _value_message(
    original: np.ndarray, g: np.ndarray, w: np.ndarray, rtol: float, atol: float
) -> str:
    """Name the pattern of a same-shape, finite but wrong output."""

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))

    w_is_zero = close(w, np.zeros_like(w))
    if g.size > 1 and not w_is_zero and np.all(g == 0):
        return "your output is all zeros, but the expected one is not."
    if not w_is_zero and close(g, -w):
        return (
            "your output is the negative of the expected one: look for a sign error "
            "(`a - b` instead of `b - a`?)."
        )
    if g.ndim == 2 and g.shape[0] == g.shape[1] > 1 and close(g, w.T):
        return (
            "your output is the transpose of the expected one. Check the order of a "
            "matrix product, or a `.T`."
        )
    if g.size > 1 and not w_is_zero and g.dtype.kind == "f":
        k = float(np.vdot(w, g) / np.vdot(w, w))
        if abs(k - 1) > 1e-3 and close(g, k * w):  # k ≈ 1 is a precision problem
            return (
                f"your output is off by a constant factor ≈ {k:.4g} "
                f"(yours = {k:.4g} × expected)."
            )
        b = float(np.mean(g - w))
        if abs(b) > 1e-3 * np.abs(w).max() and close(g, w + b):
            return f"your output is off by a constant ≈ {b:.4g} (yours = expected + {b:.4g})."
    return _generic_value_message(original, g, w, rtol, atol)


def _generic_value_message(
    original: np.ndarray, g: np.ndarray, w: np.ndarray, rtol: float, atol: float
) -> str:
    """How many values are wrong, the worst one, and the largest errors."""
    wrong = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    error = np.abs(g - w)
    ranking = np.where(wrong, np.nan_to_num(error, nan=np.inf), -1.0)
    worst = np.unravel_index(int(np.argmax(ranking)), g.shape)
    yours, theirs = g[worst], w[worst]
    if g.size == 1:
        about = ""
        if theirs != 0 and np.isfinite(yours):
            about = f" (relative error {_number(abs(yours - theirs) / abs(theirs))}"
            about += f"; the check allows rtol={rtol:g}, atol={atol:g})"
        return f"wrong value: yours is {_number(yours)}, expected {_number(theirs)}{about}."
    n_wrong, finite = int(wrong.sum()), wrong & np.isfinite(error)
    nonzero = finite & (w != 0)
    relative = float((error[nonzero] / np.abs(w[nonzero])).max()) if nonzero.any() else np.inf
    details = [f"max absolute error {_number(error[finite].max())}"] if finite.any() else []
    details += [f"max relative error {_number(relative)}"] if nonzero.any() else []
    message = (
        f"{n_wrong} of {g.size} values {'differs' if n_wrong == 1 else 'differ'} from the "
        f"expected ones; the largest difference is{_index_text(worst)}: yours "
        f"{_number(yours)}, expected {_number(theirs)}"
        + (f" ({', '.join(details)})" if details else "")
        + f". Tolerance: rtol={rtol:g}, atol={atol:g}."
    )
    low_precision = original.dtype in (np.float16, np.float32) and w.dtype == np.float64
    if low_precision and relative < 1e-2:
        message += f" Your output is {original.dtype}: compute in float64 for this precision."
    return message
