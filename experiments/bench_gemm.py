"""Benchmark: fp32 against bf16 matrix products at the shapes of the Burda
networks, one thread, and whether torch sees bf16 matrix units on this CPU.

    python experiments/bench_gemm.py

On a CPU with AMX or AVX-512 BF16 the bf16 products are several times
faster; on an AVX2-only CPU torch emulates them, many times slower, and
``train.precision: bf16`` is refused there.
"""

from __future__ import annotations

import statistics
import time

import torch

SHAPES = [(100, 784, 200), (100, 200, 200), (100, 200, 784), (1000, 784, 200), (1000, 200, 784)]


def seconds_per_product(m, k, n, dtype, repeats=50):
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        times.append((time.perf_counter() - start) / repeats)
    return statistics.median(times)


def main():
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"bf16 matrix units: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}, AMX: {torch.cpu._is_amx_tile_supported()}\n")
    print("| m x k x n | fp32 us | bf16 us | bf16 speed-up | fp32 GFLOP/s | bf16 GFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for m, k, n in SHAPES:
        t32 = seconds_per_product(m, k, n, torch.float32)
        t16 = seconds_per_product(m, k, n, torch.bfloat16, repeats=5)
        flops = 2 * m * k * n
        print(f"| {m}x{k}x{n} | {t32 * 1e6:.0f} | {t16 * 1e6:.0f} | {t32 / t16:.2f}x | {flops / t32 / 1e9:.0f} | {flops / t16 / 1e9:.1f} |")


if __name__ == "__main__":
    main()
