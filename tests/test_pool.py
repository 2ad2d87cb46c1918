"""Sample ranges on threads (neurosim._pool): coverage, order of results, errors."""
import threading

import pytest

from neurosim import _pool


@pytest.mark.parametrize("n,k", [(1, 1), (1, 4), (7, 3), (128, 8), (5, 5), (3, 10)])
def test_chunks_cover_in_order(n, k):
    parts = _pool.chunks(n, k)
    assert len(parts) == max(1, min(n, k))
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a < b for a, b in parts)
    assert all(parts[i][1] == parts[i + 1][0] for i in range(len(parts) - 1))
    sizes = [b - a for a, b in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_run_chunks_calls_every_range_once(threads):
    seen, lock = [], threading.Lock()

    def fn(c, a, b):
        with lock:
            seen.append((c, a, b))
    _pool.run_chunks(fn, 23, threads, 6)
    assert sorted(seen) == [(c, a, b) for c, (a, b) in enumerate(_pool.chunks(23, 6))]


@pytest.mark.parametrize("threads", [1, 2])
def test_run_chunks_reraises_after_all_ranges_ran(threads):
    ran = []

    def fn(c, a, b):
        ran.append(c)
        if c == 1:
            raise ValueError("chunk 1 failed")
    with pytest.raises(ValueError, match="chunk 1 failed"):
        _pool.run_chunks(fn, 8, threads, 4)
    assert sorted(ran) == ([0, 1] if threads == 1 else [0, 1, 2, 3])
