#!/usr/bin/env python3
"""ONNX Runtime CPU timing of the exported student B3 (see export_onnx.py), printed in
bench_cpu's format so that run_bench.sh / summarize.py can put them side by side:

  bench_ort.py DIR/student_b3_fused.onnx [--size 512] [--batch 1] [--runs 5] [--threads 1,2,all]
               [--check DIR/check_io.safetensors] [--profile PREFIX]

For each thread count: a fresh InferenceSession (CPUExecutionProvider, graph optimisation
ALL, intra_op_num_threads = t, inter_op 1, sequential), one warm-up run, then the median of
--runs timed runs (seconds per tile = run time / batch), on fresh SAR-like random input
(raw uniform 0..92, then the authors' normalisation; never zeros), as bench_cpu does.
--check: run golden.input through ORT and print max|ort - torch| and that / max|torch|.
--profile: a session with ORT's profiler, two runs; per op type (convs split as bench_cpu -profile
  does) the second run's node times summed (ms) to stdout; the JSON stays in PREFIX_t<threads>_*.json.
Needs only numpy + onnxruntime.
"""

import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import onnxruntime as ort


def read_st(path, names):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        out = {}
        for k in names:
            v = hdr[k]
            a, b = v["data_offsets"]
            f.seek(8 + n + a)
            out[k] = np.frombuffer(f.read(b - a), dtype="<f4").reshape(v["shape"])
    return out


def session(path, threads, profile=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def sar_like(shape, rng):
    raw = rng.integers(0, 9200, size=shape).astype(np.float32) / 100.0
    return ((raw / 255.0 - 0.5) / 0.125).astype(np.float32)


def conv_kind(args):
    """Our profile's categories for an ORT Conv / FusedConv node, from its input shapes
    (x is N,C,H,W or blocked N,C/b,H,W,b; the weight's dims 1 and 2 are Cin/group and kh)."""
    shp = [list(d.values())[0] for d in args.get("input_type_shape", [])]
    if len(shp) < 2 or len(shp[1]) < 4:
        return "conv ?"
    x, w = shp[0], shp[1]
    if len(x) >= 4 and x[2] == 1 and x[3] == 1:
        return "conv on 1x1 maps"
    if w[1] == 1 and w[2] > 1:
        return "conv depthwise"
    return "conv 1x1" if w[2] == 1 else "conv kxk"


def profile_summary(path):
    """{category: (ms, calls)} over the LAST model_run of an ORT profile."""
    with open(path) as f:
        ev = json.load(f)
    runs = [e for e in ev if e.get("name") == "model_run"]
    t0 = runs[-1]["ts"] if runs else 0
    per = {}
    for e in ev:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < t0:
            continue
        op = e.get("args", {}).get("op_name", "?")
        if op in ("Conv", "FusedConv"):
            op = "%s (%s)" % (conv_kind(e["args"]), op)
        t, c = per.get(op, (0.0, 0))
        per[op] = (t + e["dur"] / 1000.0, c + 1)
    return per, (runs[-1]["dur"] / 1000.0 if runs else 0.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", default="1,2,all")
    ap.add_argument("--check")
    ap.add_argument("--profile")
    a = ap.parse_args()
    ncpu = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(int(time.time()))
    x = sar_like((a.batch, 4, a.size, a.size), rng)
    print("# onnxruntime %s, numpy %s, %s, input %dx4x%dx%d, fused output, %d timed runs after 1 warm-up"
          % (ort.__version__, np.__version__, os.path.basename(a.onnx), a.batch, a.size, a.size, a.runs))
    if a.check:
        io = read_st(a.check, ["golden.input", "golden.fused_logit"])
        s = session(a.onnx, ncpu)
        y = s.run(None, {"input": np.ascontiguousarray(io["golden.input"])})[0]
        ref = io["golden.fused_logit"].astype(np.float64)
        d = float(np.abs(y.astype(np.float64) - ref).max())
        mx = float(np.abs(ref).max())
        flips = float((y.argmax(1) != ref.argmax(1)).mean())
        print("# check vs PyTorch fp32: max|ort-torch| %.3e, / max|torch| (%.3f) = %.3e, argmax flips %.2e"
              % (d, mx, d / mx, flips))
        np.save(a.check + ".ort.npy", y)
    print("%8s %12s %12s %10s" % ("threads", "s/tile(med)", "s/tile(min)", "tiles/s"))
    for tok in a.threads.split(","):
        t = ncpu if tok == "all" or tok == "0" else int(tok)
        s = session(a.onnx, t)
        times = []
        for r in range(-1, a.runs):
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            if r >= 0:
                times.append((time.perf_counter() - t0) / a.batch)
        times.sort()
        med = times[len(times) // 2]
        print("%8d %12.4f %12.4f %10.3f" % (t, med, times[0], 1.0 / med), flush=True)
        if a.profile:
            s = session(a.onnx, t, "%s_t%d" % (a.profile, t))
            s.run(None, {"input": x})
            s.run(None, {"input": x})
            pf = s.end_profiling()
            per, run_ms = profile_summary(pf)
            tot = sum(v[0] for v in per.values())
            print("# ORT per-op profile, %d threads, batch %d, second of 2 runs: nodes %.1f ms, whole run %.1f ms"
                  % (t, a.batch, tot, run_ms))
            for op, (ms, c) in sorted(per.items(), key=lambda kv: -kv[1][0]):
                print("#   %-34s %9.1f ms %5.1f %% %5d calls" % (op, ms, 100 * ms / tot, c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
