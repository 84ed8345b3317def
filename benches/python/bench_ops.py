"""The building blocks of the bench_rocm workload, one at a time, in PyTorch.

The counterpart of ``cargo run --release --example bench_ops``: the same rows, the same shapes,
the same measurement (median wall-clock milliseconds over ``--iters`` runs after two warm-up
runs, of the forward pass under ``torch.no_grad()`` and of forward + backward with the gradient
taken with respect to the input only, weights frozen):

* 3x3 convolutions (padding 1) at the ``small`` UNet's levels (64 ch 16x16, 128 ch 8x8,
  256 ch 4x4) and the ``small`` VAE's two largest (64 ch 64x64, 32 ch 128x128);
* GroupNorm(32) followed by SiLU, and SiLU alone, at the same shapes;
* nearest 2x upsampling of 64 ch 64x64;
* 8-head self-attention over 256 tokens of head size 8 (``scaled_dot_product_attention``).

Run (threads as in benches/compare.sh)::

    /tmp/bench-venv/bin/python benches/python/bench_ops.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

CONV_SHAPES = [(64, 16), (128, 8), (256, 4), (64, 64), (32, 128)]


def median_ms(n: int, f) -> float:
    f()
    f()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return times[n // 2]


def time_op(n: int, x: torch.Tensor, op) -> tuple[float, float]:
    """Forward without a graph, and forward + backward of sum(op(x)) with respect to x."""

    def forward():
        with torch.no_grad():
            op(x).sum().item()

    def backward():
        leaf = x.clone().requires_grad_(True)
        op(leaf).sum().backward()
        leaf.grad.sum().item()

    return median_ms(n, forward), median_ms(n, backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = args.iters
    print(
        f"bench_ops on torch {torch.__version__} ({torch.get_num_threads()} threads): "
        f"median ms over {n} runs (forward | forward + backward)"
    )
    for c, hw in CONV_SHAPES:
        x = torch.randn(1, c, hw, hw)
        w, b = torch.randn(c, c, 3, 3), torch.randn(c)
        cf, cb = time_op(n, x, lambda t: F.conv2d(t, w, b, padding=1))
        norm = torch.nn.GroupNorm(32, c).requires_grad_(False)
        gf, gb = time_op(n, x, lambda t: F.silu(norm(t)))
        sf, sb = time_op(n, x, F.silu)
        print(
            f"c={c:<3} {hw:>3}x{hw:<3}  conv3x3 {cf:>7.3f} | {cb:>7.3f}   "
            f"groupnorm+silu {gf:>7.3f} | {gb:>7.3f}   silu {sf:>7.3f} | {sb:>7.3f}"
        )
    x = torch.randn(1, 64, 64, 64)
    f, b = time_op(n, x, lambda t: F.interpolate(t, size=(128, 128), mode="nearest"))
    print(f"nearest 2x upsampling, c=64 64x64 -> 128x128  {f:>7.3f} | {b:>7.3f}")
    x = torch.randn(1, 8, 256, 8)
    f, b = time_op(n, x, lambda t: F.scaled_dot_product_attention(t, t, t))
    print(f"self-attention, 8 heads x 256 tokens x 8       {f:>7.3f} | {b:>7.3f}")


if __name__ == "__main__":
    main()
