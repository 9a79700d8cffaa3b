"""Reproducible numbers: every value a page glues is the same when its notebook is executed again.

``make test`` executes every notebook twice: once in the book's build (its values are in
``_build/jupyter_execute/chapters/<stem>.glue.json``) and once under nbval, with ``$NORMLAB_GLUE_RECORD``
set so that ``normlab.book.glue`` writes each value to ``<record>/<stem>.jsonl``. This module, which
``make test`` runs after that (it is not collected with the rest: it needs both executions), compares them.

Every value must be identical (same repr), except the ones in ``WALL_CLOCK``: measured times and ratios of
times, which no two runs reproduce bit for bit. For those the test says so and bounds them: both runs must
give a positive finite number, within a factor of each other that is wide because the two executions do
not run under the same load (the build runs the notebooks one at a time; nbval runs them beside the rest
of the tests on two workers): on this two-core machine, a per-step time under load measured 5.7 times its
value on an idle machine, and the ratio of two times 6.4 times. Everything else, losses, accuracies,
gradients, deviations from torch, is computed with fixed seeds on one thread and must not change at all.

Run by hand with ``NORMLAB_GLUE_RECORD=dir`` for the nbval run and the same variable for this module.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_GLUE = ROOT / "_build" / "jupyter_execute" / "chapters"
RECORD = Path(os.environ.get("NORMLAB_GLUE_RECORD", ROOT / "_build" / "glue-record"))

# Glue names (regular expressions, matched in full) whose values are wall-clock measurements, and the factor
# by which the two runs may differ: absolute times and ratios of two times.
WALL_CLOCK: dict[str, tuple[str, ...]] = {
    "07_layernorm": (r"t_bn_us", r"t_(batch|layer|instance|group|rms)", r"t_ours_(batch|layer|instance|group|rms)",
                     r"t_rms_vs_ln"),
    "11_transformers": (r"r_time",),
    "12_batchnorm_at_scale": (r"startup_seconds", r"step_ms_local", r"step_ms_sync", r"sync_ratio"),
}
WALL_CLOCK_FACTOR = 20.0


def _built_values(stem: str) -> dict[str, str]:
    data = json.loads((BUILD_GLUE / f"{stem}.glue.json").read_text())
    return {name: entry["data"]["text/plain"] for name, entry in data.items()}


def _recorded_values(stem: str) -> dict[str, str]:
    values = {}
    for line in (RECORD / f"{stem}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        values[entry["name"]] = entry["text"]  # the last value glued under a name is the one the page shows
    return values


def _number(text: str) -> float | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _is_wall_clock(stem: str, name: str) -> bool:
    return any(re.fullmatch(pattern, name) for pattern in WALL_CLOCK.get(stem, ()))


STEMS = sorted(path.name.removesuffix(".glue.json") for path in BUILD_GLUE.glob("*.glue.json"))


def test_every_notebook_was_recorded():
    if not STEMS:
        pytest.fail(f"no glued values in {BUILD_GLUE}: build the book first (make book)")
    missing = [stem for stem in STEMS if not (RECORD / f"{stem}.jsonl").exists()]
    assert not missing, (f"no record of a second execution for {missing} in {RECORD}: run the notebooks under "
                         "nbval with NORMLAB_GLUE_RECORD set (make test does)")


def test_wall_clock_names_exist():
    """Every name excused as wall-clock time is glued by its notebook (no stale excuse)."""
    for stem, patterns in WALL_CLOCK.items():
        names = _built_values(stem)
        for pattern in patterns:
            assert any(re.fullmatch(pattern, name) for name in names), f"{stem}: no glued value matches {pattern!r}"


@pytest.mark.parametrize("stem", STEMS)
def test_glued_values_reproduce(stem):
    if not (RECORD / f"{stem}.jsonl").exists():
        pytest.fail(f"no record for {stem} in {RECORD}")
    built, again = _built_values(stem), _recorded_values(stem)
    assert set(built) == set(again), (
        f"{stem}: the two executions glued different names: only in the build {sorted(set(built) - set(again))}, "
        f"only in the second run {sorted(set(again) - set(built))}")
    changed = []
    for name in sorted(built):
        first, second = built[name], again[name]
        if _is_wall_clock(stem, name):
            a, b = _number(first), _number(second)
            assert a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and a > 0 and b > 0, (
                f"{stem}: wall-clock value {name} is not a positive number: {first} / {second}")
            assert max(a, b) / min(a, b) <= WALL_CLOCK_FACTOR, (
                f"{stem}: wall-clock value {name} changed by more than {WALL_CLOCK_FACTOR}x: {first} then {second}")
        elif first != second:
            changed.append(f"{name}: {first} then {second}")
    assert not changed, f"{stem}: glued values differ between two executions:\n  " + "\n  ".join(changed)
