"""CI check of the CUDA sources, for a machine without a GPU.

Compiles every csrc/*/*.cu with nvcc exactly as the package build does
(tools/build_config.py: -Werror all-warnings, SASS for each arch plus PTX for
the newest), fails on any warning (ptxas included), checks that each object,
and each library given with --lib, embeds SASS for every arch and the PTX,
and writes a report of registers, shared memory, stack and spills per kernel
and arch (from -Xptxas -v).

    python tools/check_cuda_build.py build/cuda_build_check.txt
    python tools/check_cuda_build.py REPORT --lib paddle_fastconv/_fastconv_ops*.so

The embedded code is read from the objects' .nv_fatbin section (fatbinary
containers: a 16-byte header with magic 0xBA55ED50, then entries whose
header gives the kind, 1 = PTX and 2 = ELF/SASS, at byte 0 and the arch at
byte 28).  When cuobjdump is found (PATH, $CUDA_HOME/bin, or the
nvidia-cuda-cuobjdump wheel) its --list-elf / --list-ptx must agree.
Exit status: 0 when everything holds, 1 otherwise, 2 when nvcc is missing.
"""
import argparse
import concurrent.futures
import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import types

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import build_config  # noqa: E402  (the package build's own nvcc flags)

FATBIN_MAGICS = (0xBA55ED50, 0x466243B1)
KIND_PTX, KIND_ELF = 1, 2


def find_cuda(arg):
    """(nvcc, toolkit root), found as tools/build_config.py finds them."""
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = arg or (os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc"))
    if not nvcc or not os.path.exists(nvcc):
        return None, None
    if arg and not home:
        home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    if not home:  # nvcc from PATH may be a wrapper script: build_config's rule
        home = "/usr/local/cuda" if os.path.isdir("/usr/local/cuda/include") \
            else os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return nvcc, home


def find_cuobjdump(home):
    cands = [shutil.which("cuobjdump"), os.path.join(home, "bin", "cuobjdump")]
    site = sysconfig.get_paths()["purelib"]
    cands += sorted(glob.glob(os.path.join(site, "nvidia", "*", "bin", "cuobjdump")))
    return next((c for c in cands if c and os.access(c, os.X_OK)), None)


# --------------------------------------------------------------------------
# Embedded code: ELF section .nv_fatbin -> {(kind, arch)}
# --------------------------------------------------------------------------

def elf_section(path, wanted):
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("%s: not a 64-bit ELF file" % path)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + k * shentsize) for k in range(shnum)]
    names_off = headers[shstrndx][4]
    for name_off, _type, _flags, _addr, off, size in headers:
        end = data.index(b"\0", names_off + name_off)
        if data[names_off + name_off:end].decode() == wanted:
            return data[off:off + size]
    return None


def fatbin_entries(path):
    """{(kind, arch)} of every entry of every fatbinary container in `path`."""
    blob = elf_section(path, ".nv_fatbin")
    if blob is None:
        raise ValueError("%s: no .nv_fatbin section (no device code)" % path)
    found, pos = set(), 0
    while pos + 16 <= len(blob):
        magic, _version, header_size, body_size = struct.unpack_from("<IHHQ", blob, pos)
        if magic not in FATBIN_MAGICS:
            pos += 8  # containers are 8-byte aligned; skip padding
            continue
        entry, end = pos + header_size, pos + header_size + body_size
        if end > len(blob):
            raise ValueError("%s: truncated fatbinary container" % path)
        while entry < end:
            kind, _unused, entry_size, payload = struct.unpack_from("<HHIQ", blob, entry)
            arch, = struct.unpack_from("<I", blob, entry + 28)
            if entry_size == 0:
                raise ValueError("%s: malformed fatbinary entry" % path)
            found.add((kind, arch))
            entry += entry_size + payload
        pos = end
    return found


def cuobjdump_entries(tool, path):
    found = set()
    for flag, kind in (("--list-elf", KIND_ELF), ("--list-ptx", KIND_PTX)):
        p = subprocess.run([tool, flag, path], capture_output=True, text=True)
        if p.returncode != 0 and "does not contain" not in p.stderr:
            raise RuntimeError("%s %s %s failed:\n%s" % (tool, flag, path, p.stderr))
        found |= {(kind, int(a)) for a in re.findall(r"\.sm_(\d+)[a-z]?\.(?:cubin|ptx)",
                                                      p.stdout)}
    return found


def check_embedded(path, archs, cuobjdump):
    """Problems with the code `path` embeds (empty list when it is complete)."""
    want = {(KIND_ELF, a) for a in archs} | {(KIND_PTX, archs[-1])}
    have = fatbin_entries(path)
    problems = ["%s: no %s" % (path, "PTX for compute_%d" % a if k == KIND_PTX
                               else "SASS for sm_%d" % a)
                for k, a in sorted(want - have)]
    if cuobjdump:
        other = cuobjdump_entries(cuobjdump, path)
        if other != have:
            problems.append("%s: cuobjdump lists %s, the fatbinary parser %s"
                            % (path, sorted(other), sorted(have)))
    return problems


# --------------------------------------------------------------------------
# ptxas -v resource usage
# --------------------------------------------------------------------------

