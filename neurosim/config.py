"""Central configuration: dtypes, Numba options and test tolerances.

Every ``@numba.njit`` in :mod:`neurosim.kernels` takes its options from :data:`NJIT`
or :data:`NJIT_PARALLEL` (a test greps the kernels for literal flags).  Environment
overrides (read once, at import):

``NEUROSIM_FASTMATH=1``
    enable LLVM fast-math in kernels (off by default: results must be reproducible
    and comparable bit-for-bit with the dense reference).
``NEUROSIM_NO_CACHE=1``
    disable Numba's on-disk compilation cache (on by default so that a second
    process does not pay compile time again).  The cache is keyed by a hash of every
    kernel source, this file, the options below and the numba / numpy versions
    (:data:`neurosim.kernels.CACHE_KEY`), so editing any kernel or option invalidates
    it: there is no need to turn it off after an edit.  Where it lives
    (``neurosim/kernels/__pycache__/nb-<key>``, ``$NUMBA_CACHE_DIR/neurosim-<key>`` or
    ``~/.cache/neurosim/numba-<key>``) is described in :mod:`neurosim.kernels`.
``NEUROSIM_PROFILE=1``
    build the kernels with the step profile (:data:`PROFILE`): every phase then reports
    the time of each named schedule step (``PhaseResult.profile``, brian2's
    ``profile=True``).  A compile-time switch, part of the cache key: the default build
    contains no profiling code at all (docs/decisions.md, 75).  x86-64 only.
``NEUROSIM_MAX_MODEL_MB=<MiB>``
    the largest model a model file may describe (:data:`MAX_MODEL_BYTES`).
``NEUROSIM_MAX_RUN_MB=<MiB>``
    the most memory a run may need by :func:`neurosim.memory.estimate_run_bytes` (the
    model, phase buffers, recordings, gradients, the run file's image;
    :data:`MAX_RUN_BYTES`), checked before the run allocates.
``NEUROSIM_MAX_STEPS=<steps>``, ``NEUROSIM_MAX_DELAY=<steps>``
    the longest phase (forward ``T``, backward ``T_b``, ``simulate --steps``;
    :data:`MAX_STEPS`) and the longest projection delay (:data:`MAX_DELAY`) accepted.
``NEUROSIM_BUFFER_CACHE_MB=<MiB>``
    the most memory kept for reusing the engine's large per-run arrays
    (:data:`BUFFER_CACHE_BYTES`; 0: no reuse).
``OMP_WAIT_POLICY``
    set to ``PASSIVE`` here, at import, unless the user set it (or ``GOMP_SPINCOUNT``):
    the threads of Numba's OpenMP layer (libgomp, used by the ``prange`` kernels) then
    sleep while they wait instead of spinning, so that on a machine shared with other
    busy processes the default thread count is not slower than one thread
    (``benchmarks/bench_contention.py``; results are identical).  It must be in the
    environment before libgomp is loaded (Numba loads it at the first parallel launch);
    it affects every OpenMP library this process loads after ``import neurosim``.
"""
import os
import platform

#: True when neurosim set ``OMP_WAIT_POLICY=PASSIVE`` (the user's own OMP_WAIT_POLICY or
#: GOMP_SPINCOUNT win; docstring above).
OMP_WAIT_POLICY_SET = not os.environ.get("OMP_WAIT_POLICY") and not os.environ.get("GOMP_SPINCOUNT")
if OMP_WAIT_POLICY_SET:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np

#: dtype of potentials, weights and currents unless a network asks for another one.
DEFAULT_DTYPE = np.float32
#: dtypes a network may use.
ALLOWED_DTYPES = (np.float32, np.float64)
#: dtype of CSR ``indices`` (unsigned: Numba then skips its negative-index wrap-around check).
INDEX_DTYPE = np.uint32
#: dtype of CSR ``indptr``.
INDPTR_DTYPE = np.int64

def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2 ** 36


#: the most memory (bytes) a model file may ask for (weights, connectivity, neurons), checked
#: before anything is allocated, so that a typo such as ``shape = [100000000]`` fails at once
#: with a clear error instead of exhausting the machine.  Default: half the physical memory;
#: ``NEUROSIM_MAX_MODEL_MB`` overrides it.
def _env_mib(name, default):
    """Bytes from the environment variable ``name`` given in MiB (a number >= 0), else
    ``default``; anything else is an error that names the variable and the value."""
    v = os.environ.get(name)
    if not v:
        return default
    try:
        mib = float(v)
    except ValueError:
        mib = float("nan")
    if not mib >= 0 or mib == float("inf"):
        raise ValueError(f"environment variable {name}={v!r}: expected a size in MiB, "
                         f"a finite number >= 0 (e.g. {name}=512)")
    return int(mib * 2 ** 20)


def _env_steps(name, default):
    """A whole number of steps >= 1 from the environment variable ``name``, else
    ``default``; anything else is an error that names the variable and the value."""
    v = os.environ.get(name)
    if not v:
        return default
    try:
        n = int(v.strip().replace("_", ""))
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"environment variable {name}={v!r}: expected a whole number of "
                         f"steps >= 1 (e.g. {name}={default})")
    return n


