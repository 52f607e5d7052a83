"""Times the convolutions of nn.BenchmarkConv in PyTorch (forward + backward).

Run with /usr/bin/python3 (Debian's torch). Prints one line per shape:
    <name> <GFLOP/s>
with the same shape names and FLOP count (3 passes x 2 x multiply-adds) as
the Go benchmark, so bench/conv.sh can join the two.
"""
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)

BATCH = 64
# name, channels (in = out), spatial size, kernel, groups
SHAPES = [
    ("dense3x3_c16_32x32", 16, 32, 3, 1),
    ("dense3x3_c32_32x32", 32, 32, 3, 1),
    ("dense3x3_c64_32x32", 64, 32, 3, 1),
    ("dense3x3_c16_16x16", 16, 16, 3, 1),
    ("dense3x3_c32_16x16", 32, 16, 3, 1),
    ("dense3x3_c64_16x16", 64, 16, 3, 1),
    ("dw3x3_c32_32x32", 32, 32, 3, 32),
    ("dw5x5_c32_32x32", 32, 32, 5, 32),
    ("dw3x3_c64_16x16", 64, 16, 3, 64),
    ("dw5x5_c64_16x16", 64, 16, 5, 64),
]


def time_shape(c, hw, k, groups, min_seconds):
    conv = torch.nn.Conv2d(c, c, k, stride=1, padding=k // 2, groups=groups, bias=True)
    x = torch.randn(BATCH, c, hw, hw, requires_grad=True)
    dy = torch.randn(BATCH, c, hw, hw)

    def step():
        x.grad = None
        conv.zero_grad(set_to_none=True)
        conv(x).backward(dy)

    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        step()
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= 5:
            break
    macs = BATCH * c * hw * hw * (c // groups) * k * k
    return 3 * 2 * macs * n / elapsed / 1e9


def main():
    min_seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    for name, c, hw, k, groups in SHAPES:
        print(f"{name} {time_shape(c, hw, k, groups, min_seconds):.2f}", flush=True)


if __name__ == "__main__":
    main()