ENTRY_RE = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
STACK_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED_RE = re.compile(r"Used (\d+) registers")
SMEM_RE = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text):
    """[{kernel, arch, regs, smem, stack, spill_st, spill_ld}] in output order."""
    rows, cur = [], None
    for line in text.splitlines():
        m = ENTRY_RE.search(line)
        if m:
            cur = {"kernel": m.group(1), "arch": m.group(2), "regs": None, "smem": 0,
                   "stack": 0, "spill_st": 0, "spill_ld": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = STACK_RE.search(line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = USED_RE.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            s = SMEM_RE.search(line)
            cur["smem"] = int(s.group(1)) if s else 0
    return rows


def demangle(names):
    """Readable kernel names: c++filt when present, fastconv's namespaces and
    the parameter lists dropped."""
    out = list(names)
    if shutil.which("c++filt") and names:
        p = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
        if p.returncode == 0 and len(p.stdout.splitlines()) == len(names):
            out = p.stdout.splitlines()
    short = []
    for n in out:
        n = re.sub(r"^void ", "", n)
        n = re.sub(r"fastconv::cuda::|\(anonymous namespace\)::|_GLOBAL__N_\w+::", "", n)
        depth, cut = 0, len(n)
        for k, ch in enumerate(n):  # drop the trailing parameter list
            depth += ch == "<"
            depth -= ch == ">"
            if ch == "(" and depth == 0:
                cut = k
                break
        short.append(n[:cut])
    return short


# --------------------------------------------------------------------------

def compile_one(nvcc, flags, src, obj):
    cmd = [nvcc] + flags + ["-c", src, "-o", obj]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return cmd, p.returncode, p.stdout + p.stderr


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="where to write the build report")
    ap.add_argument("--archs", default=build_config.DEFAULT_ARCHS,
                    help="SM archs, e.g. '75;80;86;89;90' (default: the package's)")
    ap.add_argument("--nvcc", help="nvcc to use (default: $CUDA_HOME/bin/nvcc, else PATH)")
    ap.add_argument("--build-dir", help="where the objects go (default: a temporary dir)")
    ap.add_argument("--lib", action="append", default=[],
                    help="also check a linked library (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="files compiled at once")
    args = ap.parse_args(argv)

    nvcc, home = find_cuda(args.nvcc)
    if nvcc is None:
        print("check_cuda_build: nvcc not found (set CUDA_HOME or --nvcc)", file=sys.stderr)
        return 2
    archs = sorted({int(a.replace("sm_", "")) for a in re.split(r"[;,\s]+", args.archs) if a})
    listed = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True).stdout
    unsupported = [a for a in archs if "sm_%d" % a not in listed.split()]
    if unsupported:
        print("check_cuda_build: %s does not support sm_%s" % (nvcc, unsupported), file=sys.stderr)
        return 1
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    flags = build_config._nvcc_flags(types.SimpleNamespace(cuda={"home": home}, archs=archs))
    flags += ["--threads", str(threads)]
    cuobjdump = find_cuobjdump(home)
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*", "*.cu")))
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    version = version.strip().splitlines()[-1] if version.strip() else "?"

    build_dir = args.build_dir or tempfile.mkdtemp(prefix="fastconv_cuda_check_")
    os.makedirs(build_dir, exist_ok=True)
    problems, sections = [], []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(compile_one, nvcc, flags, src,
                               os.path.join(build_dir, os.path.basename(src) + ".o"))
                   for src in sources]
        results = [f.result() for f in futures]
    for src, (cmd, rc, out) in zip(sources, results):
        rel, obj = os.path.relpath(src, ROOT), cmd[-1]
        if rc != 0:
            problems.append("%s: nvcc failed (exit %d):\n%s" % (rel, rc, out))
            continue
        warnings = [l for l in out.splitlines() if re.search(r"\bwarning\b", l, re.I)]
        problems += ["%s: %s" % (rel, w) for w in warnings]
        problems += check_embedded(obj, archs, cuobjdump)
        rows = parse_ptxas(out)
        kernels = sorted({r["kernel"] for r in rows})
        for k in kernels:  # every kernel must have been compiled for every arch
            got = {r["arch"] for r in rows if r["kernel"] == k}
            missing = {"sm_%d" % a for a in archs} - got
            if missing:
                problems.append("%s: %s not compiled for %s" % (rel, k, sorted(missing)))
        if not rows:
            problems.append("%s: no ptxas resource usage in the nvcc output" % rel)
        sections.append((rel, rows, dict(zip(kernels, demangle(kernels)))))
    for lib in args.lib:
        problems += check_embedded(lib, archs, cuobjdump)

    lines = ["CUDA build check: %s (%s)" % (nvcc, version),
             "archs: SASS %s + PTX compute_%d; fatbinary checked by the built-in parser%s"
             % (" ".join("sm_%d" % a for a in archs), archs[-1],
                " and " + cuobjdump if cuobjdump else ""),
             "flags: " + " ".join(flags), ""]
    for rel, rows, names in sections:
        lines.append("== %s: %d kernels x %d archs" % (rel, len(names), len(archs)))
        lines.append("%-60s %-6s %5s %6s %6s %12s" % ("kernel", "arch", "regs", "smem",
                                                     "stack", "spill st/ld"))
        for r in sorted(rows, key=lambda r: (names[r["kernel"]], int(r["arch"][3:]))):
            lines.append("%-60s %-6s %5s %6d %6d %12s" % (
                names[r["kernel"]], r["arch"], r["regs"], r["smem"], r["stack"],
                "%d/%d" % (r["spill_st"], r["spill_ld"])))
        lines.append("")
    for lib in args.lib:
        lines.append("library %s: checked" % lib)
    lines.append("RESULT: %s" % ("OK" if not problems else "%d problem(s)" % len(problems)))
    lines += problems
    os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
    with open(args.report, "w") as f:
        f.write("\n".join(lines) + "\n")
    for p in problems:
        print("check_cuda_build: " + p, file=sys.stderr)
    print("check_cuda_build: %d sources, %s; report in %s" % (
        len(sources), "OK" if not problems else "%d problem(s)" % len(problems), args.report))
    if not args.build_dir:
        shutil.rmtree(build_dir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
