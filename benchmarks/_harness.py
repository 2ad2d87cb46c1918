"""Shared benchmark helpers: thread-pinned worker processes, timing, provenance, JSON lines.

Thread control (decided once, here)
-----------------------------------
Every thread count runs in a **fresh worker process** whose environment sets
``NUMBA_NUM_THREADS``, ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS``
to that count before numpy or numba is imported (:func:`run_workers`).  This is the only
way that pins *both* Numba's pool and whatever BLAS numpy was built with (numpy's BLAS
reads its variable once, at load time), and it needs no optional dependency.
``threadpoolctl``, when installed, is used only to *check* and record the BLAS pool size
(:func:`thread_info`); Numba's is checked with ``numba.get_num_threads()``.

By default the workers also set ``NEUROSIM_NO_CACHE=1`` so that Numba's on-disk cache is
off and the recorded ``compile_s`` is a real compilation, not a cache load.

Timing
------
:func:`time_it` makes one untimed warm-up call (compilation), then ``n_runs`` timed calls
with :func:`time.perf_counter`; medians are the headline (the machine is shared and
noisy), min and max are kept.

Records
-------
:func:`record` appends one JSON object per line to ``benchmarks/results/<bench>.jsonl``
with the keys listed in :data:`RECORD_KEYS` (plus ``goal`` when the case has one).
Nobody types numbers into docs: ``python -m benchmarks.report`` regenerates the README
table from these files.
"""
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: where records go; ``NEUROSIM_BENCH_RESULTS`` redirects them (trial runs, tests).
RESULTS_DIR = Path(os.environ.get("NEUROSIM_BENCH_RESULTS") or BENCH_DIR / "results")

#: environment variables that pin the thread pools of Numba and of numpy's BLAS.
THREAD_ENV_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "MKL_NUM_THREADS")
#: keys every record carries, in this order.
RECORD_KEYS = ("bench", "case", "impl", "threads", "batch", "metric", "unit", "median", "min",
               "max", "n_runs", "version", "commit", "machine", "date", "numba_version",
               "numpy_version", "python", "dtype", "seed", "goal", "extra", "cpu")

_ENV_PROVENANCE = "NEUROSIM_BENCH_PROVENANCE"   # JSON, set by the parent for its workers
_ENV_THREADS = "NEUROSIM_BENCH_THREADS"         # thread count of a worker process


# ---------------------------------------------------------------------------------------
# provenance
def git_commit():
    """``git rev-parse --short HEAD``, with ``+dirty`` when the work tree has changes
    outside ``benchmarks/results/`` (:func:`neurosim.experiments.provenance.git_commit`)."""
    from neurosim.experiments.provenance import git_commit as commit
    return commit(REPO_ROOT)


def llvm_target():
    """What Numba compiles for: LLVM's host CPU name and its SIMD features, or the
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` overrides when set.

    Returns ``dict(llvm_cpu, llvm_simd_features, numba_cpu_name, numba_cpu_features)``:
    ``llvm_simd_features`` lists the enabled ``avx*`` / ``sse*`` / ``fma`` / ``neon``
    features of the host (the full feature string is long); the ``numba_*`` entries are
    None unless overridden."""
    import numba
    from llvmlite import binding as ll
    try:
        feats = ll.get_host_cpu_features().flatten().split(",")
    except RuntimeError:              # pragma: no cover - LLVM cannot tell on this host
        feats = []
    simd = sorted(f[1:] for f in feats if f.startswith("+") and f[1:].startswith(
        ("avx", "sse", "fma", "neon", "sve")))
    return dict(llvm_cpu=ll.get_host_cpu_name(), llvm_simd_features=simd,
                numba_cpu_name=numba.config.CPU_NAME, numba_cpu_features=numba.config.CPU_FEATURES)


def machine():
    """CPU model, family, widest SIMD level, vector width, LLVM target and usable cores
    (:func:`neurosim.experiments.provenance.machine` plus :func:`llvm_target`)."""
    from neurosim.experiments.provenance import machine as which
    t = llvm_target()
    return which(llvm_cpu=t["numba_cpu_name"] or t["llvm_cpu"])


_PROVENANCE = None


def provenance():
    """Run-constant fields of a record (computed once; workers inherit the parent's):
    :func:`neurosim.experiments.provenance.provenance` with the LLVM target
    (:func:`llvm_target`) in ``cpu`` and in the ``machine`` line."""
    global _PROVENANCE
    if _PROVENANCE is None:
        env = os.environ.get(_ENV_PROVENANCE)
        if env:
            _PROVENANCE = json.loads(env)
        else:
            from neurosim.experiments.provenance import machine as which
            from neurosim.experiments.provenance import provenance as record
            _PROVENANCE = record(REPO_ROOT)
            target = llvm_target()
            _PROVENANCE["cpu"] = dict(_PROVENANCE["cpu"], **target)
            _PROVENANCE["machine"] = which(_PROVENANCE["cpu"], llvm_cpu=target["numba_cpu_name"]
                                           or target["llvm_cpu"])
    return _PROVENANCE


# ---------------------------------------------------------------------------------------
# threads
def parse_threads(text):
    """``"1,2"`` -> ``[1, 2]``."""
    try:
        out = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"--threads must be a comma-separated list of integers, got {text!r}")
    if not out or min(out) < 1:
        raise SystemExit(f"--threads needs positive thread counts, got {text!r}")
    return out


