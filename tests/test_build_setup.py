"""The build's own promises: no stale notebook outputs, no CUDA torch, strict checks."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_run(*args: str) -> str:
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout


def test_changing_normlab_makes_the_build_reexecute_every_notebook():
    # -W: "what if this file were new". The jupyter cache keys on notebook code only,
    # and Sphinx re-reads only changed sources, so both records must go.
    commands = dry_run("-W", "src/normlab/quadratic.py", "book")
    assert re.search(r"rm -rf .*_build/\.jupyter_cache", commands)
    assert re.search(r"rm -rf .*_build/\.doctrees", commands)


def test_notebooks_are_executed_two_at_a_time_into_the_cache_the_build_reads():
    # tools/execute-notebooks runs before jupyter-book, and the times it records go with the cache
    commands = dry_run("-W", "src/normlab/quadratic.py", "book").splitlines()
    execute = next(i for i, line in enumerate(commands) if "tools/execute-notebooks" in line)
    build = next(i for i, line in enumerate(commands) if "jupyter-book build" in line)
    assert execute < build
    assert any(re.search(r"rm -rf .*_build/notebook-times\.json", line) for line in commands)


def test_execute_notebooks_matches_the_builds_cache_key(tmp_path):
    """A notebook executed by tools/execute-notebooks is found by myst-nb's lookup (the same hash), so
    the build merges its outputs instead of executing it again."""
    import json
    import sys

    import nbformat
    from jupyter_cache import get_cache

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# A page"), nbformat.v4.new_code_cell("x = 6 * 7\nprint(x)")]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    cache, times = tmp_path / "cache", tmp_path / "times.json"
    subprocess.run([sys.executable, str(ROOT / "tools/execute-notebooks"), "--cache", str(cache), "--times",
                    str(times), "--jobs", "1", str(path)], check=True, capture_output=True, text=True)
    record = get_cache(str(cache)).match_cache_notebook(nbformat.read(path, as_version=4))  # KeyError if not
    assert record.data["execution_seconds"] > 0
    _, merged = get_cache(str(cache)).merge_match_into_notebook(nbformat.read(path, as_version=4))
    assert merged.cells[1].outputs[0]["text"] == "42\n"
    assert json.loads(times.read_text())["page.ipynb"]["peak_mib"] > 0


def test_book_build_treats_warnings_as_errors():
    commands = dry_run("-W", "src/normlab/quadratic.py", "book")
    assert re.search(r"jupyter-book build -W -n --keep-going", commands)


def test_requirements_pin_the_cpu_torch_wheel_exactly():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    torch_lines = [ln for ln in lines if re.match(r"torch\b", ln)]
    assert torch_lines == ["torch==2.13.0"]


def test_binder_takes_the_cpu_only_torch():
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in binder and "torch==2.13.0+cpu" in binder


def test_notebooks_are_committed_without_outputs():
    import nbformat

    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


def book_colab_setup() -> str:
    from normlab.book import colab_setup
    from normlab.site import repository_url

    return colab_setup(repository_url(ROOT / "_config.yml"))


def test_every_chapter_notebook_starts_with_the_hidden_colab_setup_cell():
    import nbformat

    expected = book_colab_setup()
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        first = nbformat.read(path, as_version=4).cells[0]
        assert first.source == expected, (
            f"{path.name}: its Colab setup cell differs from the one _config.yml's repository.url gives: "
            f"run .venv/bin/python tools/colab-cell {path.relative_to(ROOT)}")
        assert first.metadata.get("tags") == ["remove-cell"], f"{path.name}: the setup cell must be hidden"


def test_colab_setup_cell_installs_only_inside_colab_from_the_configured_repository(monkeypatch):
    import yaml
    from IPython.core.inputtransformer2 import TransformerManager

    calls = []
    python = TransformerManager().transform_cell(book_colab_setup())
    namespace = {"get_ipython": lambda: type("Shell", (), {"system": lambda self, cmd: calls.append(cmd)})()}
    exec(python, namespace)
    assert calls == []
    import sys
    import types

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    exec(python, namespace)
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert len(calls) == 1 and "pip install" in calls[0] and f"git+{url.rstrip('/')}\"" in calls[0]


def test_the_repository_url_is_set_in_one_place_and_a_fork_changes_the_colab_cell(tmp_path):
    import pytest

    from normlab.book import colab_setup
    from normlab.site import repository_url

    fork = colab_setup("https://github.com/alice/normbook.git")
    assert '"normlab[data] @ git+https://github.com/alice/normbook"' in fork and "normbook/normbook" not in fork
    for bad in ("", "github.com/alice/normbook", 'https://github.com/a/b" && rm -rf ~ "'):
        with pytest.raises(ValueError, match="repository.url"):
            colab_setup(bad)
    config = tmp_path / "_config.yml"
    config.write_text("title: x\n")
    with pytest.raises(ValueError, match="set repository.url"):
        repository_url(config)
    # Nothing else in the sources names the repository: _config.yml is the one place to change for a fork.
    url = repository_url(ROOT / "_config.yml").removeprefix("https://")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    naming = [name for name in tracked.split()
              if not name.endswith(".ipynb") and name != "_config.yml" and (ROOT / name).is_file()
              and url in (ROOT / name).read_text(errors="ignore")]
    assert naming == [], f"files that spell out the repository URL instead of reading _config.yml: {naming}"


def test_site_javascript_is_served_by_the_site_itself():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["mathjax_path"].startswith("../_vendor/")
    assert all(url.startswith("../_vendor/") for url in config["nb_ipywidgets_js"])
    commands = dry_run("-W", "tools/vendor-js", "book")
    assert "tools/vendor-js _build/vendor" in commands


def test_pages_workflow_builds_the_book_with_cpu_torch_and_publishes_the_site():
    import yaml

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "deploy.yml").read_text())
    build = workflow["jobs"]["build"]["steps"]
    commands = "\n".join(step.get("run", "") for step in build)
    assert "torch==2.13.0+cpu" in commands and "download.pytorch.org/whl/cpu" in commands
    assert commands.index("torch==2.13.0+cpu") < commands.index("make book")
    upload = next(step for step in build if "upload-pages-artifact" in step.get("uses", ""))
    assert upload["with"]["path"] == "_build/html"
    assert "deploy-pages" in workflow["jobs"]["deploy"]["steps"][0]["uses"]


def test_toc_documents_lists_root_then_every_chapter_in_order(tmp_path):
    from normlab.site import toc_documents

    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nparts:\n  - caption: A\n    chapters:\n      - file: a\n      - file: b\n"
                   "  - caption: B\n    chapters:\n      - file: c\n")
    assert toc_documents(toc) == ["intro", "a", "b", "c"]


def test_make_book_and_make_test_install_their_system_packages_themselves():
    """The README's two commands work on a fresh Debian machine: the Makefile, not only CI, checks for
    (and installs) Python's venv, npm and Chromium before it needs them."""
    book = dry_run("-W", "tools/vendor-js", "-W", "requirements.txt", "book")
    assert "tools/system-packages python3-venv" in book
    assert "tools/system-packages npm" in book
    assert book.index("tools/system-packages npm") < book.index("tools/vendor-js _build/vendor")
    assert book.index("tools/system-packages python3-venv") < book.index("-m venv .venv")
    assert "tools/system-packages chromium" not in book, "the book itself needs no browser"
    test = dry_run("test")
    for name in ("python3-venv", "npm", "chromium"):
        assert f"tools/system-packages {name}" in test
    assert test.index("tools/system-packages chromium") < test.index("-m pytest")
    assert "tools/system-packages chromium" in dry_run("pdf")
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get" not in ci, ".ci/run must rely on the Makefile for system packages"


