#!/usr/bin/env python3
"""Full-size reference files for the C/CUDA implementation, to be made on the
device machine (torch 2.11, python 3.12) or anywhere else.

For each of teacher_b3, student_b3, teacher_b4, student_b4 at 1x4xSxS (S=512
by default) it builds the authors' model with dwgen-1 conv weights and BN
calibrated on a SAR-like batch (then F16-rounded, as in make_goldens.py) and
writes into --out:

  <name>.safetensors     the FULL state_dict in F32 under the authors' keys,
                         num_batches_tracked dropped; __metadata__ arch, variant, ...
  <name>_io.safetensors  golden.input (F32) and the logits computed by PyTorch
                         in fp32 on CPU: golden.logit (teacher) or
                         golden.logit_sar / golden.logit_rgb / golden.fused_logit
                         (student); with --cuda also cuda.<same names> computed on
                         the GPU with TF32 off; with --fp64 also fp64.<names>
                         (CPU float64, stored as F64) as a rounding-free reference.
  report.json            the CPU-vs-CUDA (and vs fp64) differences.

smp 0.2.0 / efficientnet_pytorch 0.6.3 are imported from --site (default
<repo>/.ref/site, carried to the device with the working tree); if an unused
smp encoder family fails to import there, refmodel.py stubs it (see README).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import refmodel as R

NAMES = {
    "teacher_b3": ("teacher", "b3"),
    "student_b3": ("student", "b3"),
    "teacher_b4": ("teacher", "b4"),
    "student_b4": ("student", "b4"),
}
INPUT_SEED = 1001
CALIB_SEED = 2002


def logits_of(arch, out):
    """Named logits from the authors' forward output tuple."""
    if arch == "teacher":
        return {"golden.logit": out[0]}
    return {"golden.logit_sar": out[0], "golden.logit_rgb": out[1], "golden.fused_logit": out[2]}


