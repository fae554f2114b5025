#!/usr/bin/env python3
"""Time the authors' student (BiDeepLabV3p_Dist, EfficientNet-B3 by default)
forward pass on CPU with PyTorch: eval mode, torch.no_grad(), fp32, one
1x4xSxS tile (S=512 by default), for several intra-op thread counts.

Weights are dwgen-1 with BN calibrated on a SAR-like batch, so activations
have realistic magnitudes (no denormals / infs that would skew timings).
For each thread count: --warmup untimed runs, then the median of --runs timed
runs.  Prints a table of s/tile and tiles/s plus the torch version and CPU.
"""

import argparse
import os
import statistics
import sys
import time

import refmodel as R


def parse_threads(spec, ncpu):
    out = []
    for tok in spec.split(","):
        tok = tok.strip()
        n = ncpu if tok == "all" else int(tok)
        if 1 <= n <= ncpu and n not in out:
            out.append(n)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="tile size S (multiple of 32)")
    ap.add_argument("--arch", choices=R.ARCHS, default="student")
    ap.add_argument("--variant", choices=R.VARIANTS, default="b3")
    ap.add_argument("--threads", default="1,2,all", help="comma list of thread counts; 'all' = all cores")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--calib-batch", type=int, default=0, help="default 2 for S >= 512, else 16")
    ap.add_argument("--site", default=str(R.DEFAULT_SITE), help="folder with smp 0.2.0 etc. ('' = installed)")
    ap.add_argument("--authors", default=str(R.DEFAULT_AUTHORS), help="folder with the authors' model.py")
    args = ap.parse_args()
    if args.size % 32:
        ap.error("--size must be a multiple of 32")
    if not args.calib_batch:
        args.calib_batch = 2 if args.size >= 512 else 16

    _, info = R.setup_imports(site=args.site or None, authors=args.authors)
    import torch

    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = parse_threads(args.threads, ncpu)
    S = args.size
    default_threads = torch.get_num_threads()

    model = R.make_model(args.arch, args.variant, (args.calib_batch, 4, S, S), 2002, f16_bn=True)
    x = R.sar_like_input((1, 4, S, S), 1001)

    rows = []
    for t in threads:
        torch.set_num_threads(t)
        with torch.no_grad():
            for _ in range(args.warmup):
                model(x)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rows.append((t, med, min(times), max(times)))
        print("threads %3d: median %.3f s (min %.3f, max %.3f)" % (t, med, min(times), max(times)),
              file=sys.stderr, flush=True)
    torch.set_num_threads(default_threads)

    print("PyTorch CPU forward, authors' %s %s, 1x4x%dx%d fp32, eval + no_grad" % (args.arch, args.variant, S, S))
    print("torch %s (python %s), smp %s, efficientnet_pytorch %s; mkldnn %s" % (
        info["torch"], info["python"], info["smp"], info["efficientnet_pytorch"],
        torch.backends.mkldnn.is_available()))
    print("CPU: %s; %d cores available; torch default threads %d" % (R.cpu_model_name(), ncpu, default_threads))
    print("warmup %d, median of %d runs" % (args.warmup, args.runs))
    print()
    print("| threads | s/tile (median) | min | max | tiles/s |")
    print("|--------:|----------------:|----:|----:|--------:|")
    for t, med, lo, hi in rows:
        print("| %d | %.3f | %.3f | %.3f | %.3f |" % (t, med, lo, hi, 1.0 / med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