#: messages about malformed environment variables, by name: importing neurosim never fails
#: on them (``neurosim --help`` must work); :func:`neurosim._validate.check_environment`
#: raises the first, and the command line and every guard that reads one call it.
ENV_ERRORS = {}


def _env_or_default(read, name, default):
    try:
        return read(name, default)
    except ValueError as e:
        ENV_ERRORS[name] = str(e)
        return default


def _env_mib_or_default(name, default):
    return _env_or_default(_env_mib, name, default)


MAX_MODEL_BYTES = _env_mib_or_default("NEUROSIM_MAX_MODEL_MB", _physical_memory() // 2)

#: the most memory (bytes) a whole run may need (:func:`neurosim.memory.estimate_run_bytes`:
#: the model and everything the run allocates), checked before the run allocates.
#: Default: three quarters of the physical memory; ``NEUROSIM_MAX_RUN_MB`` overrides it
#: (docs/decisions.md, 76).
MAX_RUN_BYTES = _env_mib_or_default("NEUROSIM_MAX_RUN_MB", _physical_memory() * 3 // 4)

#: the most steps one phase may run: forward ``T``, backward ``T_b``, ``simulate --steps``
#: (``NEUROSIM_MAX_STEPS`` overrides).  400x the longest shipped phase (T_b = 250): a
#: value beyond it is a typo (``T = 1000000000``) that would run for days with no way to
#: bound it (docs/decisions.md, 76).
DEFAULT_MAX_STEPS = 100_000
MAX_STEPS = _env_or_default(_env_steps, "NEUROSIM_MAX_STEPS", DEFAULT_MAX_STEPS)

#: the longest projection delay (steps) a network may have (``NEUROSIM_MAX_DELAY``
#: overrides); each step of delay costs a ring slot per sending neuron and thread.
DEFAULT_MAX_DELAY = 10_000
MAX_DELAY = _env_or_default(_env_steps, "NEUROSIM_MAX_DELAY", DEFAULT_MAX_DELAY)

#: the most memory (bytes) the engine keeps for reusing its large per-run arrays
#: (:mod:`neurosim._buffers`); ``NEUROSIM_BUFFER_CACHE_MB`` overrides it, 0 turns reuse off.
BUFFER_CACHE_BYTES = _env_mib_or_default("NEUROSIM_BUFFER_CACHE_MB",
                                         min(2 ** 31, _physical_memory() // 8))

FASTMATH = os.environ.get("NEUROSIM_FASTMATH", "0") == "1"


def _profile_switch():
    """:data:`PROFILE` from ``NEUROSIM_PROFILE`` ("", "0" or "1"); anything else, or "1"
    on a processor without the x86 time-stamp counter, is recorded in :data:`ENV_ERRORS`
    and leaves the profile off."""
    v = os.environ.get("NEUROSIM_PROFILE", "")
    if v not in ("", "0", "1"):
        ENV_ERRORS["NEUROSIM_PROFILE"] = (f"environment variable NEUROSIM_PROFILE={v!r}: "
                                          "expected 1 (profiled kernels) or 0 (default)")
        return False
    if v == "1" and platform.machine().lower() not in ("x86_64", "amd64"):
        ENV_ERRORS["NEUROSIM_PROFILE"] = (
            f"NEUROSIM_PROFILE=1 needs an x86-64 processor (its time-stamp counter); this "
            f"one is {platform.machine()!r}: unset NEUROSIM_PROFILE")
        return False
    return v == "1"


#: True in the build made with ``NEUROSIM_PROFILE=1``: the kernels time each named step
#: of the schedule (:mod:`neurosim.kernels.clock`).  A global constant of the kernels, so
#: Numba compiles the profiling code away when it is False.
PROFILE = _profile_switch()
CACHE = os.environ.get("NEUROSIM_NO_CACHE", "0") != "1"

#: options of every serial kernel.
NJIT = dict(nogil=True, cache=CACHE, fastmath=FASTMATH, error_model="numpy")
#: options of the per-event / per-population helpers called from the engine's step loop:
#: without Numba's runtime (``_nrt=False``) a call does not incref/decref each of its ~40
#: array arguments (atomic operations that cost more than the work of a small step).
#: Such helpers must not allocate; they are always called from NRT-enabled kernels.
NJIT_NORT = dict(NJIT, _nrt=False)
#: options of a per-neuron helper that must be inlined into the loop that calls it, so that
#: the loop vectorises (Numba-level inlining: LLVM's own inliner gives up on helpers with
#: many arguments, and a call per neuron made the CubaLIF update 3.6x slower).
NJIT_INLINE = dict(NJIT_NORT, inline="always")
#: options of every kernel that uses ``numba.prange``.
NJIT_PARALLEL = dict(NJIT, parallel=True)

#: relative tolerance for float comparisons in tests, as a multiple of the dtype's eps.
TEST_RTOL = {np.float32: 64 * np.finfo(np.float32).eps, np.float64: 64 * np.finfo(np.float64).eps}
