# normbook: two commands. Each first installs the system packages it needs when missing (apt-get, as root or
# with passwordless sudo; tools/system-packages): Python's venv and npm, and Chromium for the tests and the PDF.
#   make book   set up .venv if missing, then build the site into _build/html
#   make test   set up .venv if missing, build the book (-W), then run every test
#   make student      the student edition: notebooks with stubs, and a site without solutions
#   make grade SUBMISSIONS=dir   grade submitted notebooks (prints a table, writes grades.csv)
#   make pdf          the print edition: normbook.pdf (with solutions) and normbook-student.pdf (without)
#   make nbgrader     the exercises as an nbgrader course in _build/nbgrader
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NORMLAB_SOURCES := $(shell find src/normlab -name '*.py')

# The book's reference solutions must pass their checkers: a failing check raises.
export NORMLAB_STRICT_CHECKS := 1
# One BLAS thread per process: the build and pytest-xdist already use both cores.
export OMP_NUM_THREADS ?= 1

.PHONY: help env book student grade nbgrader nbgrader-env pdf test clean system-python system-book system-browser

help:
	@echo "make book   build the site into _build/html (creates .venv if missing)"
	@echo "make test   build the book with warnings as errors, then run every test"
	@echo "make student  student notebooks and site in _build/student (builds the book first)"
	@echo "make grade SUBMISSIONS=folder  grade submitted notebooks into grades.csv"
	@echo "make pdf    _build/pdf/normbook.pdf (with solutions) and normbook-student.pdf (printed by Chromium)"
	@echo "make nbgrader  the coding exercises as an nbgrader course in _build/nbgrader"
	@echo "make clean  remove _build"

env: $(INSTALLED)

# System packages, installed with apt-get when missing (as root or with passwordless sudo; otherwise
# tools/system-packages stops with a message naming them). .venv needs Python's venv module; the book
# also needs npm (tools/vendor-js); the tests and the PDF also need Debian's Chromium.
system-python:
	@PYTHON=$(PYTHON) tools/system-packages python3-venv
system-book: system-python
	@tools/system-packages npm
system-browser: system-book
	@tools/system-packages chromium

$(INSTALLED): requirements.txt pyproject.toml | system-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt 2>&1 \
	  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	touch $@

# Notebook outputs are cached by the code in the notebook only; when normlab changes,
# the cache is stale: throw it away, and Sphinx's record of what it has read, so the
# build re-reads and re-executes every notebook.
_build/.normlab-sources: $(NORMLAB_SOURCES)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/notebook-times.json
	mkdir -p _build
	touch $@

# The book's Sphinx extensions (_ext/) shape every page (the API reference, its links): when one changes,
# Sphinx's record of what it has read is stale, but the notebooks' outputs are not.
_build/.ext-sources: $(wildcard _ext/*.py)
	rm -rf _build/.doctrees
	mkdir -p _build
	touch $@

# MathJax and the widget scripts, served by the site itself so that it works offline.
_build/vendor/.stamp: tools/vendor-js tools/widgets-config.js | system-book
	tools/vendor-js _build/vendor
	touch $@

# The build executes notebooks one at a time; tools/execute-notebooks first fills the same cache two at a
# time (one per core) and records each notebook's time and memory for benchmarks/notebooks.py.
book: $(INSTALLED) _build/.normlab-sources _build/.ext-sources _build/vendor/.stamp
	$(BIN)/python tools/execute-notebooks
	$(BIN)/jupyter-book build -W -n --keep-going .

# The student edition reuses the book's execution cache: nothing is executed twice.
student: book
	$(BIN)/python -m normlab.student_edition --out _build/student

# The print edition: the book with its solutions, and the student site (no solution text), each as one PDF.
pdf: system-browser book student
	$(BIN)/python tools/book-pdf --site _build/html --out _build/pdf/normbook.pdf --edition instructor
	$(BIN)/python tools/book-pdf --site _build/student/html --out _build/pdf/normbook-student.pdf --edition student

SUBMISSIONS ?= submissions
grade: $(INSTALLED)
	env -u NORMLAB_STRICT_CHECKS $(BIN)/python -m normlab.grading $(SUBMISSIONS) --csv grades.csv

# nbgrader lives in its own virtual environment: it pulls JupyterLab 4 and newer Jupyter packages
# than the book's pins. Its kernels import the book's science stack (torch, numpy, normlab) from
# .venv through a .pth file placed after its own packages, so nothing is installed twice and
# nbgrader's versions win wherever both have a package. ipykernel is pinned as in requirements.txt.
NBGRADER_VENV := .venv-nbgrader
NBGRADER_INSTALLED := $(NBGRADER_VENV)/.installed
NBGRADER_VERSION := 0.9.6
nbgrader-env: $(NBGRADER_INSTALLED)
$(NBGRADER_INSTALLED): $(INSTALLED)
	$(PYTHON) -m venv $(NBGRADER_VENV)
	$(NBGRADER_VENV)/bin/python -m pip install --quiet nbgrader==$(NBGRADER_VERSION) ipykernel==6.30.1 2>&1 \
	  | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
	book=$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	own=$$($(NBGRADER_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"); \
	echo "import site; site.addsitedir('$$book')" > "$$own/normbook-science.pth"
	$(NBGRADER_VENV)/bin/python -c "import nbgrader, normlab, torch"
	touch $@

nbgrader: $(INSTALLED)
	$(BIN)/python -m normlab.nbgrader_course --out _build/nbgrader

# nbval executes every notebook a second time and records what it glues (normlab.book.record_glue);
# tests/after_notebooks then compares those values with the build's. _build/test-results.xml keeps every
# test's time (JUnit XML), for finding what makes the run long.
GLUE_RECORD := _build/glue-record
test: system-browser book student nbgrader-env
	rm -rf $(GLUE_RECORD)
	NORMLAB_GLUE_RECORD=$(CURDIR)/$(GLUE_RECORD) $(BIN)/python -m pytest -n 2 --dist loadfile --durations=20 \
	  --junitxml=_build/test-results.xml \
	  --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
	  tests chapters
	NORMLAB_GLUE_RECORD=$(CURDIR)/$(GLUE_RECORD) $(BIN)/python -m pytest -q -p no:xdist tests/after_notebooks

clean:
	rm -rf _build
