#!/usr/bin/env python3
"""stublib.py - build a stub of a shared library (x86-64 ELF, glibc).

The stub has the original's SONAME, its version definitions (with their parents), and exports every
dynamic symbol the original defines, with the same type, binding and version:

  * functions (and GNU IFUNCs, which callers cannot tell apart): a body that writes
    "stub called: NAME" to stderr (a raw write(2) system call: the stub needs no libc) and returns
    0 (rax, rdx, xmm0, xmm1 zeroed);
  * objects: zero-filled storage of the same size and alignment (.bss), GNU unique objects stay
    unique; TLS objects: the same in .tbss;
  * versions: `sym@@VER` (default) by naming sym in VER's node of a version script, `sym@VER`
    (hidden, non-default) through `.symver __stub_vN, sym@VER, remove`; the script defines every
    version node of the original (with its parents), even those that export nothing, since a
    consumer's DT_VERNEED must find each of them. (A hidden-version GNU unique object becomes a
    plain global one: .symver drops the binding.)

It NEEDs nothing, so everything the original pulled in is gone with it. A library that links against
the original and calls none of its functions at run time loads and runs unchanged (also with
BIND_NOW); a call that does happen is visible on stderr.

--shadow LIB (repeatable): leave out the symbols that LIB also defines (same name and version, or LIB's
unversioned). Used for the real libraries kept beside the stubs: a stub listed earlier in the search
order than a real library would otherwise interpose its dead copies of, e.g., weak C++ template
instances or typeinfo over the real ones.

Usage: stublib.py LIB -o OUT.so [--asm OUT.s] [--shadow LIB]... [-q]
Prints one line: soname, symbol counts by kind, what was left out (shadowed, absolute symbols).
Python 3 standard library only; needs gcc (binutils >= 2.35 for `.symver ..., remove`).
"""
import argparse
import os
import re
import struct
import subprocess
import sys
import tempfile

STT = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE", 5: "COMMON", 6: "TLS",
       10: "IFUNC"}
STB = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK", 10: "UNIQUE"}
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
SHT_DYNSYM, SHT_DYNAMIC, SHT_NOBITS = 11, 6, 8
SHT_VERSYM, SHT_VERDEF = 0x6FFFFFFF, 0x6FFFFFFD
SHF_TLS = 0x400
DT_NEEDED, DT_SONAME = 1, 14
# symbols the linker defines in every shared object
LINKER_SYMS = {"_edata", "_end", "__bss_start", "_init", "_fini", "_DYNAMIC",
               "_GLOBAL_OFFSET_TABLE_"}