def compare(ref, got):
    """max abs diff, that / max|ref|, fraction of argmax (class) flips."""
    ref = ref.double().cpu()
    got = got.double().cpu()
    mad = float((ref - got).abs().max())
    mx = float(ref.abs().max())
    flips = float((ref.argmax(1) != got.argmax(1)).double().mean())
    return {"max_abs": mad, "max_ref": mx, "rel_to_max": mad / mx if mx else float("nan"), "argmax_flip_frac": flips}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--size", type=int, default=512, help="tile size S (multiple of 32)")
    ap.add_argument("--calib-batch", type=int, default=0,
                    help="BN calibration batch at SxS (default 2 for S >= 512, else 16: with tiny "
                         "maps a batch of 2 gives BN stats that blow up on a new input; see make_goldens.py)")
    ap.add_argument("--only", nargs="*", choices=sorted(NAMES), help="subset")
    ap.add_argument("--cuda", choices=("auto", "yes", "no"), default="auto",
                    help="also run on CUDA (fp32, TF32 off) and compare")
    ap.add_argument("--fp64", action="store_true", help="also compute a CPU float64 reference")
    ap.add_argument("--modes", action="store_true", help="also PyTorch TF32 and fp16/bf16 autocast on the GPU vs fp32")
    ap.add_argument("--no-model", action="store_true", help="skip writing the full F32 model files")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    ap.add_argument("--site", default=str(R.DEFAULT_SITE), help="folder with smp 0.2.0 etc. ('' = installed)")
    ap.add_argument("--authors", default=str(R.DEFAULT_AUTHORS), help="folder with the authors' model.py")
    ap.add_argument("--stub", choices=("auto", "always", "never"), default="auto",
                    help="stub smp's unused encoder families (auto: only if the plain import fails)")
    args = ap.parse_args()
    if args.size % 32:
        ap.error("--size must be a multiple of 32")
    if not args.calib_batch:
        args.calib_batch = 2 if args.size >= 512 else 16

    _, info = R.setup_imports(site=args.site or None, authors=args.authors, stub=args.stub)
    import torch
    from safetensors.torch import save_file
    if args.threads:
        torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() if args.cuda == "auto" else args.cuda == "yes"
    if use_cuda:
        # IEEE fp32 on the GPU: no TF32 in matmul or cuDNN convolutions.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if hasattr(torch, "set_float32_matmul_precision"):
            torch.set_float32_matmul_precision("highest")

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    S = args.size
    report = {"info": info, "size": S, "calib_batch": args.calib_batch, "cpu": R.cpu_model_name(),
              "threads": torch.get_num_threads(), "cuda": None, "results": {}}
    if use_cuda:
        report["cuda"] = torch.cuda.get_device_name(0)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}), flush=True)

    for name in args.only or list(NAMES):
        arch, variant = NAMES[name]
        t0 = time.time()
        model = R.make_model(arch, variant, (args.calib_batch, 4, S, S), CALIB_SEED, f16_bn=True)
        t_build = time.time() - t0
        x = R.sar_like_input((1, 4, S, S), INPUT_SEED)

        t1 = time.time()
        with torch.no_grad():
            cpu = {k: v.float().contiguous() for k, v in logits_of(arch, model(x)).items()}
        t_cpu = time.time() - t1

        meta = {"arch": arch, "variant": variant, "dwgen": R.dwgen.DWGEN_VERSION,
                "generator": "testdata/gen/device_check.py", "torch": info["torch"], "smp": info["smp"],
                "efficientnet_pytorch": info["efficientnet_pytorch"], "authors_commit": R.AUTHORS_COMMIT,
                "calib": "batch %d at %dx%d, seed %d, then F16-rounded BN" % (args.calib_batch, S, S, CALIB_SEED)}
        if not args.no_model:
            _, _, nbt, _ = R.param_kinds(model)
            sd = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k not in set(nbt)}
            save_file(sd, str(out_dir / (name + ".safetensors")), metadata=meta)

        io = {"golden.input": x}
        io.update(cpu)
        res = {"t_build_calib_s": round(t_build, 2), "t_cpu_forward_s": round(t_cpu, 2)}
        if use_cuda:
            mc = model.cuda()
            with torch.no_grad():
                o = logits_of(arch, mc(x.cuda()))   # warm-up / also the result
                torch.cuda.synchronize()
                t2 = time.time()
                o = logits_of(arch, mc(x.cuda()))
                torch.cuda.synchronize()
            res["t_cuda_forward_s"] = round(time.time() - t2, 4)
            for k, v in o.items():
                io["cuda." + k[len("golden."):]] = v.float().cpu().contiguous()
                res["cpu_vs_cuda." + k] = compare(cpu[k], v)
            # PyTorch's own reduced-precision modes on the same measure (the reference for ours)
            if args.modes:
                for mode in ("tf32", "fp16", "bf16"):
                    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
                    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16 if mode == "fp16" else torch.bfloat16,
                                                         enabled=mode != "tf32"):
                        om = logits_of(arch, mc(x.cuda()))
                    for k, v in om.items():
                        r = compare(cpu[k], v.float())
                        res["cpu_vs_torch_" + mode + "." + k] = r
                        print(f"{name} {k[len('golden.'):]:12s} torch {mode} (autocast) vs torch fp32: "
                              f"{r['rel_to_max']:.3g} of max|logit|, argmax flips {r['argmax_flip_frac']:.2g}", flush=True)
                torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            model = mc.cpu()
        if args.fp64:
            m64 = model.double()
            with torch.no_grad():
                o = logits_of(arch, m64(x.double()))
            for k, v in o.items():
                io["fp64." + k[len("golden."):]] = v.contiguous()
                res["cpu_vs_fp64." + k] = compare(v, cpu[k])
                if use_cuda:
                    res["cuda_vs_fp64." + k] = compare(v, io["cuda." + k[len("golden."):]])
            model = m64.float()
        iometa = dict(meta, input_seed=str(INPUT_SEED),
                      input_norm="raw~Gamma(2,12.5) clipped [0,92]; x=(raw/255-0.5)/0.125",
                      logits_device="cpu fp32" + (", cuda fp32 TF32 off" if use_cuda else ""))
        save_file(io, str(out_dir / (name + "_io.safetensors")), metadata=iometa)
        res["t_total_s"] = round(time.time() - t0, 2)
        report["results"][name] = res
        print(name, json.dumps(res), flush=True)

    with open(out_dir / "report.json", "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
