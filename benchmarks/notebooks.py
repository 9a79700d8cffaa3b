"""Report each notebook's wall time and the kernel's peak memory.

Not a test: timings depend on the machine. It prints one row per notebook (with its
slowest cell) and the total, and marks rows over the book's targets (60 s and 1.5 GB per
notebook on 2 cores). A notebook that fails or times out gets a row saying so; the
tests, not this script, decide whether the book is correct, so it always exits 0.

By default it prints what the last build measured: ``tools/execute-notebooks`` (run by
``make book``) executes the notebooks two at a time, one per core, and records each one in
``_build/notebook-times.json``; CI prints that table rather than executing every notebook again.
``--run`` executes the given notebooks (default: all) afresh, one after another, and measures them.
Run from the repository root:  .venv/bin/python benchmarks/notebooks.py [--run] [notebook ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 60.0
TARGET_MIB = 1.5 * 1024


def peak_rss_mib(pid: int) -> float:
    """The high-water mark of resident memory (VmHWM) of a live Linux process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def run_notebook(path: Path, timeout: int) -> tuple[float, float, int, float, str]:
    """Execute one notebook in a fresh kernel, in its own folder.

    Returns (seconds, peak MiB, index of the slowest code cell, its seconds, error or "").
    """
    nb = nbformat.read(path, as_version=4)
    peak, slowest, slowest_seconds = 0.0, -1, 0.0
    last = time.perf_counter()

    def measure(cell, cell_index, **_) -> None:
        nonlocal peak, slowest, slowest_seconds, last
        now = time.perf_counter()
        if now - last > slowest_seconds:
            slowest, slowest_seconds = cell_index, now - last
        last = now
        peak = max(peak, peak_rss_mib(client.km.provisioner.pid))

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_executed=measure)
    start = time.perf_counter()
    try:
        client.execute()
        error = ""
    except Exception as exc:  # report, do not crash: the tests decide correctness
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:80] if str(exc).strip() else ''}"
    return time.perf_counter() - start, peak, slowest, slowest_seconds, error


RECORD = ROOT / "_build/notebook-times.json"


def recorded_rows(notebooks: list[Path]) -> list[tuple[str, float, float, str, str]]:
    """The rows of the table from the last build's record (``tools/execute-notebooks``)."""
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    rows = []
    for path in notebooks:
        entry = record.get(path.name)
        if entry is None:
            rows.append((path.name, float("nan"), float("nan"), "", "not in the record: run with --run"))
        else:
            rows.append((path.name, entry["seconds"], entry["peak_mib"],
                         f"#{entry['slowest_cell']} {entry['slowest_seconds']:.1f}s", ""))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to report (default: every chapters/*.ipynb)")
    parser.add_argument("--run", action="store_true",
                        help="execute the notebooks afresh, one after another, instead of reading the build's record")
    parser.add_argument("--timeout", type=int, default=120, help="per-cell timeout in seconds (with --run)")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "chapters").glob("*.ipynb"))
    # Same settings as `make book`: strict checks, and one BLAS thread per process (on
    # 2 cores, small models run several times faster with one thread than with two).
    os.environ.setdefault("NORMLAB_STRICT_CHECKS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    if args.run:
        rows = []
        for path in notebooks:
            seconds, mib, cell, cell_seconds, error = run_notebook(path, args.timeout)
            rows.append((path.name, seconds, mib, f"#{cell} {cell_seconds:.1f}s", error))
        how = "executed one after another by this script"
    else:
        rows = recorded_rows(notebooks)
        how = f"as the last build executed them, two at a time ({RECORD.relative_to(ROOT)})"

    width = max([len("notebook")] + [len(r[0]) for r in rows])
    print(f"\nNotebooks, {how}")
    print(f"{'notebook':<{width}}  {'wall s':>7}  {'peak MiB':>8}  {'slowest cell':>13}  status")
    total = 0.0
    for name, seconds, mib, cell, error in rows:
        over = [label for label, bad in (("time", seconds > TARGET_SECONDS),
                                         ("memory", mib > TARGET_MIB)) if bad]
        status = error or ("over target: " + ", ".join(over) if over else "ok")
        total += 0.0 if seconds != seconds else seconds  # NaN: not measured
        print(f"{name:<{width}}  {seconds:7.1f}  {mib:8.0f}  {cell:>13}  {status}")
    print(f"{'total':<{width}}  {total:7.1f}")
    print(f"(targets per notebook: {TARGET_SECONDS:.0f} s, {TARGET_MIB:.0f} MiB; 2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