def _fake_commands(directory: Path, **scripts: str) -> dict[str, str]:
    """A PATH of just `directory`, holding shell scripts named after the commands a test fakes."""
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = directory / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    return {"PATH": str(directory), "PYTHON": "/nonexistent/python3"}


def run_system_packages(env: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(ROOT / "tools" / "system-packages"), *names], env=env,
                          capture_output=True, text=True, timeout=30)


def test_system_packages_installs_what_is_missing_with_apt_get_as_root(tmp_path):
    log = tmp_path / "apt.log"
    env = _fake_commands(tmp_path / "bin", id="echo 0", env='shift; exec "$@"',
                         **{"apt-get": f'echo "$*" >> {log}'}, npm="true")
    result = run_system_packages(env, "npm", "chromium", "python3-venv")
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].startswith("install -y") and calls[1].split()[-3:] == ["chromium", "python3", "python3-venv"]
    # The fake apt-get installs nothing: the script must notice and say so.
    assert result.returncode == 1 and "still missing after apt-get install" in result.stderr


def test_system_packages_stops_with_a_clear_message_when_it_cannot_install(tmp_path):
    env = _fake_commands(tmp_path / "bin", id="echo 1000", **{"apt-get": "exit 99"})
    result = run_system_packages(env, "chromium")
    assert result.returncode == 1
    assert "needs chromium" in result.stderr and "needs root" in result.stderr
    assert "apt-get install chromium" in result.stderr
    no_apt = run_system_packages(_fake_commands(tmp_path / "empty"), "npm")
    assert no_apt.returncode == 1 and "no apt-get" in no_apt.stderr and "npm" in no_apt.stderr
    present = run_system_packages(_fake_commands(tmp_path / "ok", npm="true", chromium="true"), "npm", "chromium")
    assert present.returncode == 0 and present.stderr == ""
