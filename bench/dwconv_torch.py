"""Times depthwise convolutions in PyTorch (forward + backward, 2 threads).

Run with /usr/bin/python3 (Debian's torch). Arguments: seconds per shape,
then shape names as nn.BenchmarkDepthwiseConv writes them,
k<kernel>s<stride>d<dilation>_c<channels>_<h>x<w> (batch 64, groups =
channels, pad (k-1)*d/2, with bias), so the shapes are listed in one place
only. Prints one line per shape:
    <name> <GFLOP/s>
with the Go benchmark's FLOP count (3 passes x 2 x multiply-adds).
"""
import re
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)

BATCH = 64
NAME = re.compile(r"^k(\d+)s(\d+)d(\d+)_c(\d+)_(\d+)x(\d+)$")


def time_shape(k, s, d, c, h, w, min_seconds):
    conv = torch.nn.Conv2d(c, c, k, stride=s, padding=(k - 1) * d // 2, dilation=d, groups=c, bias=True)
    x = torch.randn(BATCH, c, h, w, requires_grad=True)
    y = conv(x)
    dy = torch.randn_like(y)

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
    macs = BATCH * c * y.shape[2] * y.shape[3] * k * k
    return 3 * 2 * macs * n / elapsed / 1e9


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: dwconv_torch.py SECONDS NAME...")
    min_seconds = float(sys.argv[1])
    for name in sys.argv[2:]:
        m = NAME.match(name)
        if not m:
            sys.exit(f"dwconv_torch.py: shape name {name!r} is not k<K>s<S>d<D>_c<C>_<H>x<W>")
        k, s, d, c, h, w = map(int, m.groups())
        print(f"{name} {time_shape(k, s, d, c, h, w, min_seconds):.2f}", flush=True)


if __name__ == "__main__":
    main()
