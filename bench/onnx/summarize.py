#!/usr/bin/env python3
"""summarize.py LOG [REF=ort]: tables of run_bench.sh's log. For each contender, batch and thread
count: the median s/tile of every round, the median over rounds and tiles/s; then each of our
contenders against REF (ONNX Runtime): the per-round speed ratio REF_time / ours_time (> 1: ours
faster), its median over rounds, and the ratio of the medians. Standard library only."""

import re
import statistics
import sys


def parse(path):
    data = {}  # (who, batch, threads) -> {round: s/tile}
    cur = None
    for line in open(path):
        m = re.match(r"== round (\d+) batch (\d+) (\S+)", line)
        if m:
            cur = (int(m.group(1)), int(m.group(2)), m.group(3))
            continue
        m = re.match(r"\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$", line)
        if m and cur:
            r, b, who = cur
            data.setdefault((who, b, int(m.group(1))), {})[r] = float(m.group(2))
    return data


def main():
    path = sys.argv[1]
    ref = sys.argv[2] if len(sys.argv) > 2 else "ort"
    d = parse(path)
    whos = sorted({k[0] for k in d}, key=lambda w: (w != ref, w))
    keys = sorted({(k[1], k[2]) for k in d})
    print("\n## s/tile per round (median of the timed runs), median over rounds, tiles/s")
    print("| batch | threads | who | per round | median | tiles/s |")
    print("|---:|---:|---|---|---:|---:|")
    for b, t in keys:
        for w in whos:
            v = d.get((w, b, t))
            if not v:
                continue
            med = statistics.median(v.values())
            print("| %d | %d | %s | %s | %.3f | %.2f |" % (b, t, w, " / ".join("%.3f" % v[r] for r in sorted(v)), med, 1 / med))
    print("\n## speed ratio against %s (%s s/tile / ours s/tile; > 1: ours faster)" % (ref, ref))
    print("| batch | threads | who | per round | median per-round | ratio of medians |")
    print("|---:|---:|---|---|---:|---:|")
    for b, t in keys:
        rv = d.get((ref, b, t))
        if not rv:
            continue
        for w in whos:
            if w == ref or (w, b, t) not in d:
                continue
            v = d[(w, b, t)]
            rs = [rv[r] / v[r] for r in sorted(v) if r in rv]
            if not rs:
                continue
            print("| %d | %d | %s | %s | %.2fx | %.2fx |" % (
                b, t, w, " / ".join("%.2f" % x for x in rs), statistics.median(rs),
                statistics.median(rv.values()) / statistics.median(v.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
