"""Experiment modules share code only through experiments/_common.py: none imports another (issue 13)."""

import ast
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "src" / "normlab" / "experiments"
MODULES = sorted(p for p in EXPERIMENTS.glob("*.py") if p.stem not in ("__init__", "_common"))


def _experiment_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "normlab.experiments":
                names |= {alias.name for alias in node.names}
            elif node.module.startswith("normlab.experiments."):
                names.add(node.module.rsplit(".", 1)[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("normlab.experiments.")}
    return names


def test_the_scan_sees_the_shared_module():
    assert any("_common" in _experiment_imports(path) for path in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_experiment_module_imports_another(path):
    others = _experiment_imports(path) - {"_common"}
    assert not others, f"{path.name} imports {sorted(others)}: move what they share to experiments/_common.py"
