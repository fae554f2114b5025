#!/usr/bin/env python3
"""Time the authors' student (BiDeepLabV3p_Dist, EfficientNet-B3) forward on the GPU with PyTorch,
the baseline for the CUDA backend (issue 4): eval, no_grad, 4x512x512 tiles, batch 1/8/32, in
fp32 IEEE (TF32 off), tf32, autocast fp16 and bf16, each NCHW and channels_last; optionally
torch.compile. Median of CUDA-event timings after warm-up. Prints ms/batch and tiles/s.
Weights: dwgen-1 with BN calibrated on SAR-like input (testdata/gen/refmodel.py)."""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "testdata", "gen"))
import refmodel as R  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default="fp32,tf32,fp16,bf16")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--site", default=str(R.DEFAULT_SITE))
    ap.add_argument("--authors", default=str(R.DEFAULT_AUTHORS))
    a = ap.parse_args()
    R.setup_imports(site=a.site or None, authors=a.authors)
    import torch
    S = 512
    model = R.make_model("student", "b3", (2, 4, S, S), 2002, f16_bn=True).cuda().eval()
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("| mode | layout | batch | ms/batch (median) | tiles/s |")
    print("|---|---|---:|---:|---:|")
    for mode in a.modes.split(","):
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        torch.backends.cudnn.allow_tf32 = mode == "tf32"
        dt = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode)
        for layout in ("nchw", "channels_last"):
            m = model.to(memory_format=torch.channels_last if layout == "channels_last" else torch.contiguous_format)
            f = torch.compile(m) if a.compile else m
            for b in [int(x) for x in a.batches.split(",")]:
                x = R.sar_like_input((b, 4, S, S), 1001).cuda()
                if layout == "channels_last":
                    x = x.to(memory_format=torch.channels_last)
                times = []
                with torch.no_grad(), torch.autocast("cuda", dtype=dt or torch.float32, enabled=dt is not None):
                    for i in range(5 + a.runs):
                        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        e0.record()
                        f(x)
                        e1.record()
                        torch.cuda.synchronize()
                        if i >= 5:
                            times.append(e0.elapsed_time(e1))
                ms = statistics.median(times)
                print(f"| {mode} | {layout} | {b} | {ms:.2f} | {1000.0 * b / ms:.1f} |", flush=True)


if __name__ == "__main__":
    main()
