"""BLAS on one thread while neurosim simulates or trains (docs/decisions.md, 44).

The BLAS calls of a training step are small (the readout's ``[B, n] @ [n, K]`` products,
a few microseconds), but OpenBLAS wakes its worker threads for them, and the workers then
busy-wait for more work for a while: on a 2-core machine they took a core from the
engine's threads during the backward phase that follows the readout (ConvNet-F's backward
phase 1.1 ms/sample with one BLAS thread, ~1.4 ms with the default, at 2 engine threads).
:func:`single_threaded` limits every BLAS library loaded in the process to one thread for
the duration of a ``with`` block (threadpoolctl) and restores the previous limits after
it; nested and concurrent blocks share one limit, set by the first to enter and restored
by the last to leave.  The engine's own thread count (``n_threads``) is unaffected.
"""
import contextlib
import threading

_LOCK = threading.Lock()
_state = {"depth": 0, "limiter": None, "controller": None}


def _controller():
    if _state["controller"] is None:
        from threadpoolctl import ThreadpoolController
        _state["controller"] = ThreadpoolController()
    return _state["controller"]


@contextlib.contextmanager
def single_threaded():
    """Run the block with every BLAS library on one thread (restored afterwards)."""
    with _LOCK:
        if _state["depth"] == 0:
            _state["limiter"] = _controller().limit(limits=1, user_api="blas")
        _state["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                _state["limiter"].restore_original_limits()
                _state["limiter"] = None
