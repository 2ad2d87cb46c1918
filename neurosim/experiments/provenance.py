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


def machine():
    """CPU model (``/proc/cpuinfo``) and the number of cores this process may use."""
    model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count()
    return f"{model} ({n} cores)"


def provenance(where=None):
    """Run-constant fields of a benchmark record: ``version``, ``commit``, ``machine``,
    ``numba_version``, ``numpy_version``, ``python``."""
    from importlib.metadata import PackageNotFoundError, version
    import numpy
    import neurosim
    try:
        numba_version = version("numba")       # numba itself is imported by kernels/ only
    except PackageNotFoundError:  # pragma: no cover - numba is a dependency
        numba_version = "unknown"
    return dict(version=neurosim.__version__, commit=git_commit(where), machine=machine(),
                numba_version=numba_version, numpy_version=numpy.__version__,
                python=platform.python_version())
