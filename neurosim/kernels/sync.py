"""Atomic operations on int64 arrays, for threads that cooperate inside one kernel call.

Numba has no atomics; these intrinsics emit LLVM's atomic instructions on element ``i``
of a C-contiguous int64 array.  They serve the spin barrier of the neuron-parallel
CubaLIF runner (:func:`.cuba.run_split`): a thread publishes "step t done" with a
release store, the others wait with acquire loads, so everything written before the
store (spike lists, counters) is visible to them after the load.

Each public name is a plain Python function (what runs with ``NUMBA_DISABLE_JIT=1``,
where ``prange`` runs its iterations one after another and no two threads ever meet)
that compiled code replaces by the intrinsic (``overload(..., inline="always")``).
"""
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
import os

from numba.extending import intrinsic, overload

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _ptr(context, builder, aryty, ary, idx, idxty):
    arr = context.make_array(aryty)(context, builder, ary)
    i = context.cast(builder, idx, idxty, types.intp)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [i])


@intrinsic
def _load_acquire(typingctx, arr, i):
    """``arr[i]`` read with acquire ordering (never hoisted out of a spin loop)."""
    sig = types.int64(arr, i)

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_ptr(context, builder, sig.args[0], args[0], args[1],
                                        sig.args[1]), "acquire", 8)
    return sig, codegen


@intrinsic
def _store_release(typingctx, arr, i, v):
    """``arr[i] = v`` with release ordering."""
    sig = types.void(arr, i, types.int64)

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, _ptr(context, builder, sig.args[0], args[0], args[1],
                                       sig.args[1]), "release", 8)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _fetch_add(typingctx, arr, i, v):
    """Atomically ``arr[i] += v``; returns the old value."""
    sig = types.int64(arr, i, types.int64)

    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _ptr(context, builder, sig.args[0], args[0], args[1],
                                              sig.args[1]), val, "seq_cst")
    return sig, codegen


@intrinsic
def _cpu_pause(typingctx):
    """The x86 ``pause`` hint for spin-wait loops (no-op elsewhere)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        if _X86:
            fnty = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                        "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _os_yield(typingctx):
    """``sched_yield()``: give the core away while waiting for a thread that is not
    running (the machine is oversubscribed); linked from the C library."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "sched_yield"), [])
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _compare_swap(typingctx, arr, i, expected, new):
    """Atomically ``arr[i] = new`` if ``arr[i] == expected``; returns whether it did."""
    sig = types.boolean(arr, i, types.int64, types.int64)

    def codegen(context, builder, sig, args):
        cmp = context.cast(builder, args[2], sig.args[2], types.int64)
        val = context.cast(builder, args[3], sig.args[3], types.int64)
        res = builder.cmpxchg(_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1]),
                              cmp, val, "seq_cst", "seq_cst")
        return builder.extract_value(res, 1)
    return sig, codegen


# -- the public names: plain Python, replaced by the intrinsics in compiled code ----------
def load_acquire(arr, i):
    """``arr[i]`` read with acquire ordering (never hoisted out of a spin loop)."""
    return arr[i]


def store_release(arr, i, v):
    """``arr[i] = v`` with release ordering."""
    arr[i] = v


def fetch_add(arr, i, v):
    """Atomically ``arr[i] += v``; returns the old value."""
    old = arr[i]
    arr[i] = old + v
    return old


def cpu_pause():
    """The x86 ``pause`` hint for spin-wait loops (no-op elsewhere)."""


def os_yield():
    """``sched_yield()``: give the core away while waiting for a thread that is not running."""
    os.sched_yield()


def compare_swap(arr, i, expected, new):
    """Atomically ``arr[i] = new`` if ``arr[i] == expected``; returns whether it did."""
    if arr[i] == expected:
        arr[i] = new
        return True
    return False


@overload(load_acquire, inline="always")
def _ol_load_acquire(arr, i):
    return lambda arr, i: _load_acquire(arr, i)


@overload(store_release, inline="always")
def _ol_store_release(arr, i, v):
    return lambda arr, i, v: _store_release(arr, i, v)


@overload(fetch_add, inline="always")
def _ol_fetch_add(arr, i, v):
    return lambda arr, i, v: _fetch_add(arr, i, v)


@overload(cpu_pause, inline="always")
def _ol_cpu_pause():
    return lambda: _cpu_pause()


@overload(os_yield, inline="always")
def _ol_os_yield():
    return lambda: _os_yield()


@overload(compare_swap, inline="always")
def _ol_compare_swap(arr, i, expected, new):
    return lambda arr, i, expected, new: _compare_swap(arr, i, expected, new)
