"""Reuse of the engine's large arrays (neurosim/_buffers.py, decision 45): an array is
handed out again only when nothing else refers to it, and results stay valid."""
import numpy as np
import pytest

import neurosim as ns
from neurosim import _buffers, config

BIG = (256, 1024)        # 1 MiB of float32: cached


@pytest.fixture(autouse=True)
def _empty_cache():
    _buffers.clear()
    yield
    _buffers.clear()


def test_reuse_only_when_free_and_zeroed_on_request():
    a = _buffers.take(BIG, np.float32, zero=True)
    assert not a.any()
    a[:] = 7
    v = a[3:5]                       # a view keeps its base referenced
    b = _buffers.take(BIG, np.float32, zero=False)
    assert b is not a and np.all(a == 7)
    del a
    c = _buffers.take(BIG, np.float32, zero=False)
    assert c is not v.base           # the view still holds the first array
    del v, c
    d = _buffers.take(BIG, np.float32, zero=True)
    assert not d.any()               # a reused array is cleared when zeros are asked for
    assert _buffers.take(BIG, np.float64, zero=False).dtype == np.float64
    small = _buffers.take((10,), np.int64, zero=True)
    assert small.shape == (10,) and not small.any()


def test_reused_array_is_the_freed_one():
    a = _buffers.take(BIG, np.int32, zero=True)
    ident = id(a)
    del a
    b = _buffers.take(BIG, np.int32, zero=False)
    assert id(b) == ident


def test_budget_and_switch_off(monkeypatch):
    monkeypatch.setattr(config, "BUFFER_CACHE_BYTES", 3 * 2 ** 20)
    held = [_buffers.take(BIG, np.float32, zero=False) for _ in range(5)]
    assert _buffers.cached_bytes() <= 3 * 2 ** 20
    monkeypatch.setattr(config, "BUFFER_CACHE_BYTES", 0)
    _buffers.clear()
    x = _buffers.take(BIG, np.float32, zero=True)
    assert _buffers.cached_bytes() == 0 and not x.any()
    del held


def test_results_of_consecutive_runs_stay_intact():
    """A held result is not overwritten by the next runs (which reuse freed arrays)."""
    rng = np.random.default_rng(0)
    net = ns.Network(dtype=np.float32)
    net.add_population("in", 64, "input")
    net.add_population("h", 4096, ns.LIF(v_th=1.0, leak=0.9))
    net.add_projection("w", "in", "h", ns.Dense(rng.normal(0, 0.3, (64, 4096))))
    x1, x2 = rng.random((80, 64)), rng.random((80, 64))
    r1 = ns.run_forward(net, 8, inputs={"in": x1})
    c1, v1 = r1.counts["h"].copy(), r1.v_final["h"].copy()
    for _ in range(3):
        r2 = ns.run_forward(net, 8, inputs={"in": x2})
        rb = ns.run_backward(net, r2, {"h": np.ones((80, 4096))}, 5)
    np.testing.assert_array_equal(r1.counts["h"], c1)
    np.testing.assert_array_equal(r1.v_final["h"], v1)
    assert _buffers.cached_bytes() > 0               # the runs did use the cache
    again = ns.run_forward(net, 8, inputs={"in": x1})  # a reused array gives the same result
    np.testing.assert_array_equal(again.counts["h"], c1)
    np.testing.assert_array_equal(again.v_final["h"], v1)
    assert rb.counts["h"].shape == (80, 4096)
