"""Rank correlation of measured latencies between devices on the same networks.

Reads the JSON reports of `bayesnas profile check` (one per device, the same
--space/--n/--seed, so the same networks) and prints, per space and over all
networks, Spearman's rank correlation between every two devices' measured
medians: do two runtimes order networks the same way?

    /usr/bin/python3 bench/devicerank.py profiles/checks/*.json
"""
import itertools
import json
import os
import sys


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5


reports = {}
for path in sys.argv[1:]:
    with open(path) as f:
        rep = json.load(f)
    reports[os.path.basename(path).removesuffix(".json")] = {
        (r["space"], r["name"]): r["measured_ms"] for r in rep["networks"]}
print("device pair\tspace\tnetworks\tSpearman")
for a, b in itertools.combinations(sorted(reports), 2):
    common = sorted(set(reports[a]) & set(reports[b]))
    for space in sorted({s for s, _ in common}) + ["all"]:
        keys = [k for k in common if space in ("all", k[0])]
        x = [reports[a][k] for k in keys]
        y = [reports[b][k] for k in keys]
        print(f"{a} vs {b}\t{space}\t{len(keys)}\t{spearman(x, y):.3f}")
