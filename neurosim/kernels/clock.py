"""A cycle counter for the optional step profile (``NEUROSIM_PROFILE=1``, :data:`.config.PROFILE`).

:func:`_lap` adds the cycles since a previous reading to one named step's accumulator
(``OutArrays.prof[b, k]``, the ``ST_*`` codes of :mod:`.layout`) and returns the new
reading.  In the default build :data:`.config.PROFILE` is the constant False: the body of
:func:`_lap` is a branch on a global constant, which Numba freezes at compile time and
LLVM removes, so the inlined calls in the schedule compile to nothing (no counter read,
no store; ``out.prof`` then has 0 columns and is never touched).

The counter is LLVM's ``llvm.readcyclecounter`` (x86-64: ``rdtsc``, the time-stamp
counter, which ticks at a constant rate independent of frequency scaling on every CPU
with ``constant_tsc``; :data:`.config.PROFILE` refuses other processors).  It is not
serialising: a reading may move by a few tens of cycles against the neighbouring
instructions, far below the length of a step.  :func:`cycles_now` reads it from Python,
so that the caller converts cycles to seconds against ``time.perf_counter``
(:func:`neurosim.engine.cycles_per_second`).

No dense twin in ``tests/reference.py``: this module measures time and computes nothing
on the network; the tests check instead that a profiled build gives exactly the results
of the default one (docs/decisions.md, 75).
"""
import numba
from llvmlite import ir            # Numba's own LLVM builder (a dependency of numba)
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..config import NJIT, NJIT_INLINE, PROFILE


@intrinsic
def _readcyclecounter(typingctx):
    """int64: the processor's cycle counter (``llvm.readcyclecounter``)."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


if numba.config.DISABLE_JIT:     # the coverage run (kernels are Python): nanoseconds
    import time

    def _readcyclecounter():     # noqa: F811 - the interpreted stand-in of the intrinsic
        return time.perf_counter_ns()


@numba.njit(**NJIT)
def cycles_now():
    """The cycle counter now (int64), callable from Python for calibration."""
    return _readcyclecounter()


@numba.njit(**NJIT_INLINE)
def _lap(prof, b, k, c0):
    """Profiled build: add the cycles since ``c0`` to ``prof[b, k]`` and return the counter
    now.  Default build: nothing, returns 0 (removed at compile time)."""
    if PROFILE:
        c1 = _readcyclecounter()
        prof[b, k] += c1 - c0
        return c1
    return 0


@numba.njit(**NJIT_INLINE)
def _start():
    """Profiled build: the counter now (the start of a chain of :func:`_lap`); default: 0."""
    if PROFILE:
        return _readcyclecounter()
    return 0
