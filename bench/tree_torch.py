#!/usr/bin/python3
"""PyTorch twin of the tree-cell supernet (models.PyramidTreeDefault), timed
as BenchmarkTrainStepPyramidTreeDefault times ours: one training step at
batch 64 (forward, cross-entropy, backward, Nesterov SGD momentum step with
weight decay on conv and linear weights only, as nn.SGD decays only Weight
params; BN affine and architecture weights are updated without decay).

The module comes from our graph JSON through bench/torch_twin.py's generic
IR interpreter, not from a hand-written copy of the supernet, so the twin
cannot drift from models/tree.go. Before timing, every node's parameter count
and every conv/bn/pool/linear output shape is checked against `bayesnas
describe --nodes` (Go's own count), and the script fails on any mismatch.

    bayesnas describe --builder pyramid-tree --out g.json --nodes > g.txt
    /usr/bin/python3 bench/tree_torch.py g.json --describe g.txt [--runs 3]

Prints the check result, one line per timed run, and a last line
"median <images/s> images/s (...)" for bench/treestep.sh.
"""
import argparse
import json
import os
import re
import statistics
import sys
import time

# libgomp's default wait policy spins at every parallel-region barrier; on a
# loaded two-core machine the spinning thread starves its partner and a step
# at batch 8 took 14-91 s instead of about 1 s (measured). PASSIVE makes
# waiting threads sleep. It must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_twin import GraphModule  # noqa: E402  (the shared IR interpreter)

# A row of `bayesnas describe --nodes`: node, op, [output shape], params, MACs.
ROW = re.compile(r"^(\S+)\s+(\S+)\s+\[([\d ]*)\]\s+(\d+)\s+(\d+)\s*$")


def read_describe(path):
    """Returns {node: (op, shape, params)} and the total parameter count."""
    nodes, total = {}, None
    with open(path) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                nodes[m.group(1)] = (m.group(2), [int(d) for d in m.group(3).split()], int(m.group(4)))
            m = re.match(r"^parameters: (\d+)", line)
            if m:
                total = int(m.group(1))
    if not nodes or total is None:
        raise ValueError("%s: no node table or parameter total (want `bayesnas describe --nodes` output)" % path)
    return nodes, total


def check_against_go(model, g, desc_path):
    """Compares the twin with Go's per-node counts and shapes; returns the
    list of mismatches (empty when the twin matches)."""
    want, want_total = read_describe(desc_path)
    errs = []
    names = [n["name"] for n in g["nodes"]]
    if set(names) != set(want):
        missing = sorted(set(names) - set(want))[:5]
        extra = sorted(set(want) - set(names))[:5]
        errs.append("node sets differ: in the graph only %s, in describe only %s" % (missing, extra))
    # Output shapes of the modules (conv, bn, pools, linear) by a forward
    # pass at batch 2: these are the ops whose shape torch computes itself.
    got_shape = {}
    hooks = []
    by_key = {GraphModule.key(n): n for n in names}
    for key, mod in model.mods.items():
        hooks.append(mod.register_forward_hook(
            lambda m, i, o, name=by_key[key]: got_shape.__setitem__(name, list(o.shape[1:]))))
    c, h, w = g["input"]["shape"]
    model.eval()  # eval: the check must not move the BN running statistics
    with torch.no_grad():
        out = model(torch.zeros(2, c, h, w))
    model.train()
    for hk in hooks:
        hk.remove()
    got_shape[g["output"]] = list(out.shape[1:])
    total = 0
    for n in g["nodes"]:
        name, key = n["name"], GraphModule.key(n["name"])
        if name not in want:
            continue
        op, shape, params = want[name]
        got = sum(p.numel() for p in model.mods[key].parameters()) if key in model.mods else 0
        total += got
        if op != n["op"]:
            errs.append("%s: op %s in the graph, %s in describe" % (name, n["op"], op))
        if got != params:
            errs.append("%s (%s): %d parameters in torch, %d in Go" % (name, op, got, params))
        if name in got_shape and got_shape[name] != shape:
            errs.append("%s (%s): output %s in torch, %s in Go" % (name, op, got_shape[name], shape))
    if total != want_total:
        errs.append("total: %d parameters in torch, %d in Go" % (total, want_total))
    return errs, total, len(got_shape)


def make_optimizer(model, lr=0.05, momentum=0.9, weight_decay=5e-4):
    decay, rest = [], []
    for mod in model.mods.values():
        for name, p in mod.named_parameters():
            # conv and linear weights are nn.Weight (decayed); biases and BN
            # affine are nn.NoDecay.
            if name == "weight" and not isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                decay.append(p)
            else:
                rest.append(p)
    rest.extend(model.archw.values())  # nn.ArchVar: never decayed
    if len(decay) + len(rest) != len(list(model.parameters())):
        raise RuntimeError("optimizer groups miss some parameters")
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": rest, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("graph")
    ap.add_argument("--describe", help="`bayesnas describe --nodes` output of the same graph; checked before timing")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="steps per timed run")
    ap.add_argument("--runs", type=int, default=3, help="timed runs; the median is reported")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    try:
        with open(args.graph) as f:
            g = json.load(f)
        model = GraphModule(g)
    except (OSError, ValueError, KeyError) as e:
        print("tree_torch: reading graph %s: %s" % (args.graph, e), file=sys.stderr)
        return 2
    if args.describe:
        try:
            errs, total, nshapes = check_against_go(model, g, args.describe)
        except (OSError, ValueError) as e:
            print("tree_torch: checking against %s: %s" % (args.describe, e), file=sys.stderr)
            return 2
        if errs:
            for e in errs[:20]:
                print("mismatch:", e, file=sys.stderr)
            print("tree_torch: the twin does not match %s (%d mismatches)" % (args.describe, len(errs)), file=sys.stderr)
            return 1
        print("check: %d nodes, %d parameters and %d output shapes match Go's describe"
              % (len(g["nodes"]), total, nshapes))
    c, h, w = g["input"]["shape"]
    x = torch.randn(args.batch, c, h, w)
    model.eval()
    with torch.no_grad():
        classes = model(x[:2]).shape[1]
    model.train()
    y = torch.randint(0, classes, (args.batch,))
    opt = make_optimizer(model)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    rates = []
    for r in range(args.runs):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        dt = time.perf_counter() - t0
        rates.append(args.batch * args.steps / dt)
        print("run %d: %.1f images/s (%.3f s/step)" % (r + 1, rates[-1], dt / args.steps))
    narch = sum(p.numel() for p in model.archw.values())
    print("median %.1f images/s (torch %s, %d threads, OMP_WAIT_POLICY=%s, batch %d, %d runs of %d steps, "
          "%d classes, %d architecture weights)"
          % (statistics.median(rates), torch.__version__, torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"],
             args.batch, args.runs, args.steps, classes, narch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
