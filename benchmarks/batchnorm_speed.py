"""Time forward + backward of normlab's BatchNorm against torch's built-in, in training mode.

Not a test: timings depend on the machine. For each shape it times torch.nn.BatchNorm1d/2d
and normlab.layers.BatchNorm1d/2d on the same float32 CPU input, interleaving the two
implementations round by round (so drift in the machine's speed hits both alike), after a
warm-up, and reports the median over rounds. The target is normlab ≤ 2x torch.
Run from the repository root:  .venv/bin/python benchmarks/batchnorm_speed.py [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from normlab import layers

TARGET_RATIO = 2.0

#: (label, input shape, torch class, normlab class)
CASES = [
    ("(N=256, D=1024)", (256, 1024), nn.BatchNorm1d, layers.BatchNorm1d),
    ("(N=32, C=64, 32x32)", (32, 64, 32, 32), nn.BatchNorm2d, layers.BatchNorm2d),
]


def forward_backward(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    """One training step of the layer alone: forward, backward to input, weight and bias."""

    def step() -> None:
        x.grad = None
        module.weight.grad = None
        module.bias.grad = None
        module(x).backward(grad)

    return step


def time_once(step: Callable[[], None], number: int) -> float:
    """Mean seconds per call over ``number`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(number):
        step()
    return (time.perf_counter() - start) / number


def benchmark(shape: tuple[int, ...], torch_cls: type, normlab_cls: type, rounds: int, number: int,
              warmup: int) -> dict[str, list[float]]:
    """Ms per forward+backward in each round, for "torch" and "normlab", timed in alternation."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator).requires_grad_()
    grad = torch.randn(shape, generator=generator)
    steps = {
        "torch": forward_backward(torch_cls(shape[1]).train(), x, grad),
        "normlab": forward_backward(normlab_cls(shape[1]).train(), x, grad),
    }
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds):
        order = list(steps) if round_index % 2 == 0 else list(reversed(steps))
        for name in order:
            times[name].append(1e3 * time_once(steps[name], number))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="alternating timing rounds per shape")
    parser.add_argument("--number", type=int, default=20, help="calls per round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per implementation first")
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, float32, CPU, training mode, forward+backward")
    print(f"torch.get_num_threads() = {default_threads}")
    print(f"median of {args.rounds} rounds x {args.number} calls, implementations interleaved")
    print("load average before the run (other processes share these cores): "
          + ", ".join(f"{load:.2f}" for load in os.getloadavg()))
    print()
    header = (f"{'shape':<22} {'threads':>7} {'torch ms':>9} {'normlab ms':>11} {'ratio':>6}"
              f"  target <= {TARGET_RATIO:g}x")
    print(header)
    print("-" * len(header))
    # The default thread count is the number that matters; one thread is shown too because
    # on a small shared machine every parallel region of a multi-op implementation can wait
    # for a busy core, which one thread does not.
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for label, shape, torch_cls, normlab_cls in CASES:
            times = benchmark(shape, torch_cls, normlab_cls, args.rounds, args.number, args.warmup)
            torch_ms, normlab_ms = statistics.median(times["torch"]), statistics.median(times["normlab"])
            ratio = normlab_ms / torch_ms
            verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
            print(f"{label:<22} {threads:>7} {torch_ms:>9.3f} {normlab_ms:>11.3f} {ratio:>6.2f}  {verdict}")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
