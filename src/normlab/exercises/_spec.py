"""What a coding exercise is: its cases, its reference, its known mistakes, its hints.

Plain data, imported by :mod:`normlab.exercises.checker` (which runs a check) and by every
chapter's exercise module (which declares its exercises); keeping the types here means no
module imports the checker only for its types.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Case", "Exercise", "Mistake"]


@dataclass(frozen=True)
class Case:
    """One set of arguments on which the student's function is compared with the reference."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation and what to tell a student whose output matches it."""

    name: str
    implementation: Callable
    message: str


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Exercise:
    """A coding exercise: a reference, generated cases, known mistakes and tiered hints.

    ``cases(rng)`` builds the cases from ``np.random.default_rng(seed)``. Outputs are
    compared with ``np.allclose(student, reference, rtol, atol)`` after converting
    tensors, lists and scalars to arrays (tuples and lists elementwise), unless ``compare``
    is given: ``compare(student_output, expected_output, case)`` receives the converted
    outputs and returns ``None`` when they agree, else a message for the student (for
    outputs that are not unique, such as a whitening matrix up to rotation).

    ``hint`` holds the hints in tiers, revealed one more after each failed attempt: first a
    pointer to the equation, then the idea; never the answer. ``returns`` says what the
    function returns (shown by the student edition's stub). ``forbidden`` names the
    implementations that the exercise asks the student to write (``"torch.nn.functional.
    batch_norm"``, ``"normlab.functional.batch_norm_forward"``): calling one while the check
    runs is reported by name. The reference itself is always forbidden. ``output_names``
    names the elements of a tuple output (``("dx", "dgamma", "dbeta")``), for messages about
    their order. ``eps_argument`` names an ε argument: the check then recognizes a function
    that ignores it. ``time_limit`` is in seconds per case, enforced from outside the
    student's code.
    """

    name: str
    reference: Callable
    cases: Callable[[np.random.Generator], Sequence[Case]]
    mistakes: Sequence[Mistake] = ()
    hint: str | Sequence[str] = ()
    rtol: float = 1e-6
    atol: float = 1e-8
    compare: Callable[[Any, Any, Case], str | None] | None = None
    time_limit: float = 5.0
    seed: int = 0
    returns: str = ""
    forbidden: Sequence[str] = ()
    output_names: Sequence[str] = ()
    eps_argument: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Exercise name must be a non-empty string; got {self.name!r}.")
        for attribute in ("reference", "cases"):
            if not callable(getattr(self, attribute)):
                raise TypeError(f"Exercise {self.name!r}: `{attribute}` must be callable.")
        if self.compare is not None and not callable(self.compare):
            raise TypeError(f"Exercise {self.name!r}: `compare` must be callable or None.")
        mistakes = tuple(self.mistakes)
        if not all(isinstance(m, Mistake) for m in mistakes):
            raise TypeError(f"Exercise {self.name!r}: `mistakes` must hold Mistake objects.")
        if self.rtol < 0 or self.atol < 0:
            raise ValueError(f"Exercise {self.name!r}: rtol and atol must be >= 0.")
        if self.time_limit is None or not self.time_limit > 0:
            raise ValueError(
                f"Exercise {self.name!r}: time_limit must be positive seconds; got {self.time_limit!r}."
            )
        object.__setattr__(self, "hint", _as_tuple(self.hint))
        object.__setattr__(self, "forbidden", _as_tuple(self.forbidden))
        object.__setattr__(self, "output_names", _as_tuple(self.output_names))
        if self.eps_argument is not None:
            mistakes = (_eps_ignored(self.reference, self.eps_argument, self.name), *mistakes)
        object.__setattr__(self, "mistakes", mistakes)

    @property
    def hints(self) -> tuple[str, ...]:
        """The hint tiers, first (a pointer to the equation) to last (the idea)."""
        return self.hint  # type: ignore[return-value]

    def tolerance_text(self) -> str:
        """The comparison the check makes, as the statement must print it.

        ``"relative tolerance 1e-6, absolute tolerance 1e-8"``; exercises with their own
        ``compare`` describe it in their statement instead and return ``""`` here.
        """
        if self.compare is not None:
            return ""
        return f"relative tolerance {_short_number(self.rtol)}, absolute tolerance {_short_number(self.atol)}"

    def signature_text(self) -> str:
        """``name(arg, arg, ...)`` with the reference's parameter names, as the statement must print it."""
        try:
            names = list(inspect.signature(self.reference).parameters)
        except (TypeError, ValueError):
            names = []
        return f"{self.name}({', '.join(names)})"


def _short_number(x: float) -> str:
    """1e-06 → "1e-6", 0.5 → "0.5", 0 → "0": numbers as a statement prints them."""
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:g}"
    mantissa, exponent = f"{x:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _eps_ignored(reference: Callable, eps_argument: str, name: str) -> Mistake:
    """The reference with ε set to 0: what a function that ignores its ``eps`` returns."""
    try:
        parameters = list(inspect.signature(reference).parameters)
    except (TypeError, ValueError):
        parameters = []
    if eps_argument not in parameters:
        raise ValueError(f"Exercise {name!r}: the reference has no argument {eps_argument!r}.")
    position = parameters.index(eps_argument)

    def without_eps(*args, **kwargs):
        args = list(args)
        if eps_argument in kwargs:
            kwargs[eps_argument] = 0.0
        elif position < len(args):
            args[position] = 0.0
        return reference(*args, **kwargs)

    return Mistake(
        "eps ignored", without_eps,
        f"Your output is what the formula gives with ε = 0: your function ignores its "
        f"`{eps_argument}` argument (this case uses features of small variance, where ε matters).",
    )
