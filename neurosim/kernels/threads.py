"""Thread control for the parallel kernels (kept here: only kernels/ imports numba)."""
import numba


def max_threads():
    """Largest thread count Numba was started with (NUMBA_NUM_THREADS)."""
    return numba.config.NUMBA_NUM_THREADS


def get_threads():
    return numba.get_num_threads()


def set_threads(n):
    numba.set_num_threads(n)