class Elf:
    """The dynamic symbol table, version definitions, SONAME and NEEDED of an ELF64 LE object."""

    def __init__(self, path):
        with open(path, "rb") as f:
            d = f.read()
        if d[:4] != b"\x7fELF" or d[4] != 2 or d[5] != 1:
            raise SystemExit(f"{path}: not a 64-bit little-endian ELF file")
        self.machine = struct.unpack_from("<H", d, 18)[0]
        shoff, = struct.unpack_from("<Q", d, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", d, 0x3A)
        secs = []
        for i in range(shnum):
            (name, typ, flags, addr, off, size, link, info, align,
             entsize) = struct.unpack_from("<IIQQQQIIQQ", d, shoff + i * shentsize)
            secs.append(dict(type=typ, flags=flags, addr=addr, off=off, size=size, link=link,
                             align=align, entsize=entsize))
        self.sections = secs

        def strtab(idx):
            s = secs[idx]
            return d[s["off"]:s["off"] + s["size"]]

        def cstr(tab, o):
            return tab[o:tab.index(b"\0", o)].decode("latin-1")

        dyn = [s for s in secs if s["type"] == SHT_DYNSYM]
        if not dyn:
            raise SystemExit(f"{path}: no .dynsym")
        ds = dyn[0]
        dstr = strtab(ds["link"])
        n = ds["size"] // 24
        versym = [0] * n
        for s in secs:
            if s["type"] == SHT_VERSYM:
                versym = list(struct.unpack_from(f"<{n}H", d, s["off"]))
        # version definitions: index -> (name, flags, [parents])
        self.verdefs = {}
        for s in secs:
            if s["type"] != SHT_VERDEF:
                continue
            vstr = strtab(s["link"])
            o = s["off"]
            while True:
                _ver, flags, ndx, cnt, _hash, aux, nxt = struct.unpack_from("<HHHHIII", d, o)
                names, a = [], o + aux
                for _ in range(cnt):
                    vname, anext = struct.unpack_from("<II", d, a)
                    names.append(cstr(vstr, vname))
                    a += anext
                self.verdefs[ndx] = (names[0], flags, names[1:])
                if not nxt:
                    break
                o += nxt
        self.soname, self.needed = None, []
        for s in secs:
            if s["type"] != SHT_DYNAMIC:
                continue
            for o in range(s["off"], s["off"] + s["size"], 16):
                tag, val = struct.unpack_from("<qQ", d, o)
                if tag == DT_SONAME:
                    self.soname = cstr(dstr, val)
                elif tag == DT_NEEDED:
                    self.needed.append(cstr(dstr, val))
        self.base = next((v[0] for v in self.verdefs.values() if v[1] & 1), None)  # VER_FLG_BASE
        # defined dynamic symbols: dicts with name, type, bind, size, value, shndx, ver, hidden
        self.syms = []
        for i in range(1, n):
            st_name, info, other, shndx, value, size = struct.unpack_from("<IBBHQQ", d,
                                                                           ds["off"] + 24 * i)
            if shndx == SHN_UNDEF:
                continue
            bind, typ = info >> 4, info & 15
            if bind == 0:
                continue
            vs = versym[i]
            vi = vs & 0x7FFF
            ver = self.verdefs[vi][0] if vi >= 2 and vi in self.verdefs else None
            self.syms.append(dict(name=cstr(dstr, st_name), type=STT.get(typ, str(typ)),
                                  bind=STB.get(bind, str(bind)), size=size, value=value,
                                  shndx=shndx, ver=ver, hidden=bool(vs & 0x8000),
                                  vis=other & 3))

    def align_of(self, sym):
        """Alignment of a defined symbol: its section's, lowered to what its address allows."""
        a = 1
        if sym["shndx"] < len(self.sections):
            a = max(1, self.sections[sym["shndx"]]["align"])
        if sym["value"]:
            a = min(a, sym["value"] & -sym["value"])
        return min(a, 4096)

    def is_tls_section(self, sym):
        return sym["shndx"] < len(self.sections) and \
            bool(self.sections[sym["shndx"]]["flags"] & SHF_TLS)

    def is_nobits(self, sym):
        return sym["shndx"] < len(self.sections) and \
            self.sections[sym["shndx"]]["type"] == SHT_NOBITS


PLAIN = re.compile(r"^[A-Za-z_.$][A-Za-z0-9_.$]*$")


def q(name):
    """An assembler symbol: quoted unless it is a plain identifier."""
    if PLAIN.match(name):
        return name
    if '"' in name or "\\" in name:
        raise SystemExit(f"cannot quote symbol {name!r}")
    return f'"{name}"'


def asm_string(s):
    return '"' + "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else f"\\{ord(c):03o}"
                         for c in s) + '"'


