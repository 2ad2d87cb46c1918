"""Where a benchmark record comes from, written once: the code's commit, the machine and
the versions.  Used by the sparsity sweep (:mod:`neurosim.experiments.sparsity`) and by
``benchmarks/_harness.py`` (which imports it only after setting its thread variables)."""
import os
import platform
import subprocess
from pathlib import Path

#: changes under these folders (the records being written) do not make a tree dirty.
RESULTS = ("benchmarks/results",)


def git_commit(where=None):
    """``git rev-parse --short HEAD`` of the repository holding ``where`` (default: this
    package), with ``+dirty`` when its work tree has changes outside :data:`RESULTS`
    (untracked files count: they may be imported); ``"unknown"`` outside a repository."""
    cwd = Path(where) if where is not None else Path(__file__).resolve().parent

    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        status = git("status", "--porcelain", "--", ":/",
                     *(f":(top,exclude){r}" for r in RESULTS))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if status else "")


#: SIMD levels of x86 (``/proc/cpuinfo`` flag, widest first) and of Arm, with the width
#: in bits of their vector registers.
SIMD_LEVELS = (("avx512f", 512), ("avx2", 256), ("avx", 256), ("sse4_2", 128), ("sse2", 128),
               ("sve", None), ("asimd", 128), ("neon", 128))


def cpu_info():
    """What ``/proc/cpuinfo`` says about this machine's CPU.

    Returns
    -------
    dict
        ``model`` (the "model name" line, else :func:`platform.processor`), ``vendor``,
        ``family``, ``model_number``, ``stepping`` (None where absent: a hypervisor may
        show only "AMD EPYC", so family and model number identify the generation, e.g.
        AMD family 25 model 1 is Zen 3), ``simd`` (the widest level of
        :data:`SIMD_LEVELS` among the flags, e.g. ``"avx2"``; None if unknown),
        ``vector_bits`` (its register width: 512, 256, 128) and ``cores`` (usable by this
        process)."""
    fields = {}
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break                      # the first processor is enough
                    continue
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key in ("flags", "Features"):
                    flags.update(val.split())
                else:
                    fields.setdefault(key, val)
    except OSError:
        pass

    def num(key):
        try:
            return int(fields[key], 0)
        except (KeyError, ValueError):
            return None
    simd, bits = next(((name, b) for name, b in SIMD_LEVELS if name in flags), (None, None))
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count()
    return dict(model=fields.get("model name") or platform.processor() or platform.machine(),
                vendor=fields.get("vendor_id") or fields.get("CPU implementer"),
                family=num("cpu family"), model_number=num("model"), stepping=num("stepping"),
                simd=simd, vector_bits=bits, cores=n)


def machine(cpu=None, llvm_cpu=None):
    """One line naming the CPU and its vector width, e.g. ``"AMD EPYC (family 25 model 1;
    avx2, 256-bit vectors; LLVM target znver3; 2 cores)"``.

    ``cpu`` is :func:`cpu_info` (default: this machine's); ``llvm_cpu`` the CPU name that
    LLVM (Numba) compiles for, where the caller knows it (``benchmarks/_harness.py`` adds
    it; neurosim outside ``kernels/`` does not import Numba).  Records written before
    2026-12-08 say only ``"<model> (<n> cores)"``."""
    c = cpu_info() if cpu is None else cpu
    parts = []
    if c.get("family") is not None and c.get("model_number") is not None:
        parts.append(f"family {c['family']} model {c['model_number']}")
    if c.get("simd"):
        parts.append(c["simd"] + (f", {c['vector_bits']}-bit vectors" if c.get("vector_bits") else ""))
    if llvm_cpu:
        parts.append(f"LLVM target {llvm_cpu}")
    parts.append(f"{c.get('cores')} cores")
    return f"{c.get('model')} ({'; '.join(parts)})"


def provenance(where=None):
    """Run-constant fields of a benchmark record: ``version``, ``commit``, ``machine``,
    ``numba_version``, ``numpy_version``, ``python`` and ``cpu`` (:func:`cpu_info`)."""
    from importlib.metadata import PackageNotFoundError, version
    import numpy
    import neurosim
    try:
        numba_version = version("numba")       # numba itself is imported by kernels/ only
    except PackageNotFoundError:  # pragma: no cover - numba is a dependency
        numba_version = "unknown"
    cpu = cpu_info()
    return dict(version=neurosim.__version__, commit=git_commit(where), machine=machine(cpu),
                numba_version=numba_version, numpy_version=numpy.__version__,
                python=platform.python_version(), cpu=cpu)
