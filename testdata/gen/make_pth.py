"""Makes the PyTorch checkpoint fixtures of tests/test_pth.c (testdata/pth/), small enough for git.

Needs torch (any version >= 1.6; Debian's python3-torch 1.13 made the committed ones):
    /usr/bin/python3 testdata/gen/make_pth.py [OUTDIR]
The good files are written by torch.save itself; the hostile ones are our own zips around
hand-written pickles (or torch's files, cut or patched). Tensor values follow simple formulas that
test_pth.c recomputes.
"""
import collections
import io
import os
import struct
import sys
import zipfile
from pathlib import Path

import torch

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "pth")


def state():
    sd = collections.OrderedDict()
    sd["a.weight"] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8           # contiguous
    sd["h.weight"] = (torch.arange(6, dtype=torch.float32) * 0.5 - 1).to(torch.float16)   # fp16 storage
    sd["bf.weight"] = (torch.arange(4, dtype=torch.float32) + 0.25).to(torch.bfloat16)    # bf16 storage
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    sd["t.weight"] = x.t()                                                                 # strides (1, 4)
    base = torch.arange(20, dtype=torch.float32) * -1
    sd["off.weight"] = base[5:11]                                                         # offset 5
    sd["s1.weight"] = base[0:4].view(2, 2)                                               # shares base
    sd["bn.num_batches_tracked"] = torch.tensor(7, dtype=torch.long)
    sd["d.weight"] = torch.tensor([1.5, -2.25], dtype=torch.float64)
    return sd


def save(obj, name, **kw):
    torch.save(obj, OUT / name, **kw)


def put(z, name, data):
    """A member with a fixed timestamp (reproducible files)."""
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.compress_type = z.compression
    z.writestr(zi, data)


