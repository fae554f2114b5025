#!/usr/bin/env python3
"""Write the golden fixtures testdata/golden/{teacher,student}_{b3,b4}.safetensors
from the authors' own PyTorch model (model.py of jiankang1991/TGRS_DisOptNet on
smp 0.2.0 + efficientnet_pytorch 0.6.3), then check them.

Each fixture holds:
  * every BatchNorm tensor (weight, bias, running_mean, running_var) as F16 under
    the authors' exact state_dict key (num_batches_tracked is left out);
  * golden.input (F32) and the F32 outputs (golden.logit / golden.logit_sar,
    golden.logit_rgb, golden.fused_logit) computed by PyTorch on CPU;
  * golden.fp64.<logit>: the same logits computed by PyTorch in float64 on CPU
    (stored rounded to F32), the rounding-free reference our tolerance is set against;
  * debugging features golden.feat.* (F32).  To keep the files small a feature
    with more than --feat-cap elements keeps only its FIRST c channels (c is in
    the stored shape): compare your tensor's [:, :c].
Every conv weight/bias is NOT stored: it is dwgen-1 of its key (dwgen.py).

Self-checks (always run): rebuild a fresh model from the fixture + dwgen and
reproduce every stored tensor with max abs diff 0; BN keys in the fixture +
dwgen conv keys == keys_<arch>_<variant>.tsv minus num_batches_tracked.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import refmodel as R

GOLDEN_DIR = R.REPO / "testdata" / "golden"

# name -> (arch, variant, input shape)
FIXTURES = {
    "teacher_b3": ("teacher", "b3", (2, 4, 64, 96)),
    "student_b3": ("student", "b3", (1, 4, 224, 224)),
    "teacher_b4": ("teacher", "b4", (1, 4, 64, 64)),
    "student_b4": ("student", "b4", (1, 4, 64, 64)),
}
# Default max elements per stored feature tensor (keeps the 4 files near 6 MB).
FEAT_CAP = {"b3": 16384, "b4": 4096}
INPUT_SEED = 1001   # torch.Generator seed of golden.input
CALIB_SEED = 2002   # torch.Generator seed of the BN calibration batch
# Calibration batch.  At these small sizes a batch of 2 is NOT enough: the deep
# (1/16) maps hold only 16-24 positions, BN statistics then mostly see the two
# images' global offsets, and a new input lands outside them by ~1.2 sigma per BN.
# Over ~70 BNs in series that compounds (b4 at 64x64, batch 2: max|logit| 2e5 and
# fp32-vs-fp64 error 2.5 % of it, i.e. a useless fixture).  With 16 images the
# logits stay O(1..10) and fp32-vs-fp64 is ~2-3e-5 of max|logit|.  At 512x512
# (device_check.py) batch 2 is fine.
CALIB_BATCH = 16


def calib_shape(in_shape):
    return (CALIB_BATCH,) + tuple(in_shape[1:])


def cap_channels(t, cap):
    """First c channels of an NCHW tensor so that numel <= cap (c >= 1)."""
    n, c, h, w = t.shape
    keep = max(1, min(c, cap // (n * h * w)))
    return t[:, :keep].contiguous()


def build_fixture(name, feat_cap):
    import torch
    arch, variant, in_shape = FIXTURES[name]
    _, info = R.setup_imports()
    model = R.make_model(arch, variant, calib_shape(in_shape), CALIB_SEED, f16_bn=True)
    x = R.sar_like_input(in_shape, INPUT_SEED)
    outs = R.forward_with_features(model, arch, x)
    fp64, fp64_refs = fp64_errors(model, arch, x, outs)

    tensors = {}
    conv, bn, nbt, other = R.param_kinds(model)
    sd = model.state_dict()
    for k in bn:
        tensors[k] = sd[k].detach().half().contiguous()
    tensors["golden.input"] = x
    for k, v in outs.items():
        tensors[k] = cap_channels(v, feat_cap) if k.startswith("golden.feat.") else v
    for k, v in fp64_refs.items():
        tensors["golden.fp64." + k[len("golden."):]] = v.float().contiguous()

    meta = {
        "arch": arch,
        "variant": variant,
        "generator": "testdata/gen/make_goldens.py",
        "dwgen": R.dwgen.DWGEN_VERSION,
        "torch": info["torch"],
        "smp": info["smp"],
        "efficientnet_pytorch": info["efficientnet_pytorch"],
        "python": info["python"],
        "authors_commit": R.AUTHORS_COMMIT,
        "model": "DeepLabV3plus" if arch == "teacher" else "BiDeepLabV3p_Dist",
        "model_specs": "encoder_name=efficientnet-%s in_channels=4 classes=2 upsampling=4 encoder_weights=None" % variant,
        "input_shape": "x".join(map(str, in_shape)),
        "input_seed": str(INPUT_SEED),
        "calib": "batch %d, seed %d, BN train momentum=None one forward, then F16-rounded" % (CALIB_BATCH, CALIB_SEED),
        "input_norm": "raw~Gamma(2,12.5) clipped [0,92]; x=(raw/255-0.5)/0.125",
        "bn_dtype": "F16",
        "feat_cap": str(feat_cap),
        "feat_note": "golden.feat.* keep the first c channels (see shape); compare out[:, :c]",
        "device": "cpu",
        "cpu": R.cpu_model_name(),
        "torch_threads": str(torch.get_num_threads()),
    }
    for k, v in fp64.items():
        meta["fp32_vs_fp64." + k[len("golden."):]] = v
    return model, tensors, meta


def fp64_errors(model, arch, x, outs):
    """PyTorch's own fp32 rounding error: the same model run in float64 on CPU.
    Returns {logit name: "max_abs=..; max_ref=..; rel_to_max=..; argmax_flips=.."}."""
    import copy
    import torch
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        o = m64(x.double())
    ref = {"golden.logit": o[0]} if arch == "teacher" else \
        {"golden.logit_sar": o[0], "golden.logit_rgb": o[1], "golden.fused_logit": o[2]}
    res = {}
    for k, r in ref.items():
        d = float((outs[k].double() - r).abs().max())
        mx = float(r.abs().max())
        flips = int((outs[k].argmax(1) != r.argmax(1)).sum())
        res[k] = "max_abs=%.3g; max_ref=%.4g; rel_to_max=%.3g; argmax_flips=%d" % (d, mx, d / mx, flips)
    return res, ref


def canonicalize_header(path):
    """safetensors writes its JSON header (metadata included) in hash-map order,
    so two identical runs give different bytes.  Rewrite the header with sorted
    keys (same length, same data offsets) so that a rerun is byte-identical."""
    import struct
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
        hdr = json.loads(raw)
        new = json.dumps(hdr, sort_keys=True, separators=(",", ":")).encode()
        if len(new) > n:
            raise RuntimeError("canonical header longer than the original")
        f.seek(8)
        f.write(new + b" " * (n - len(new)))


def check_fixture(path, arch, variant):
    """Rebuild from fixture + dwgen, reproduce outputs exactly, check key coverage."""
    import torch
    from safetensors.torch import load_file
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    fx = load_file(str(path))
    assert meta["arch"] == arch and meta["variant"] == variant and meta["dwgen"] == "dwgen-1"

    model = R.build_model(arch, variant)
    conv, bn, nbt, other = R.param_kinds(model)
    sd = model.state_dict()
    stored = {k for k in fx if not k.startswith("golden.")}

    # --- key coverage -------------------------------------------------------
    tpath = R.SPEC_REF / ("keys_%s_%s.tsv" % (arch, variant))
    table = R.read_key_table(arch, variant) if tpath.is_file() else \
        [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]
    table_keys = [k for k, _, _ in table]
    assert table_keys == list(sd.keys()), "authors' model differs from the reference key table"
    want = {k for k in table_keys if not k.endswith("num_batches_tracked")}
    assert stored.isdisjoint(conv), "conv tensor stored in fixture"
    assert stored | set(conv) == want, "fixture BN keys + conv keys != reference keys"
    # every key absent from the fixture (other than num_batches_tracked) is a conv weight/bias
    missing = set(sd.keys()) - stored - set(nbt)
    assert missing == set(conv) and not other
    for k, shp, dt in table:
        if k in stored:
            assert tuple(fx[k].shape) == shp and fx[k].dtype == torch.float16, k
    coverage = "%d BN (F16) + %d conv (dwgen) = %d keys (+%d num_batches_tracked omitted) == %s" % (
        len(stored), len(conv), len(want), len(nbt),
        tpath.name if tpath.is_file() else "state_dict (%s not found: table check skipped)" % tpath)

    # --- rebuild and reproduce ---------------------------------------------
    with torch.no_grad():
        for k, v in R.dwgen_conv_tensors(model).items():
            sd[k].copy_(torch.from_numpy(v))
        for k in stored:
            sd[k].copy_(fx[k].float())
    model.eval()
    outs = R.forward_with_features(model, arch, fx["golden.input"])
    worst = 0.0
    for k, ref in fx.items():
        if not k.startswith("golden.") or k == "golden.input" or k.startswith("golden.fp64."):
            continue
        got = outs[k][:, :ref.shape[1]] if k.startswith("golden.feat.") else outs[k]
        assert got.shape == ref.shape, (k, got.shape, ref.shape)
        worst = max(worst, float((got - ref).abs().max()))
    return worst, coverage


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(GOLDEN_DIR), help="output folder (default testdata/golden)")
    ap.add_argument("--only", nargs="*", choices=sorted(FIXTURES), help="subset of fixtures")
    ap.add_argument("--feat-cap", type=int, default=0,
                    help="max elements per stored feature tensor, first channels kept "
                         "(default: %s)" % FEAT_CAP)
    ap.add_argument("--site", default=str(R.DEFAULT_SITE),
                    help="folder with smp 0.2.0 etc. put first on sys.path ('' = installed packages)")
    ap.add_argument("--authors", default=str(R.DEFAULT_AUTHORS), help="folder holding the authors' model.py")
    ap.add_argument("--stub", choices=("auto", "always", "never"), default="auto",
                    help="stub smp's unused encoder families (auto: only if the plain import fails)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave)")
    ap.add_argument("--check-only", action="store_true", help="only run the self-checks on existing files")
    args = ap.parse_args()

    R.setup_imports(site=args.site or None, authors=args.authors, stub=args.stub)
    import torch
    from safetensors.torch import save_file
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # nothing should depend on the global RNG; keep it fixed anyway

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(FIXTURES)
    ok = True
    for name in names:
        arch, variant, in_shape = FIXTURES[name]
        path = out / (name + ".safetensors")
        t0 = time.time()
        if not args.check_only:
            model, tensors, meta = build_fixture(name, args.feat_cap or FEAT_CAP[variant])
            save_file(tensors, str(path), metadata=meta)
            canonicalize_header(path)
            stats = {k: "%s %s max|.|=%.4g" % (str(v.dtype).replace("torch.", ""), "x".join(map(str, v.shape)),
                                                float(v.float().abs().max()))
                     for k, v in tensors.items() if k.startswith("golden.")}
            print("%s: wrote %s (%d bytes, %.1fs)" % (name, path, path.stat().st_size, time.time() - t0))
            for k, s in stats.items():
                print("    %-24s %s" % (k, s))
            for k, s in meta.items():
                if k.startswith("fp32_vs_fp64."):
                    print("    %-24s %s" % (k, s))
        worst, coverage = check_fixture(path, arch, variant)
        status = "OK" if worst == 0.0 else "MISMATCH"
        ok &= worst == 0.0
        print("%s: self-check %s (max abs diff %g); keys: %s" % (name, status, worst, coverage))
    total = sum((out / (n + ".safetensors")).stat().st_size for n in names)
    print("total %d bytes (%.2f MiB)" % (total, total / 2**20))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
