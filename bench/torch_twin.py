#!/usr/bin/python3
"""PyTorch twin of a bayesnas graph: builds a torch.nn.Module by walking the
nodes of our graph JSON (a generic interpreter of the IR, so any graph, later
supernets included, gets a twin) and times a training step (forward,
cross-entropy, backward, SGD step) at a given batch after warm-up.

    /usr/bin/python3 bench/torch_twin.py graph.json [--batch 64] [--steps 10]

Prints one line: "<images/s> images/s (torch <version>, <threads> threads)".
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def out_size(n, k, s, p, d=1):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def pool_size(n, k, s, p, ceil):
    """Pooling output size; ceil mode as PyTorch: rounded up, less a last
    window that would start beyond the input and its left padding."""
    if not ceil:
        return out_size(n, k, s, p)
    o = -(-(n + 2 * p - k) // s) + 1
    if (o - 1) * s >= n + p:
        o -= 1
    return o


class GraphModule(nn.Module):
    def __init__(self, g):
        super().__init__()
        if g.get("format") != "bayesnas.graph/v1":
            raise ValueError("unsupported graph format %r" % g.get("format"))
        self.input = g["input"]["name"]
        self.nodes = g["nodes"]
        self.output = g["output"]
        self.mods = nn.ModuleDict()
        self.archw = nn.ParameterDict()
        shapes = {self.input: list(g["input"]["shape"])}
        for n in self.nodes:
            op, a, key = n["op"], n.get("attrs", {}), self.key(n["name"])
            ins = [shapes[i] for i in n["inputs"]]
            x = ins[0]
            if op == "conv":
                k, s, p, d = a["kernel"], a["stride"], a.get("pad", 0), a["dilation"]
                self.mods[key] = nn.Conv2d(x[0], a["out_channels"], k, s, p, d, a["groups"], bias=a.get("bias", False))
                out = [a["out_channels"], out_size(x[1], k, s, p, d), out_size(x[2], k, s, p, d)]
            elif op == "bn":
                self.mods[key] = nn.BatchNorm2d(x[0], eps=a["eps"], momentum=a["momentum"])
                out = x
            elif op in ("maxpool", "avgpool"):
                k, s, p = a["kernel"], a["stride"], a.get("pad", 0)
                ceil = a.get("ceil_mode", False)
                if op == "maxpool":
                    self.mods[key] = nn.MaxPool2d(k, s, p, ceil_mode=ceil)
                else:
                    self.mods[key] = nn.AvgPool2d(k, s, p, ceil_mode=ceil,
                                                  count_include_pad=a.get("count_include_pad", False))
                out = [x[0], pool_size(x[1], k, s, p, ceil), pool_size(x[2], k, s, p, ceil)]
            elif op == "gap":
                out = [x[0], 1, 1]
            elif op == "linear":
                numel = 1
                for d in x:
                    numel *= d
                self.mods[key] = nn.Linear(numel, a["out_channels"], bias=a.get("bias", False))
                out = [a["out_channels"]]
            elif op == "wsum":
                for i in range(len(ins)):
                    self.archw[key + "_w%d" % i] = nn.Parameter(torch.ones(1))
                out = x
            elif op == "concat":
                out = [sum(s[0] for s in ins), x[1], x[2]]
            elif op == "slice":
                out = [a["end"] - a.get("start", 0), x[1], x[2]]
            elif op == "padch":
                out = [a["out_channels"], x[1], x[2]]
            elif op in ("relu", "add", "shuffle", "dropout", "droppath"):
                out = x
            else:
                raise ValueError("node %s: unknown op %r" % (n["name"], op))
            shapes[n["name"]] = out

    @staticmethod
    def key(name):
        return name.replace(".", "_")  # ModuleDict keys cannot contain dots

    def forward(self, x):
        vals = {self.input: x}
        for n in self.nodes:
            op, a, key = n["op"], n.get("attrs", {}), self.key(n["name"])
            xs = [vals[i] for i in n["inputs"]]
            x = xs[0]
            if op in ("conv", "bn", "maxpool", "avgpool"):
                y = self.mods[key](x)
            elif op == "relu":
                y = F.relu(x)
            elif op == "gap":
                y = F.adaptive_avg_pool2d(x, 1)
            elif op == "linear":
                y = self.mods[key](torch.flatten(x, 1))
            elif op == "add":
                y = xs[0]
                for t in xs[1:]:
                    y = y + t
            elif op == "wsum":
                y = sum(self.archw[key + "_w%d" % i] * t for i, t in enumerate(xs))
            elif op == "concat":
                y = torch.cat(xs, 1)
            elif op == "slice":
                y = x[:, a.get("start", 0):a["end"]]
            elif op == "padch":
                y = F.pad(x, (0, 0, 0, 0, 0, a["out_channels"] - x.shape[1]))
            elif op == "shuffle":
                nb, c, h, w = x.shape
                g = a["groups"]
                y = x.view(nb, g, c // g, h, w).transpose(1, 2).reshape(nb, c, h, w)
            elif op == "dropout":
                y = F.dropout(x, a.get("p", 0.0), self.training)
            elif op == "droppath":
                p = a.get("p", 0.0)
                if self.training and p > 0:
                    keep = torch.rand(x.shape[0], 1, 1, 1) >= p
                    y = x * keep / (1 - p)
                else:
                    y = x
            vals[n["name"]] = y
        return vals[self.output]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("graph")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    with open(args.graph) as f:
        g = json.load(f)
    model = GraphModule(g)
    model.train()
    c, h, w = g["input"]["shape"]
    x = torch.randn(args.batch, c, h, w)
    out = model(x)
    classes = out.shape[1]
    y = torch.randint(0, classes, (args.batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    dt = time.perf_counter() - t0
    nparams = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print("%.1f images/s (torch %s, %d threads, batch %d, %d steps, %d parameters)"
          % (args.batch * args.steps / dt, torch.__version__, torch.get_num_threads(), args.batch, args.steps, nparams))


if __name__ == "__main__":
    sys.exit(main())