def build_stub(lib, out, asm_out=None, shadows=(), quiet=False):
    e = Elf(lib)
    if e.machine != 62:
        raise SystemExit(f"{lib}: not x86-64")
    soname = e.soname or os.path.basename(lib)
    shadow = {}
    for s in shadows:
        for sym in Elf(s).syms:
            shadow.setdefault(sym["name"], set()).add(sym["ver"])
    vernames = {v[0] for v in e.verdefs.values()}
    text, data, bss, tbss, rodata = [], [], [], [], []
    counts = dict(func=0, ifunc=0, object=0, unique=0, tls=0, notype=0, shadowed=0, absolute=0)
    seen = set()
    node_syms = {}
    k = 0
    for s in e.syms:
        name, ver = s["name"], s["ver"]
        if name in LINKER_SYMS or (s["shndx"] == SHN_ABS and (name in vernames or s["size"] == 0
                                                              and s["type"] == "OBJECT")):
            continue  # ld makes these (the ABS symbols are version-node markers)
        if s["shndx"] == SHN_ABS:
            counts["absolute"] += 1
            if not quiet:
                print(f"  note: absolute symbol {name} = {s['value']:#x} left out", file=sys.stderr)
            continue
        key = (name, ver, s["hidden"])
        if key in seen:
            continue
        seen.add(key)
        sv = shadow.get(name)
        if sv is not None and (ver in sv or None in sv):
            counts["shadowed"] += 1
            continue
        k += 1
        # the symbol is defined under an internal name, renamed by .symver (or not, when
        # unversioned), so several versions of one name can coexist
        if ver is None or ver == e.base:
            lab, sym_line = q(name), None
        elif not s["hidden"]:  # the default version: named in the version script's node
            lab, sym_line = q(name), None
            node_syms.setdefault(ver, []).append(name)
        else:
            lab = f"__stub_v{k}"
            sym_line = f"\t.symver {lab}, {q(name + '@' + ver)}, remove"
        bind = {"WEAK": ".weak", "GLOBAL": ".globl", "UNIQUE": ".globl"}.get(s["bind"], ".globl")
        t = s["type"]
        if t in ("FUNC", "IFUNC"):
            counts["func" if t == "FUNC" else "ifunc"] += 1
            msg = name + "\n"
            rodata.append(f".Ls{k}:\t.ascii {asm_string(msg)}")
            text += [f"\t{bind} {lab}", f"\t.type {lab}, @function", f"{lab}:",
                     f"\tleaq .Ls{k}(%rip), %rsi", f"\tmovl ${len(msg.encode('latin-1'))}, %edx",
                     "\tjmp __stub_called", f"\t.size {lab}, .-{lab}"]
            if sym_line:
                text.append(sym_line)
        else:
            tls = t == "TLS" or e.is_tls_section(s)
            size = s["size"]
            al = e.align_of(s)
            typ = "@tls_object" if tls else ("@gnu_unique_object" if s["bind"] == "UNIQUE"
                                            else "@object")
            if t == "NOTYPE":
                typ = "@notype"
                counts["notype"] += 1
            elif tls:
                counts["tls"] += 1
            elif s["bind"] == "UNIQUE":
                counts["unique"] += 1
            else:
                counts["object"] += 1
            dst = tbss if tls else bss
            dst += [f"\t{bind} {lab}", f"\t.type {lab}, {typ}", f"\t.balign {al}", f"{lab}:",
                    f"\t.zero {max(size, 1)}", f"\t.size {lab}, {size}"]
            if sym_line:
                dst.append(sym_line)
    with tempfile.TemporaryDirectory() as tmp:
        asm = asm_out or os.path.join(tmp, "stub.s")
        vmap = os.path.join(tmp, "stub.map")
        with open(asm, "w") as f:
            f.write(f"# stub of {soname} ({os.path.realpath(lib)}), made by stublib.py\n")
            f.write("\t.section .rodata.stub,\"a\",@progbits\n"
                    ".Lprefix:\t.ascii \"stub called: \"\n")
            f.write("\n".join(rodata) + "\n")
            f.write("\t.text\n\t.type __stub_called, @function\n"
                    "__stub_called:\t# rsi: name + newline, edx: its length\n"
                    "\tpushq %rsi\n\tpushq %rdx\n"
                    "\tmovl $1, %eax\n\tmovl $2, %edi\n\tleaq .Lprefix(%rip), %rsi\n"
                    "\tmovl $13, %edx\n\tsyscall\n"
                    "\tpopq %rdx\n\tpopq %rsi\n\tmovl $1, %eax\n\tmovl $2, %edi\n\tsyscall\n"
                    "\txorl %eax, %eax\n\txorl %edx, %edx\n\tpxor %xmm0, %xmm0\n"
                    "\tpxor %xmm1, %xmm1\n\tret\n\t.size __stub_called, .-__stub_called\n")
            f.write("\n".join(text) + "\n")
            if bss:
                f.write("\t.bss\n" + "\n".join(bss) + "\n")
            if tbss:
                f.write("\t.section .tbss,\"awT\",@nobits\n" + "\n".join(tbss) + "\n")
            f.write("\t.section .note.GNU-stack,\"\",@progbits\n")
        cmd = ["gcc", "-shared", "-nostdlib", "-o", out, asm, f"-Wl,-soname,{soname}",
               "-Wl,-z,noexecstack", "-Wl,--hash-style=both", "-Wl,-s"]
        nodes = sorted((ndx, v) for ndx, v in e.verdefs.items() if not v[1] & 1)
        if nodes:
            with open(vmap, "w") as f:
                for _ndx, (vn, _flags, parents) in nodes:
                    names = "".join(f' "{n}";' for n in node_syms.get(vn, []))
                    f.write(f"{vn} {{{' global:' + names if names else ''} }}"
                            f"{(' ' + ', '.join(parents)) if parents else ''};\n")
            cmd.append(f"-Wl,--version-script,{vmap}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write(r.stderr)
            raise SystemExit(f"stublib: gcc failed for {lib}")
    line = (f"{soname}: " + ", ".join(f"{v} {c}" for c, v in counts.items() if v) +
            f", {len(nodes)} version nodes -> {out} ({os.path.getsize(out)} bytes, was "
            f"{os.path.getsize(lib)})")
    if not quiet:
        print(line)
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lib")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--asm", help="keep the generated assembly here")
    ap.add_argument("--shadow", action="append", default=[],
                    help="leave out the symbols this real library also defines (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args()
    build_stub(a.lib, a.out, a.asm, a.shadow, a.quiet)


if __name__ == "__main__":
    main()
