#!/usr/bin/env python3
"""dwgen-1: deterministic weights for the golden fixtures.

The C side regenerates every convolution weight and bias bit-exactly from the
state_dict key alone, so the golden files only need to carry the BatchNorm
tensors, the input and the outputs.  This module is the Python reference of
that generator.  It depends on numpy only (torch is not needed to generate).

Definition (version string "dwgen-1"):

  seed(K)   = FNV-1a 64 over the UTF-8 bytes of key K
              (offset basis 0xcbf29ce484222325, prime 0x100000001b3, mod 2^64)
  for the flat row-major element index i (0-based):
    x  = seed + i                      (mod 2^64)
    x += 0x9E3779B97F4A7C15            (mod 2^64)          -- splitmix64
    z  = x
    z  = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9              (mod 2^64)
    z  = (z ^ (z >> 27)) * 0x94D049BB133111EB              (mod 2^64)
    z  =  z ^ (z >> 31)
    u  = z >> 40                        (24-bit integer)
    r  = float32(u) * 2^-24             (exact)
    v  = 2*r - 1                        (exact in float32, in [-1, 1))

  conv weight, shape (O, I, kh, kw):
    value = float32(v) * float32(sqrt(3.0 / (I*kh*kw)))
            (sqrt in double, rounded once to float32; one float32 multiply)
  conv bias:
    value = float32(v) * float32(0.1)   (one float32 multiply)

  BatchNorm (stored in the fixtures, so the exact formula is not part of the
  C contract; listed for completeness):
    weight = 1 + 0.25 * v,  bias = 0.1 * v   (float32)

Run as a script to print the unit-test vector used by the C tests.
"""

import math
import struct
import sys

import numpy as np

DWGEN_VERSION = "dwgen-1"

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3


def fnv1a64(key: str) -> int:
    """FNV-1a 64-bit hash of the key's UTF-8 bytes (Python int in [0, 2^64))."""
    h = _FNV_OFFSET
    for b in key.encode("utf-8"):
        h ^= b
        h = (h * _FNV_PRIME) & _MASK64
    return h


def uniform_pm1(key: str, n: int) -> np.ndarray:
    """The n values v in [-1, 1) (float32) for key K, element indices 0..n-1."""
    # numpy uint64 array arithmetic wraps modulo 2^64, which is what we want.
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(key))
        x = x + np.uint64(0x9E3779B97F4A7C15)
        z = x
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.uint32)          # 24-bit integers
    r = u.astype(np.float32) * np.float32(2.0 ** -24)   # exact
    v = np.float32(2.0) * r - np.float32(1.0)           # exact
    assert v.dtype == np.float32
    return v


def conv_weight(key: str, shape) -> np.ndarray:
    """dwgen value of a 4-D conv weight (O, I, kh, kw), float32."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise ValueError("conv weight must be 4-D, got %r for %s" % (shape, key))
    fan_in = shape[1] * shape[2] * shape[3]
    scale = np.float32(math.sqrt(3.0 / fan_in))          # double sqrt -> float32
    v = uniform_pm1(key, int(np.prod(shape)))
    w = v * scale                                       # float32 * float32
    assert w.dtype == np.float32
    return w.reshape(shape)


def conv_bias(key: str, shape) -> np.ndarray:
    """dwgen value of a conv bias (1-D), float32."""
    shape = tuple(int(s) for s in shape)
    v = uniform_pm1(key, int(np.prod(shape)))
    b = v * np.float32(0.1)
    assert b.dtype == np.float32
    return b.reshape(shape)


def bn_weight(key: str, shape) -> np.ndarray:
    """BatchNorm gamma before calibration (stored in the fixtures)."""
    v = uniform_pm1(key, int(np.prod(shape)))
    return (np.float32(1.0) + np.float32(0.25) * v).reshape(shape)


def bn_bias(key: str, shape) -> np.ndarray:
    """BatchNorm beta before calibration (stored in the fixtures)."""
    v = uniform_pm1(key, int(np.prod(shape)))
    return (np.float32(0.1) * v).reshape(shape)


def f32hex(x) -> str:
    """Little-endian IEEE float32 bytes as hex, e.g. 0x3f800000 -> '0000803f'.
    Also returned: the big-endian bit pattern, see test_vector()."""
    return struct.pack("<f", float(x)).hex()


def test_vector():
    """First 4 values of encoder._conv_stem.weight (40x4x3x3)."""
    key = "encoder._conv_stem.weight"
    w = conv_weight(key, (40, 4, 3, 3)).reshape(-1)[:4]
    rows = []
    for i, val in enumerate(w):
        le = f32hex(val)
        bits = struct.unpack("<I", struct.pack("<f", float(val)))[0]
        rows.append((i, le, "0x%08x" % bits, repr(float(val))))
    return key, fnv1a64(key), rows


def main():
    key, seed, rows = test_vector()
    print("%s  key=%s  seed=0x%016x" % (DWGEN_VERSION, key, seed))
    print("shape 40x4x3x3, scale=float32(sqrt(3/36))=%r" % float(np.float32(math.sqrt(3.0 / 36))))
    print("idx  le_bytes   bits        value")
    for i, le, bits, val in rows:
        print("%3d  %s  %s  %s" % (i, le, bits, val))
    # Also a bias test vector (first 4 of a 1x1 conv bias), for completeness.
    bkey = "segmentation_head.0.bias"
    b = conv_bias(bkey, (2,))
    print("%s (2,): %s" % (bkey, " ".join("0x%08x" % struct.unpack("<I", struct.pack("<f", float(t)))[0] for t in b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
