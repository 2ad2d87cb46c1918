"""Reuse of the engine's large per-run arrays (docs/decisions.md, 45).

A phase allocates its outputs and drive afresh, ~100-200 MB per LeNet / ConvNet-F phase
at batch 128.  numpy backs arrays of 4 MiB or more with transparent huge pages, and glibc
returns large freed blocks to the system, so every phase paid the kernel's page faults
and the zeroing of 2 MiB pages again: ~0.4 ms/sample of ConvNet-F's backward phase at
2 threads after another framework's step had churned the heap, and ~7 % of LeNet's step
at one thread (``clear_page_erms`` in ``perf``).  :func:`take` hands out an array of the
asked shape and dtype from a cache of earlier ones that nothing else references any more
(CPython reference counts: a live result's views keep their base referenced), else a
new one, which it keeps.  A cached array is never handed out while any result still
refers to it, so results stay valid for as long as they are held.

The cache holds at most :data:`neurosim.config.BUFFER_CACHE_BYTES` (the oldest entries
are dropped first; dropping only forgets the array, its holder keeps it); arrays below
:data:`MIN_BYTES` are not cached.  :func:`clear` empties it.
"""
import sys
import threading

import numpy as np

from . import config

#: arrays smaller than this come from numpy directly (malloc recycles them well).
MIN_BYTES = 1 << 20
_LOCK = threading.Lock()
_CACHE = []          # arrays, oldest first
#: references to a cached array that is free: the cache's list, the loop variable and
#: ``sys.getrefcount``'s own argument.
_FREE_REFS = 3


def take(shape, dtype, zero):
    """An array of ``shape`` and ``dtype``: zeros if ``zero``, else of arbitrary content
    (the caller overwrites every element it reads)."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < MIN_BYTES or config.BUFFER_CACHE_BYTES <= 0:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    out = None
    with _LOCK:
        for i in range(len(_CACHE)):
            a = _CACHE[i]
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) == _FREE_REFS:
                out = _CACHE.pop(i)
                _CACHE.append(out)          # most recently used last
                break
        a = None
        if out is None:
            out = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
            _CACHE.append(out)
            total = sum(a.nbytes for a in _CACHE)
            while total > config.BUFFER_CACHE_BYTES and len(_CACHE) > 1:
                total -= _CACHE.pop(0).nbytes
            if total > config.BUFFER_CACHE_BYTES:
                _CACHE.clear()
            return out
    if zero:
        out.fill(0)
    return out


def clear():
    """Forget every cached array (arrays still held elsewhere stay valid)."""
    with _LOCK:
        _CACHE.clear()


def cached_bytes():
    """Bytes held by the cache (including arrays currently in use)."""
    with _LOCK:
        return sum(a.nbytes for a in _CACHE)