def thread_env(n, *, cache=False, base=None):
    """Environment of a worker process pinned to ``n`` threads."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_ENV_VARS:
        env[var] = str(n)
    env[_ENV_THREADS] = str(n)
    if not cache:
        env["NEUROSIM_NO_CACHE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def worker_threads():
    """Thread count of this worker process, or None in the parent process."""
    v = os.environ.get(_ENV_THREADS)
    return int(v) if v else None


def run_workers(module, thread_counts, args=(), *, cache=False):
    """Run ``python -m module *args`` once per thread count, each in a fresh process.

    Returns the list of exit codes (the caller decides whether a failure is fatal)."""
    prov = provenance()
    codes = []
    for n in thread_counts:
        env = thread_env(n, cache=cache)
        env[_ENV_PROVENANCE] = json.dumps(prov)
        print(f"[bench] {module}: worker with {n} thread(s)", file=sys.stderr, flush=True)
        codes.append(subprocess.run([sys.executable, "-m", module, *args], env=env,
                                    cwd=REPO_ROOT).returncode)
    return codes


def thread_info():
    """Thread pools actually in use: Numba's and (via threadpoolctl, if installed) BLAS's."""
    import numba
    info = dict(numba_threads=numba.get_num_threads(),
                numba_max_threads=numba.config.NUMBA_NUM_THREADS,
                env={v: os.environ.get(v) for v in THREAD_ENV_VARS})
    try:
        import threadpoolctl
    except ImportError:
        info["blas_threads"] = None
    else:
        pools = threadpoolctl.threadpool_info()
        info["blas_threads"] = {p.get("internal_api", "?"): p.get("num_threads") for p in pools}
    return info


def check_threads(n):
    """Fail loudly if the pools of this worker are not pinned to ``n`` threads."""
    info = thread_info()
    if info["numba_threads"] != n:
        raise RuntimeError(f"worker wanted {n} Numba threads, has {info['numba_threads']}")
    for api, k in (info["blas_threads"] or {}).items():
        if k != n:
            raise RuntimeError(f"worker wanted {n} {api} threads, has {k}")
    return info


# ---------------------------------------------------------------------------------------
# timing
class Timing(NamedTuple):
    """Wall times of the timed calls (s) and of the untimed warm-up call."""
    times: list
    first_s: float

    @property
    def median(self):
        return statistics.median(self.times)

    @property
    def min(self):
        return min(self.times)

    @property
    def max(self):
        return max(self.times)

    @property
    def n_runs(self):
        return len(self.times)

    def stats(self, scale=1.0):
        """``dict(median, min, max, n_runs)`` of ``time * scale`` (e.g. s per sample)."""
        return dict(median=self.median * scale, min=self.min * scale, max=self.max * scale,
                    n_runs=self.n_runs)

    def rate(self, work):
        """``dict(median, min, max, n_runs)`` of ``work / time`` (e.g. events per second)."""
        rates = [work / t for t in self.times]
        return dict(median=statistics.median(rates), min=min(rates), max=max(rates),
                    n_runs=self.n_runs)


def time_it(fn, n_runs, *, warmup=True):
    """Call ``fn()`` once untimed (unless ``warmup`` is False), then ``n_runs`` times timed."""
    first = float("nan")
    if warmup:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    times = []
    for _ in range(n_runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return Timing(times, first)


def reps_for(target_s, one_call_s, low=1):
    """How many repetitions of a ``one_call_s`` body make a timed call of ``target_s``."""
    if not one_call_s > 0:
        return low
    return max(low, int(round(target_s / one_call_s)))


# ---------------------------------------------------------------------------------------
# records
def _jsonable(x):
    import numpy as np
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (set, tuple)):
        return list(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def record(bench, case, impl, metric, unit, *, median, min, max, n_runs, threads, batch,
           dtype=None, seed=None, goal=None, extra=None, path=None):
    """Append one record to ``benchmarks/results/<bench>.jsonl`` (or ``path``); return it."""
    import numpy as np
    rec = dict(bench=bench, case=case, impl=impl, threads=int(threads), batch=int(batch),
               metric=metric, unit=unit, median=float(median), min=float(min), max=float(max),
               n_runs=int(n_runs))
    rec.update(provenance())
    rec["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rec["dtype"] = None if dtype is None else np.dtype(dtype).name
    rec["seed"] = seed
    rec["goal"] = goal
    rec["extra"] = dict(extra or {})
    ordered = {k: rec[k] for k in RECORD_KEYS if k in rec}
    ordered.update({k: v for k, v in rec.items() if k not in ordered})
    path = Path(path) if path is not None else RESULTS_DIR / f"{bench}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(ordered, default=_jsonable, sort_keys=False)
    with open(path, "a") as f:
        f.write(line + "\n")
    print(f"[bench] {bench:>12s} {case:<11s} {impl:<12s} t={threads} {metric:<24s} "
          f"median {median:.4g} {unit} (min {min:.4g}, max {max:.4g}, n={n_runs})",
          file=sys.stderr, flush=True)
    return ordered


def load_records(paths=None):
    """All records of the given JSON-lines files (default: every ``results/*.jsonl``)."""
    paths = sorted(RESULTS_DIR.glob("*.jsonl")) if paths is None else [Path(p) for p in paths]
    out = []
    for p in paths:
        with open(p) as f:
            for i, line in enumerate(f):
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}:{i + 1}: not a JSON object ({e})") from None
    return out