def zip_with(name, pkl, storages=(), byteorder=None, prefix="archive", method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(OUT / name, "w", method) as z:
        put(z, f"{prefix}/data.pkl", pkl)
        if byteorder is not None:
            put(z, f"{prefix}/byteorder", byteorder)
        for key, data in storages:
            put(z, f"{prefix}/data/{key}", data)
        put(z, f"{prefix}/version", "3\n")


def u(s):  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def tensor_pkl(key, numel, offset, size, stride, storage=b"ctorch\nFloatStorage\n"):
    """A one-tensor state dict {'w': tensor} in protocol-2 opcodes."""
    tup = lambda xs: b"(" + b"".join(b"\x8a\x08" + struct.pack("<q", v) for v in xs) + b"t"
    pid = b"(" + u("storage") + storage + u(key) + u("cpu") + b"\x8a\x08" + struct.pack("<q", numel) + b"tQ"
    args = b"(" + pid + b"J" + struct.pack("<i", offset) + tup(size) + tup(stride) + b"\x89" + \
        b"ccollections\nOrderedDict\n)R" + b"t"
    return b"\x80\x02}" + u("w") + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"Rs."


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sd = state()
    # the authors' wrapping, DataParallel keys
    wrapped = {"state_dict": collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
               "epoch": 42, "best_metric": 0.8125}
    save(wrapped, "wrapped.pth.tar")
    save(sd, "plain.pth")
    save(sd, "proto4.pth", pickle_protocol=4)
    save(sd, "legacy.pth", _use_new_zipfile_serialization=False)
    # wrapper scalars as numpy values (training scripts often keep numpy metrics)
    import numpy as np
    save({"state_dict": collections.OrderedDict([("a.weight", sd["a.weight"])]), "epoch": np.int64(42),
          "best_metric": np.float64(0.8125), "best_f32": np.float32(0.5), "neg": np.int32(-3),
          "flag": np.bool_(True)}, "numpy_meta.pth")
    zip_with("numpy_object.pth", b"\x80\x02cnumpy\ndtype\n" + u("O8") + b"\x89\x88\x87R.")

    # hostile
    zip_with("evil_system.pth", b"\x80\x02cposix\nsystem\n" + u("touch /tmp/disopt_pwned") + b"\x85R.")
    zip_with("evil_builtins.pth", b"\x80\x02c__builtin__\neval\n" + u("1") + b"\x85R.")
    zip_with("huge_numel.pth", tensor_pkl("0", 1 << 40, 0, [1 << 20, 1 << 20], [1 << 20, 1]),
             [("0", b"\0" * 16)])
    zip_with("huge_dims.pth", tensor_pkl("0", 4, 0, [1 << 30, 1 << 30, 1 << 30], [0, 0, 0]),
             [("0", b"\0" * 16)])
    zip_with("offset_past_end.pth", tensor_pkl("0", 4, 1000, [2], [1]), [("0", b"\0" * 16)])
    zip_with("stride_past_end.pth", tensor_pkl("0", 4, 0, [2, 2], [4, 1]), [("0", b"\0" * 16)])
    zip_with("short_storage.pth", tensor_pkl("0", 100, 0, [100], [1]), [("0", b"\0" * 16)])
    zip_with("missing_storage.pth", tensor_pkl("7", 4, 0, [4], [1]), [("0", b"\0" * 16)])
    zip_with("bad_key.pth", tensor_pkl("..", 4, 0, [4], [1]), [("0", b"\0" * 16)])
    zip_with("big_endian.pth", tensor_pkl("0", 4, 0, [4], [1]), [("0", b"\0" * 16)], byteorder="big")
    zip_with("good_little.pth", tensor_pkl("0", 4, 0, [2, 2], [1, 2]),
             [("0", struct.pack("<4f", 1, 2, 3, 4))], byteorder="little", prefix="some_other_name")
    zip_with("deep_marks.pth", b"\x80\x02" + b"(" * 100000 + b".", method=zipfile.ZIP_DEFLATED)
    zip_with("deep_lists.pth", b"\x80\x02" + b"]" * 2000000 + b".", method=zipfile.ZIP_DEFLATED)
    zip_with("many_values.pth", b"\x80\x02" + b"N0" * 3000000 + b"}.", method=zipfile.ZIP_DEFLATED)
    zip_with("not_a_dict.pth", b"\x80\x02]" + u("x") + b"a.")
    zip_with("list_value.pth", b"\x80\x02}" + u("w") + b"]s.")
    zip_with("no_stop.pth", b"\x80\x02}" + u("w"))
    with zipfile.ZipFile(OUT / "no_pkl.pth", "w") as z:
        put(z, "archive/version", "3\n")
    # a cut file
    raw = (OUT / "wrapped.pth.tar").read_bytes()
    (OUT / "truncated.pth").write_bytes(raw[: len(raw) // 2])
    # zip bomb: data.pkl deflated, its declared uncompressed size patched to 3.9 GB in both headers
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as z:
        put(z, "archive/data.pkl", b"\x80\x02}." + b"\0" * 100000)
    b = bytearray(bio.getvalue())
    big = struct.pack("<I", 0xF0000000)
    lh = b.find(b"PK\x03\x04")
    b[lh + 22: lh + 26] = big
    cd = b.find(b"PK\x01\x02")
    b[cd + 24: cd + 28] = big
    (OUT / "zipbomb.pth").write_bytes(bytes(b))
    # storage bomb: a storage that claims (and holds) 2^31 zero floats, deflated to a few MB? no:
    # declared storage size far above what the file could hold even deflated
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as z:
        put(z, "archive/data.pkl", tensor_pkl("0", (1 << 30) - 64, 0, [(1 << 30) - 64], [1]))
        put(z, "archive/data/0", b"\0" * 1000)
    b = bytearray(bio.getvalue())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = -1
        for _ in range(2):
            pos = b.find(sig, pos + 1)
        b[pos + off: pos + off + 4] = struct.pack("<I", 0xFFFFFF00)
    (OUT / "storagebomb.pth").write_bytes(bytes(b))
    # a deflated storage whose compressed bytes are damaged: sizes fine, reading fails
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w", zipfile.ZIP_DEFLATED) as z:
        put(z, "archive/data.pkl", tensor_pkl("0", 4096, 0, [4096], [1]))
        put(z, "archive/data/0", struct.pack("<4096f", *[float(i % 97) for i in range(4096)]))
    b = bytearray(bio.getvalue())
    pos = -1
    for _ in range(2):
        pos = b.find(b"PK\x03\x04", pos + 1)
    name_len, extra_len = struct.unpack("<HH", b[pos + 26: pos + 30])
    data = pos + 30 + name_len + extra_len
    for i in range(data + 20, data + 60):
        b[i] ^= 0x5A
    (OUT / "corrupt_storage.pth").write_bytes(bytes(b))
    (OUT / "garbage.pth").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    for p in sorted(OUT.iterdir()):
        print(f"{p.stat().st_size:8d} {p.name}")


if __name__ == "__main__":
    main()
