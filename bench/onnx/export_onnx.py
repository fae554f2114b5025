#!/usr/bin/env python3
"""Export the authors' student B3 (BiDeepLabV3p_Dist, their model.py on smp 0.2.0 +
efficientnet_pytorch 0.6.3 from <repo>/.ref) to ONNX, with the weights of the very
model file our bench_cpu loads, and check ONNX Runtime's output against PyTorch's.

  python export_onnx.py --model M.safetensors --out DIR

M.safetensors is a full F32 state_dict under the authors' keys, e.g. made by
  build/tools/disopt_testmodel testdata/golden/student_b3.safetensors M.safetensors
(dwgen-1 conv weights + the golden fixture's calibrated BN: the network of bench/RESULTS.md).

Writes into DIR:
  student_b3_fused.onnx   graph only (~0.5 MB). Input "input" N x 4 x H x W (N, H, W
                          dynamic), output "fused_logit" N x 2 x H x W; the two side
                          heads are not in the graph. Every weight is ONNX *external
                          data* pointing into "model.safetensors" in the same folder at
                          the tensor's byte offset (safetensors F32 = ONNX raw data), so
                          ORT reads the same bytes as bench_cpu; copy or link M there.
  check_io.safetensors    golden.input (1x4x512x512, SAR-like, seed 1001) and
                          golden.fused_logit computed by PyTorch fp32 (for golden_compare
                          and for check_ort.py).
  export.json             versions, opset, sizes.
Exported with training=PRESERVE (model in eval) and no constant folding, so BatchNorm stays
a BatchNormalization node with the state_dict's own tensors (ORT fuses it into the conv at
load time, as it does for any export). Swish: efficientnet's MemoryEfficientSwish (a custom
autograd function ONNX cannot export) is replaced by its plain twin x*sigmoid(x), the same
function.

Needs torch (Debian's 1.13 works) and the `onnx` package (< 1.17 with Debian's numpy 1.24).
"""

import argparse
import json
import os
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "testdata" / "gen"))
import refmodel as R  # noqa: E402

OPSET = 17


def read_safetensors(path):
    """{name: (dtype, shape, file_offset, nbytes)}, metadata (no third-party reader needed)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    meta = hdr.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for k, v in hdr.items():
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], tuple(v["shape"]), base + a, b - a)
    return out, meta


def write_safetensors(path, tensors, meta):
    """tensors: {name: float32 numpy array}."""
    hdr, off, blobs = {"__metadata__": meta}, 0, []
    for k, a in tensors.items():
        b = a.astype("<f4", copy=False).tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="full F32 student B3 model file (safetensors)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    _, info = R.setup_imports()
    import numpy as np
    import onnx
    import torch
    from efficientnet_pytorch.utils import Swish
    if args.threads:
        torch.set_num_threads(args.threads)

    st, meta = read_safetensors(args.model)
    if meta.get("arch") != "student" or meta.get("variant") != "b3":
        raise SystemExit("%s is not a student B3 model: %r" % (args.model, meta))
    model = R.build_model("student", "b3")
    sd = {}
    with open(args.model, "rb") as f:
        for k, (dt, shape, off, nb) in st.items():
            if dt != "F32":
                raise SystemExit("%s: %s is %s, need F32" % (args.model, k, dt))
            f.seek(off)
            sd[k] = torch.from_numpy(np.frombuffer(f.read(nb), dtype="<f4").reshape(shape).copy())
    res = model.load_state_dict(sd, strict=False)
    if res.unexpected_keys or any(not k.endswith("num_batches_tracked") for k in res.missing_keys):
        raise SystemExit("state_dict mismatch: %r" % (res,))
    n_swish = 0
    for m in model.modules():
        if hasattr(m, "_swish"):
            m._swish = Swish()
            n_swish += 1
    model.eval()

    class Fused(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)[2]

    wrap = Fused(model).eval()
    S = args.size
    x = R.sar_like_input((1, 4, S, S), 1001)
    with torch.no_grad():
        ref = model(x)[2].float().contiguous()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp_full.onnx"
    with torch.no_grad():
        torch.onnx.export(wrap, x, str(tmp), opset_version=OPSET, export_params=True,
                          training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                          input_names=["input"], output_names=["fused_logit"],
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "fused_logit": {0: "n", 2: "h", 3: "w"}})
    g = onnx.load(str(tmp))
    os.remove(tmp)
    # Point every initializer that is a model tensor (same name, shape, bytes) into model.safetensors.
    n_ext, n_int, ext_bytes = 0, 0, 0
    for init in g.graph.initializer:
        key = init.name[4:] if init.name.startswith("net.") else init.name
        hit = st.get(key)
        arr = onnx.numpy_helper.to_array(init)
        if hit and tuple(arr.shape) == hit[1] and arr.dtype == np.float32:
            want = sd[key].numpy()
            if not np.array_equal(arr.view(np.uint32), want.view(np.uint32)):
                raise SystemExit("initializer %s differs from the model file" % init.name)
            init.ClearField("raw_data")
            init.ClearField("float_data")
            init.data_location = onnx.TensorProto.EXTERNAL
            del init.external_data[:]
            for key, val in (("location", "model.safetensors"), ("offset", str(hit[2])), ("length", str(hit[3]))):
                e = init.external_data.add()
                e.key, e.value = key, val
            n_ext += 1
            ext_bytes += hit[3]
        else:
            n_int += 1
    path = out / "student_b3_fused.onnx"
    onnx.save(g, str(path))
    ops = {}
    for nd in g.graph.node:
        ops[nd.op_type] = ops.get(nd.op_type, 0) + 1
    write_safetensors(out / "check_io.safetensors",
                      {"golden.input": x.numpy(), "golden.fused_logit": ref.numpy()},
                      {"arch": "student", "variant": "b3", "generator": "bench/onnx/export_onnx.py",
                       "torch": info["torch"], "input_seed": "1001"})
    rep = {"info": info, "onnx": onnx.__version__, "opset": OPSET, "model": os.path.abspath(args.model),
           "initializers_external": n_ext, "initializers_embedded": n_int, "external_bytes": ext_bytes,
           "onnx_bytes": path.stat().st_size, "swish_modules": n_swish, "ops": ops}
    with open(out / "export.json", "w") as f:
        json.dump(rep, f, indent=1)
    print(json.dumps(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
