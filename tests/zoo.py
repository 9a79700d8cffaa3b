"""Helpers shared by the exercise zoos (tests/test_<chapter>_exercises.py)."""

from __future__ import annotations


def first_message(result) -> str:
    """The diagnosis of a check that must fail: its first message."""
    assert not result.passed, "this attempt should fail"
    return result.messages[0]
