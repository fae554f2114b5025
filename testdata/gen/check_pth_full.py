"""Full-architecture check of the PyTorch checkpoint reader (local; needs torch and .ref/, see make_ref.sh).

For the demo model (student B3, build-*/testmodel_b3.safetensors) and teacher B3/B4 and student B4 with
torch's default initialisation (seed 0), this writes checkpoints with torch.save in the authors' wrapping
({'state_dict': {'module.' + key: ...}, 'epoch', 'best_metric'}, F32) and as a plain fp16 state
dict, then compares, on the fixed input of `gdal_disopt_model verify` (1 x 4 x N x N):
  - our forward from the .pth  vs  our forward from its conversion to safetensors (bit-exact);
  - our forward from the .pth  vs  the authors' PyTorch model with the same weights (relative to
    max |logit|; the fp16 file is compared with PyTorch run on the fp16 values upcast to float32).
usage: /usr/bin/python3 testdata/gen/check_pth_full.py BUILD_DIR [OUTDIR] [SIZE] [demo]
"""
import collections
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refmodel  # noqa: E402

BUILD = Path(sys.argv[1])
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/disopt_pth_check")
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 64
DEMO_ONLY = len(sys.argv) > 4 and sys.argv[4] == "demo"  # only the demo model (quicker at 512)
TOOL = BUILD / "tools" / "gdal_disopt_model"


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    types = {"F32": np.float32, "F16": np.float16, "BF16": None, "I64": np.int64, "F64": np.float64}
    sd = collections.OrderedDict()
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=types[v["dtype"]]).reshape(v["shape"])
        sd[k] = torch.from_numpy(arr.astype(np.float32) if v["dtype"] != "I64" else arr.copy())
    return sd


def fixed_input(c, size):
    i = np.arange(c * size * size, dtype=np.uint64)
    k = ((i * 2654435761) & 0xFFFFFFFF) % 2001
    x = ((k.astype(np.float64) * 0.025 / 255.0 - 0.5) / 0.125).astype(np.float32)  # as `verify`
    return torch.from_numpy(x.reshape(1, c, size, size))


def torch_logits(model, arch, x):
    with torch.no_grad():
        out = model(x)
    return (out[0] if arch == "teacher" else out[2]).float().numpy().ravel()


def ours(path, tag):
    dump = OUT / (tag + ".f32")
    r = subprocess.run([str(TOOL), "verify", str(path), "--size", str(SIZE), "--dump", str(dump)],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("verify %s failed: %s %s" % (path, r.stdout, r.stderr))
    return np.fromfile(dump, dtype=np.float32), r.stdout.strip().splitlines()[-1]


def check(name, arch, variant, sd_model):
    model = refmodel.build_model(arch, variant)
    missing, unexpected = model.load_state_dict(sd_model, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    sd = model.state_dict()  # with the num_batches_tracked counters (LongStorage)
    x = fixed_input(4, SIZE)
    ref = torch_logits(model, arch, x)
    with torch.no_grad():  # float64 reference, to put the float32 differences in scale
        out = model.double()(x.double())
    ref64 = (out[0] if arch == "teacher" else out[2]).numpy().ravel()
    model.float()
    # the authors' wrapping, DataParallel keys, float32
    ck = OUT / (name + ".pth.tar")
    torch.save({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
                "epoch": 99, "best_metric": 0.75}, ck)
    st = OUT / (name + ".safetensors")
    subprocess.run([str(TOOL), "convert", str(ck), str(st)], check=True, capture_output=True)
    a, ca = ours(ck, name + "_pth")
    b, cb = ours(st, name + "_st")
    scale = float(np.abs(ref).max())
    print("%s (%s-%s, %d x %d): pth vs converted safetensors: %s (%s)" %
          (name, arch, variant, SIZE, SIZE, "bit-exact" if a.tobytes() == b.tobytes() else "DIFFER", ca))
    print("  pth vs PyTorch %s: max |diff| %.3g, relative to max|logit| %.3g: %.3g" %
          (torch.__version__, np.abs(a - ref).max(), scale, np.abs(a - ref).max() / scale))
    e_ours, e_torch = np.abs(a - ref64).max() / scale, np.abs(ref - ref64).max() / scale
    print("  vs PyTorch float64: ours %.3g, PyTorch float32 %.3g" % (e_ours, e_torch))
    # the reader must be exact; the engine must match PyTorch within 1e-5, or be within 2x of PyTorch
    # float32's own distance to float64 (both are float32 implementations with other summation orders)
    within = np.abs(a - ref).max() / scale <= 1e-5
    print("  verdict: reader %s; engine %s" % (
        "exact" if a.tobytes() == b.tobytes() else "NOT EXACT",
        "within 1e-5 of PyTorch" if within else
        ("NOT within 1e-5 of PyTorch float32, but as far from float64 as PyTorch float32 (within 2x)"
         if e_ours <= 2 * e_torch else "FARTHER from float64 than 2x PyTorch float32")))
    ok = a.tobytes() == b.tobytes() and (within or e_ours <= 2 * e_torch)
    # fp16 storages, plain state dict
    sd16 = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sd.items())
    ck16 = OUT / (name + "_f16.pth")
    torch.save(sd16, ck16)
    model.load_state_dict(collections.OrderedDict((k, v.float() if v.is_floating_point() else v)
                                                  for k, v in sd16.items()))
    ref16 = torch_logits(model, arch, x)
    c16, _ = ours(ck16, name + "_f16")
    st16 = OUT / (name + "_f16.safetensors")
    subprocess.run([str(TOOL), "convert", str(ck16), str(st16)], check=True, capture_output=True)
    d16, _ = ours(st16, name + "_f16_st")
    s16 = float(np.abs(ref16).max())
    print("  fp16 checkpoint: pth vs converted %s; vs PyTorch on the same fp16 weights: relative %.3g" %
          ("bit-exact" if c16.tobytes() == d16.tobytes() else "DIFFER", np.abs(c16 - ref16).max() / s16))
    ok = ok and c16.tobytes() == d16.tobytes() and np.abs(c16 - ref16).max() / s16 <= 1e-5
    print("  sizes: %s %d bytes, %s %d bytes" % (ck.name, ck.stat().st_size, ck16.name, ck16.stat().st_size))
    return ok


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    ok = check("student_b3_demo", "student", "b3", read_safetensors(BUILD / "testmodel_b3.safetensors"))
    for arch, variant in () if DEMO_ONLY else (("teacher", "b3"), ("teacher", "b4"), ("student", "b4")):
        torch.manual_seed(0)  # torch's default initialisation, BN statistics 0 / 1
        t = refmodel.build_model(arch, variant)
        ok = check("%s_%s_init" % (arch, variant), arch, variant, t.state_dict()) and ok
    print("ALL OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
