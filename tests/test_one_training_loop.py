"""normlab.train.train is the book's one training loop (issue 13): any other optimizer step in normlab
sits in a function that says why, in a comment starting '# own loop:' (or, for a single step taken to
measure its effect, '# one SGD step')."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "normlab"


def _steps_outside_train():
    """Each call ``<optimizer>.step()`` (any name) outside train.py, with the source of its function."""
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "train.py":
            continue
        text = path.read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "step"
                    and not node.args and isinstance(node.func.value, ast.Name)
                    and re.search(r"opt", node.func.value.id)):
                enclosing = min((f for f in functions if f.lineno <= node.lineno <= f.end_lineno),
                                key=lambda f: f.end_lineno - f.lineno)
                body = "\n".join(lines[enclosing.lineno - 1:enclosing.end_lineno])
                yield f"{path.relative_to(SRC)}:{node.lineno} in {enclosing.name}", body


CASES = list(_steps_outside_train())


def test_the_scan_finds_the_known_exceptions():
    assert any("distributed.py" in where for where, _ in CASES)   # the scan itself works


@pytest.mark.parametrize("where, body", CASES, ids=[where for where, _ in CASES])
def test_every_other_optimizer_step_says_why_it_is_not_train_train(where, body):
    assert "# own loop:" in body or "# one SGD step" in body, (
        f"{where} steps an optimizer outside normlab.train.train without saying why: use train.train "
        "(hooks, param_groups, batches) or add a comment '# own loop: <reason>'.")
