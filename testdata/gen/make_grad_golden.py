#!/usr/bin/python3
"""make_grad_golden.py - PyTorch (1.13, Debian's /usr/bin/python3) goldens for tests/test_grad.c.

Writes testdata/train/grad_golden.safetensors: for each case, its float32 inputs, the random
cotangent r (the loss is L = sum(out * r)), and PyTorch's outputs and gradients computed twice from
the same float32 inputs: in float64 (suffix .f64, rounded to float32 when stored) and in float32
(suffix .f32). Every tensor is stored as F32.

Cases: a grouped conv with stride 2, dilation 2 and an asymmetric zero pad; EfficientNet's
depthwise 5x5/s2 with its static pad (1,2,1,2); BatchNorm in training mode (eps 1e-3, momentum
0.01, running stats updated); bilinear x4 with align_corners=True; swish; softmax over channels;
drop-connect with a given per-sample mask.

Usage: /usr/bin/python3 testdata/gen/make_grad_golden.py [out.safetensors]
"""
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(20261125)


def rnd(*shape, lo=0.1, hi=1.0):
    """+-[lo, hi], never near zero, float32"""
    mag = torch.rand(*shape, dtype=torch.float64) * (hi - lo) + lo
    sign = torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0).to(torch.float64)
    return (mag * sign).float()


tensors = {}


def put(name, t):
    tensors[name] = t.detach().to(torch.float32).contiguous()


def run_case(case, inputs, r, fn, extra_out=None):
    """inputs: dict name -> float32 tensor; fn(dict of tensors) -> output tensor (and side outputs)"""
    for k, v in inputs.items():
        put(f"{case}.{k}", v)
    put(f"{case}.r", r)
    for dt, suf in ((torch.float64, "f64"), (torch.float32, "f32")):
        ins = {k: v.to(dt).clone().requires_grad_(True) for k, v in inputs.items()}
        side = {}
        y = fn(ins, side, dt)
        (y * r.to(dt)).sum().backward()
        put(f"{case}.y.{suf}", y)
        for k, v in ins.items():
            put(f"{case}.d{k}.{suf}", v.grad)
        for k, v in side.items():
            put(f"{case}.{k}.{suf}", v)


# grouped conv: groups 2, 4 -> 6 channels, 3x3, stride 2, dilation 2, pad l1 r2 t2 b1, bias
x = rnd(2, 4, 9, 9)
w = rnd(6, 2, 3, 3, lo=0.05, hi=0.5)
b = rnd(6)
r = rnd(2, 6, 4, 4)


def conv_a(t, side, dt):
    xp = F.pad(t["x"], (1, 2, 2, 1))  # (left, right, top, bottom)
    return F.conv2d(xp, t["w"], t["b"], stride=2, dilation=2, groups=2)


y = conv_a({"x": x, "w": w, "b": b}, {}, None)
assert tuple(y.shape) == tuple(r.shape), y.shape
run_case("conv", {"x": x, "w": w, "b": b}, r, conv_a)

# depthwise 5x5/s2, static same pad (1,2,1,2) as efficientnet_pytorch 0.6.3 gives it at b3
x = rnd(2, 6, 8, 8)
w = rnd(6, 1, 5, 5, lo=0.05, hi=0.5)
r = rnd(2, 6, 4, 4)


def conv_dw(t, side, dt):
    return F.conv2d(F.pad(t["x"], (1, 2, 1, 2)), t["w"], None, stride=2, groups=6)


run_case("dwconv", {"x": x, "w": w}, r, conv_dw)

# BatchNorm, training mode, eps 1e-3, momentum 0.01 (EfficientNet's)
x = rnd(2, 5, 6, 6) * 2 + torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1)
g = rnd(5)
bb = rnd(5)
rm = rnd(5, lo=0.0, hi=0.3)
rv = rnd(5, lo=0.5, hi=1.5).abs()
r = rnd(2, 5, 6, 6)
put("bn.running_mean", rm)
put("bn.running_var", rv)


def bn(t, side, dt):
    m, v = rm.to(dt).clone(), rv.to(dt).clone()
    y = F.batch_norm(t["x"], m, v, t["g"], t["b"], training=True, momentum=0.01, eps=1e-3)
    side["running_mean"] = m
    side["running_var"] = v
    return y


run_case("bn", {"x": x, "g": g, "b": bb}, r, bn)

# bilinear x4, align_corners=True (smp's UpsamplingBilinear2d)
x = rnd(2, 3, 4, 5)
r = rnd(2, 3, 16, 20)
run_case("up4", {"x": x}, r, lambda t, s, dt: torch.nn.UpsamplingBilinear2d(scale_factor=4)(t["x"]))

# swish (efficientnet_pytorch's x * sigmoid(x)) and softmax over channels
x = rnd(2, 3, 4, 4) * 4
r = rnd(2, 3, 4, 4)
run_case("swish", {"x": x}, r, lambda t, s, dt: t["x"] * torch.sigmoid(t["x"]))
x = rnd(2, 4, 3, 3) * 3
r = rnd(2, 4, 3, 3)
run_case("softmax", {"x": x}, r, lambda t, s, dt: torch.softmax(t["x"], dim=1))

# drop-connect as efficientnet_pytorch 0.6.3 computes it, with a given per-sample mask:
# inputs / keep_prob * binary_tensor, keep_prob = 1 - 0.2 * 13 / 26 (block 13 of b3's 26)
x = rnd(4, 3, 5, 5)
r = rnd(4, 3, 5, 5)
mask = torch.tensor([1.0, 0.0, 1.0, 1.0]).view(4, 1, 1, 1)
put("dropconnect.mask", mask)
keep_prob = 1 - 0.2 * 13.0 / 26
run_case("dropconnect", {"x": x}, r, lambda t, s, dt: t["x"] / keep_prob * mask.to(dt))

# safetensors, written by hand (F32 only)
header, blobs, off = {}, [], 0
for name in sorted(tensors):
    t = tensors[name]
    data = t.numpy().astype("<f4").tobytes()
    header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(data)]}
    blobs.append(data)
    off += len(data)
header["__metadata__"] = {"generator": "testdata/gen/make_grad_golden.py", "torch": torch.__version__}
hj = json.dumps(header, separators=(",", ":")).encode()
hj += b" " * (-len(hj) % 8)
out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train",
                                                         "grad_golden.safetensors")
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out, "wb") as f:
    f.write(struct.pack("<Q", len(hj)))
    f.write(hj)
    for blob in blobs:
        f.write(blob)
print(f"{os.path.normpath(out)}: {len(tensors)} tensors, {off} bytes of data")
