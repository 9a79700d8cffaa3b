"""Why normlab's normalization layers compile their backward: the floor of the closed form in torch ops.

Not a test: timings depend on the machine. Issue 13 asks normlab's layers for at most 1.3x torch's time on
large inputs, with the backward normlab's own closed form (no normalization backward kernel of torch's).
This script times, on the benchmark's large shapes, float32, one thread:

- torch's fused kernels alone: ``native_layer_norm`` / ``native_group_norm`` forward and their backward;
- the floor of the closed form in general torch ops: the full-size passes those forms need and cannot
  merge, back to back, without any of the small per-row or per-channel ops, without autograd. No
  implementation in torch ops can be faster, and that floor is about 1.5-1.7x torch here;
- what normlab does on the CPU: torch's fused forward, then the closed form as one loop that numba
  compiles (``normlab.layers._kernels``), which makes two passes over memory, as torch's backward does.

LayerNorm (x̂ form, the torch-ops path of layers/layernorm.py): the forward is the fused kernel with γ = 1
(x̂) and one addcmul (y); the backward P = dy·x̂, four matrix-vector products (Σ dy·x̂ and Σ dy over the
rows, Σ ĝ and Σ ĝ·x̂ over the columns) and three passes for dx. GroupNorm (x form): the fused forward,
then P = dy·x, two sums over the spatial positions and three passes for dx.

Run from the repository root:  .venv/bin/python benchmarks/normalization_floor.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from normlab.layers import _kernels


Step = Callable[[], None]


def median_us(step: Callable[[], object], rounds: int = 15, round_s: float = 0.02) -> float:
    """Median µs per call (this thread's CPU time) over ``rounds`` rounds of about ``round_s`` seconds."""
    for _ in range(3):
        step()
    start = time.thread_time()
    step()
    number = max(1, round(round_s / max(time.thread_time() - start, 1e-7)))
    times = []
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(number):
            step()
        times.append(1e6 * (time.thread_time() - start) / number)
    return statistics.median(times)


def layer_norm_steps(generator: torch.Generator) -> tuple[Step, Step, Step]:
    """torch's fused LayerNorm forward + backward, the floor of the x̂ form, and normlab's compiled
    backward after torch's forward, at 512×1024."""
    rows, n = 512, 1024
    x, dy = torch.randn(rows, n, generator=generator), torch.randn(rows, n, generator=generator)
    weight, bias, ones = torch.randn(n, generator=generator), torch.randn(n, generator=generator), torch.ones(n)
    _, mean, invstd = torch.native_layer_norm(x, (n,), weight, bias, 1e-5)
    per_row, ones_rows = torch.randn(rows, 1, generator=generator), torch.ones(rows)

    def fused() -> None:
        torch.native_layer_norm(x, (n,), weight, bias, 1e-5)
        torch.ops.aten.native_layer_norm_backward(dy, x, (n,), mean, invstd, weight, bias, [True, True, True])

    def floor() -> None:
        xhat, _, _ = torch.native_layer_norm(x, (n,), ones, None, 1e-5)
        torch.addcmul(bias, xhat, weight)  # y
        product = torch.mul(dy, xhat)
        torch.mv(product.t(), ones_rows), torch.mv(dy.t(), ones_rows)  # dγ, dβ
        torch.mv(dy, weight), torch.mv(product, weight)  # Σ ĝ, Σ ĝ·x̂ per row
        torch.addcmul(per_row, dy, weight, out=product).addcmul_(xhat, per_row).mul_(per_row)  # dx

    def compiled() -> None:
        _, mean, invstd = torch.native_layer_norm(x, (n,), weight, bias, 1e-5)
        _kernels.layer_norm_backward(dy, x, mean, invstd, weight, 1)

    return fused, floor, compiled


def group_norm_steps(generator: torch.Generator) -> tuple[Step, Step, Step]:
    """torch's fused GroupNorm forward + backward, the floor of the x form, and normlab's compiled
    backward after torch's forward, at 32×256×16×16, 32 groups."""
    batch, channels, groups, side = 32, 256, 32, 16
    spatial, per_group = side * side, channels // groups
    shape = (batch, channels, side, side)
    x, dy = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    weight, bias = torch.randn(channels, generator=generator), torch.randn(channels, generator=generator)
    _, mean, invstd = torch.native_group_norm(x, weight, bias, batch, channels, spatial, groups, 1e-5)
    per_group_vector = torch.randn(batch, groups, 1, 1, generator=generator)
    per_channel_vector = torch.randn(batch, groups, per_group, 1, generator=generator)

    def fused() -> None:
        torch.native_group_norm(x, weight, bias, batch, channels, spatial, groups, 1e-5)
        torch.ops.aten.native_group_norm_backward(dy, x, mean, invstd, weight, batch, channels, spatial, groups,
                                                  [True, True, True])

    def floor() -> None:
        torch.native_group_norm(x, weight, bias, batch, channels, spatial, groups, 1e-5)
        xs, dys = x.view(batch, groups, per_group, spatial), dy.view(batch, groups, per_group, spatial)
        product = torch.mul(dys, xs)
        product.sum(-1), dys.sum(-1)  # Σ dy·x, Σ dy per channel
        torch.mul(dys, per_channel_vector, out=product).addcmul_(xs, per_group_vector).sub_(per_group_vector)

    def compiled() -> None:
        _, mean, invstd = torch.native_group_norm(x, weight, bias, batch, channels, spatial, groups, 1e-5)
        _kernels.group_norm_backward(dy, x, mean, invstd, weight)

    return fused, floor, compiled


def main() -> None:
    torch.set_num_threads(1)
    block = torch.empty(30 * 2**20 // 4)  # as benchmarks/batchnorm_speed.py: the heap keeps its pages
    del block
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, float32, CPU, one thread; µs per forward + backward, median of 15 rounds")
    print(f"{'layer':<10} {'shape':<14} {'torch fused':>11} {'floor':>8} {'floor/torch':>11} {'normlab':>8}"
          f" {'normlab/torch':>13}")
    for name, shape, steps in [("LayerNorm", "512x1024", layer_norm_steps(generator)),
                               ("GroupNorm", "32x256x16x16", group_norm_steps(generator))]:
        fused_us, floor_us, compiled_us = (median_us(step) for step in steps)
        print(f"{name:<10} {shape:<14} {fused_us:>11.0f} {floor_us:>8.0f} {floor_us / fused_us:>11.2f}"
              f" {compiled_us:>8.0f} {compiled_us / fused_us:>13.2f}")


if __name__ == "__main__":
    main()
