"""Shared test settings.

Small models train many times faster with one intra-op thread than with two on this
2-core machine, and pytest-xdist already runs two workers.

pytest-xdist hands tests to workers in an order that changes from run to run, so a test
that draws from torch's global generator would see a different stream each run. Every
test therefore starts from the same seed; tests about several seeds loop over them
explicitly. Hypothesis runs derandomized for the same reason: the same examples on every
run, so a red run can be reproduced. Set ``NORMLAB_HYPOTHESIS_EXPLORE=1`` to let it draw
fresh examples while developing.
"""

import os

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)
os.environ.setdefault("NORMLAB_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "normlab"))

settings.register_profile("reproducible", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile("explore" if os.environ.get("NORMLAB_HYPOTHESIS_EXPLORE") else "reproducible")


@pytest.fixture(autouse=True)
def _seed_torch():
    """Start every test from torch.manual_seed(0)."""
    torch.manual_seed(0)


@pytest.fixture
def student_mode(monkeypatch):
    """Check as a student would: a failing check reports instead of raising (the Makefile exports
    NORMLAB_STRICT_CHECKS=1 for the book's own solutions), and hints start again at the first tier."""
    from normlab.exercises import STRICT_ENV_VAR, reset_attempts

    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)
    reset_attempts()


def pytest_collection_modifyitems(items):
    """Name each notebook in ``$NORMLAB_NOTEBOOK`` just before nbval starts its kernel (which inherits the
    environment), so that ``normlab.book.glue`` can record that notebook's values when ``make test`` asks
    (``$NORMLAB_GLUE_RECORD``; tests/after_notebooks/test_glue_reproducible.py). The notebooks' items live
    outside tests/, where this file's per-item hooks do not reach, hence the wrapped ``setup``."""
    for notebook in {item.parent for item in items if item.path.suffix == ".ipynb"}:
        notebook.setup = _naming_setup(notebook.setup, notebook.path.stem)
    # Longest files first: `make test` hands whole files to its two workers (--dist loadfile) in this order, so
    # a long file collected last would leave one worker alone at the end. The order within a file is kept.
    items.sort(key=lambda item: -LONGEST_FILES.get(item.path.name, 0))


#: Seconds of test time per file, measured in `make test` (_build/test-results.xml, 2026-12-01), for the files
#: over a minute; every other file keeps its place after these.
LONGEST_FILES = {
    "test_browser.py": 222,  # 660 before its checks shared one load per page
    "test_api_reference_browser.py": 223,
    "test_transformers_claims.py": 188,
    "test_pdf.py": 165,
    "test_nbgrader_course.py": 137,
    "test_without_normalization_claims.py": 104,
    "test_smoothness_claims_landscape.py": 82,
    "test_layernorm_claims_batch_size.py": 70,
    "test_batchnorm_claims_batch_size.py": 70,
    "test_grading.py": 68,
    "test_batchnorm_at_scale_claims.py": 66,
    "test_site.py": 62,
}


def _naming_setup(setup, stem):
    def named_setup():
        # Only for the kernel's start: other code this worker runs later (grading a notebook, a test that
        # calls glue) must not write into this notebook's record.
        os.environ["NORMLAB_NOTEBOOK"] = stem
        try:
            setup()
        finally:
            del os.environ["NORMLAB_NOTEBOOK"]
    return named_setup
