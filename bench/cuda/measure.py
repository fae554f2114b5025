#!/usr/bin/env python3
"""measure.py - runs one command and reports its wall time, peak RSS and how busy the GPU was.

    python3 measure.py [--ld LD_LIBRARY_PATH] [--gpu N] -- CMD ARGS...

Prints one line `wall_s=.. peak_rss_mib=.. gpu_busy=.. gpu_samples=.. rc=.. start=HH:MM:SS.mmm end=..` on
stdout (start and end: local wall-clock times, to place the command's CPL_TIMESTAMP log lines in its run).
- peak RSS: the child's ru_maxrss (getrusage(RUSAGE_CHILDREN) after it exits): the largest resident
  set the process had at any time;
- GPU busy: `nvidia-smi --query-gpu=utilization.gpu -lms 100` sampled while the command runs; each
  sample is the percentage of the last sample period during which one or more kernels ran on the
  GPU (NVML's definition), so their mean over the run is the fraction of wall time the GPU was busy.
  Samples from the first 0.5 s (process start, model load) are kept: they count against us.
--ld sets LD_LIBRARY_PATH for the command only (the GDAL bundle's libraries must not reach python3
or nvidia-smi). Python standard library only.
"""
import os
import resource
import subprocess
import sys
import threading
import time


def clock(t):
    """HH:MM:SS.mmm of an epoch time, local time"""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f"{t % 1:.3f}"[1:]


def main():
    argv = sys.argv[1:]
    ld, gpu = None, "0"
    while argv and argv[0] != "--":
        if argv[0] == "--ld":
            ld = argv[1]
            argv = argv[2:]
        elif argv[0] == "--gpu":
            gpu = argv[1]
            argv = argv[2:]
        else:
            sys.exit(f"measure.py: unknown option {argv[0]}")
    cmd = argv[1:]
    if not cmd:
        sys.exit("usage: measure.py [--ld PATH] [--gpu N] -- CMD ARGS...")
    samples = []
    smi = None
    try:
        smi = subprocess.Popen(["nvidia-smi", "-i", gpu, "--query-gpu=utilization.gpu",
                                "--format=csv,noheader,nounits", "-lms", "100"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    except OSError:
        smi = None

    def reader():
        for line in smi.stdout:
            line = line.strip()
            if line.isdigit():
                samples.append((time.monotonic(), int(line)))

    th = None
    if smi:
        th = threading.Thread(target=reader, daemon=True)
        th.start()
    env = dict(os.environ)
    if ld:
        env["LD_LIBRARY_PATH"] = ld + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    e0 = time.time()
    t0 = time.monotonic()
    rc = subprocess.call(cmd, env=env)
    t1 = time.monotonic()
    e1 = time.time()
    if smi:
        smi.terminate()
        smi.wait()
        th.join(timeout=2)
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    run = [u for (t, u) in samples if t0 <= t <= t1 + 0.05]
    busy = sum(run) / (100.0 * len(run)) if run else float("nan")
    print(f"wall_s={t1 - t0:.2f} peak_rss_mib={rss_kib / 1024:.0f} gpu_busy={busy:.3f} "
          f"gpu_samples={len(run)} rc={rc} start={clock(e0)} end={clock(e1)}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
