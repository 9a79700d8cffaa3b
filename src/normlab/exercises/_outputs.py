"""Converting outputs to NumPy, for :mod:`normlab.exercises.checker`.

Tensors, arrays, scalars and rectangular lists become ``ndarray``; tuples are
converted elementwise; anything else is wrapped in :class:`_Opaque`, with a reason
when it is worth telling the student.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

_NUMERIC_KINDS = "biufc"


@dataclass(frozen=True)
class _Opaque:
    """An output that is not a number, array, tensor or rectangular list."""

    value: Any
    reason: str = ""


def _normalize(value: Any, like: Any = None) -> Any:
    """Tensors, arrays, scalars and lists → ndarray; tuples elementwise; else _Opaque.

    A list becomes a tuple when ``like`` (the normalized expected output) is a tuple.
    """
    if isinstance(value, tuple) and isinstance(like, np.ndarray) and like.ndim > 0:
        as_list = _as_array(list(value))  # a sequence asked for: a tuple is as good as a list
        if isinstance(as_list, np.ndarray) and as_list.shape == like.shape:
            return as_list
    if isinstance(value, tuple) or (isinstance(value, list) and isinstance(like, tuple)):
        likes = like if isinstance(like, tuple) else ()
        return tuple(
            _normalize(v, likes[i] if i < len(likes) else None) for i, v in enumerate(value)
        )
    if value is None:
        return None
    return _as_array(value)


def _as_array(value: Any) -> np.ndarray | _Opaque:
    if isinstance(value, (np.ndarray, _Opaque)):
        return value
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return np.asarray(value)
    if _is_tensor(value):
        return _tensor_to_numpy(value)
    if isinstance(value, (list, tuple)):
        items = [_as_array(v) for v in value]
        if any(isinstance(item, _Opaque) for item in items):
            return _Opaque(value, "a list containing values that are not numbers or arrays")
        try:
            array = np.array(items)
        except (ValueError, TypeError):
            array = None
        if array is None or array.dtype.kind == "O":
            reason = "a list that is not a rectangular array (rows of different lengths?)"
            return _Opaque(value, reason)
        return array
    try:  # other array libraries, pandas; hasattr itself can raise on odd objects
        array = np.asarray(value) if hasattr(value, "__array__") else None
    except Exception:
        return _Opaque(value, f"a `{type(value).__name__}` that cannot be converted to an array")
    if array is not None and array.dtype.kind in _NUMERIC_KINDS:
        return array
    return _Opaque(value)


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # if torch is not imported, nothing is a tensor
    return torch is not None and isinstance(value, torch.Tensor)


def _tensor_to_numpy(tensor: Any) -> np.ndarray | _Opaque:
    try:
        plain = tensor.detach().cpu()
        if plain.layout != sys.modules["torch"].strided:
            plain = plain.to_dense()
        plain = plain.resolve_conj().resolve_neg()
        try:
            return plain.numpy()
        except TypeError:  # dtypes NumPy lacks, e.g. bfloat16
            return plain.double().numpy()
    except Exception:
        return _Opaque(tensor, "a torch tensor that cannot be converted to NumPy")
