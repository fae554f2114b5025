#!/usr/bin/env python3
"""plot_curves.py - loss and validation curves from gdal_disopt_train's per-epoch CSV logs (issue 6).

  python3 bench/plot_curves.py OUT.png LABEL=LOG.csv [LABEL=LOG.csv ...]

Left: the training loss (mean over the epoch's steps; for stage 2 its fused-head segmentation term and
its feature-imitation term) against steps, log scale; right: validation pixel Dice
against steps. Also prints ms/step per log (the epochs' seconds, validation included, over their steps).
Needs matplotlib (Debian's python3-matplotlib); for bench/ only, never a dependency of the product.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for arg in sys.argv[2:]:
        label, path = arg.split("=", 1)
        rows = list(csv.DictReader(open(path)))
        steps = [int(r["steps"]) for r in rows]
        if "seg_fused" in rows[0]:  # stage 2: the fused head's segmentation loss and the feature-imitation term
            a.plot(steps, [float(r["seg_fused"]) for r in rows], label=label + " (fused seg. loss)")
            a.plot(steps, [float(r["feat"]) for r in rows], ":", label=label + " (feature loss)")
        else:
            a.plot(steps, [float(r["loss"]) for r in rows], label=label)
        b.plot(steps, [float(r["val_dice"]) for r in rows], label=label)
        secs = sum(float(r["seconds"]) for r in rows)
        print(f"{label}: {steps[-1]} steps, {secs:.1f} s, {1000 * secs / steps[-1]:.1f} ms/step (validation included), "
              f"last loss {float(rows[-1]['loss']):.4g}, last val Dice {float(rows[-1]['val_dice']):.4f}")
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_ylabel("training loss (epoch mean)")
    b.set_xlabel("step")
    b.set_ylabel("validation pixel Dice")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(sys.argv[1], dpi=90)


if __name__ == "__main__":
    main()
