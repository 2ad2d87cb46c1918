"""float32 runs are bit-for-bit reproducible: the lazy leak, the refractory path and the
block path all compute in the network's dtype, in the documented order.

The two minimal cases found by a user (issue: "bit-exact float32"), then ties at the
threshold constructed on purpose, each checked against the dense twin
(``tests/reference.py``, which follows docs/hdf5-schema.md, not the kernels) and against
the other engine paths that must agree with it.
"""
import numpy as np
import pytest

import neurosim as ns
import reference
from test_engine_reference import _assert_phase_equal

F32 = np.float32


def _leaky_net(dtype):
    net = ns.Network(dtype=dtype)
    net.add_population("src", 1, "source")
    net.add_population("p", 4, ns.LIF(v_th=1.0, leak=0.9))
    net.add_projection("w", "src", "p", ns.Dense(np.full((1, 4), 0.7797698974609375)))
    return net


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lazy_leak_equals_leak_every_step(dtype):
    """Case 1: a source spikes at steps 0 and 12 into 4 LIF neurons (leak 0.9, T = 20).
    A zero per-step current updates the neurons at every step; the same zeros as a
    constant current leave them untouched between the events (lazy catch-up leak).  The
    two must be identical, and equal to the twin; before the fix, float32 catch-up was
    computed in float64 and the neurons never spiked."""
    T = 20
    net = _leaky_net(dtype)
    s = np.zeros((1, T, 1), bool)
    s[0, [0, 12], 0] = True
    per_step = ns.run_forward(net, T, spikes={"src": s}, currents={"p": np.zeros((1, T, 4))},
                              record=True)
    const = ns.run_forward(net, T, spikes={"src": s}, currents={"p": np.zeros((1, 4))},
                           record=True)
    np.testing.assert_array_equal(per_step.spikes["p"], const.spikes["p"])
    np.testing.assert_array_equal(per_step.v_final["p"], const.v_final["p"])
    ref = reference.run_phase(net, T, spikes={"src": s}, currents={"p": np.zeros((1, 4))})
    np.testing.assert_array_equal(const.spikes["p"], ref["spikes"]["p"])
    np.testing.assert_array_equal(const.v_final["p"], ref["v_final"]["p"])
    # the trajectory written out by hand in the dtype (u += I; spike; u -= 2; u *= λ)
    d = np.dtype(dtype).type
    u, spk = d(0), []
    for t in range(T):
        u = u + (d(0.7797698974609375) if t in (0, 12) else d(0))
        if u >= d(1):
            spk.append(t)
            u = u - d(2)
        u = u * d(0.9)
    assert list(np.flatnonzero(const.spikes["p"][0, :, 0])) == spk
    np.testing.assert_array_equal(const.v_final["p"][0], np.full(4, u, dtype))
    # (w λ^12 + w lies just below θ = 1 when λ is rounded to the dtype and every product
    # is rounded: no spike, in both dtypes; the old float64 catch-up gave other values)


@pytest.mark.parametrize("t_ref", [0, 1])
def test_float32_sum_at_threshold_spikes_on_every_path(t_ref):
    """Case 2: two sources add 0.25 - 2^-26 at step 0 and 0.75 at step 1.  In float32
    the potential is exactly 1.0 = v_th after step 1 (0.25 - 2^-26 + 0.75 rounds up), so
    the neuron spikes at step 1 whether or not it can be refractory (the refractory
    update path was computing u + I in float64, where the sum stays below 1)."""
    net = ns.Network(dtype=F32)
    net.add_population("a", 1, "source")
    net.add_population("b", 1, "source")
    net.add_population("p", 1, ns.LIF(v_th=1.0, t_ref=t_ref))
    net.add_projection("wa", "a", "p", ns.Dense(np.array([[0.25 - 2.0 ** -26]])))
    net.add_projection("wb", "b", "p", ns.Dense(np.array([[0.75]])))
    T = 4
    sa = np.zeros((1, T, 1), bool)
    sb = np.zeros((1, T, 1), bool)
    sa[0, 0, 0] = sb[0, 1, 0] = True
    res = ns.run_forward(net, T, spikes={"a": sa, "b": sb}, record=True)
    assert list(np.flatnonzero(res.spikes["p"][0, :, 0])) == [1]
    ref = reference.run_phase(net, T, spikes={"a": sa, "b": sb})
    np.testing.assert_array_equal(res.spikes["p"], ref["spikes"]["p"])
    np.testing.assert_array_equal(res.v_final["p"], ref["v_final"]["p"])
    assert res.v_final["p"][0, 0] == F32(-1.0)


def _tie_net(dtype, t_ref, leak, reset, n=64):
    """Weights chosen so that float32 sums land exactly on the threshold, just below or
    just above it, depending on the summation order and the dtype."""
    rng = np.random.default_rng(7)
    net = ns.Network(dtype=dtype)
    net.add_population("src", 6, "source")
    net.add_population("h", n, ns.LIF(v_th=1.0, leak=leak, t_ref=t_ref, reset=reset))
    net.add_population("o", 5, ns.LIF(v_th=0.5, leak=leak))
    base = np.array([0.25 - 2.0 ** -26, 0.75, 1.0 / 3.0, 2.0 / 3.0, 0.1, 0.9])
    W = base[:, None] + rng.integers(-3, 4, (6, n)) * 2.0 ** -25
    net.add_projection("w1", "src", "h", ns.Dense(W))
    net.add_projection("w2", "h", "o", ns.Dense(rng.normal(0.0, 0.3, (n, 5)), bias=np.full(5, 0.05)))
    net.add_projection("fb", "o", "h", ns.Dense(rng.normal(0.0, 0.1, (5, n)), delay=1))
    return net


@pytest.mark.parametrize("reset", ["subtract", "value"])
@pytest.mark.parametrize("leak", [1.0, 0.95])
@pytest.mark.parametrize("t_ref", [0, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constructed_ties_match_twin_exactly(dtype, t_ref, leak, reset):
    """Ties at threshold on purpose, random non-dyadic weights, leak, refractoriness,
    constant and per-step currents, feedback: both phases equal the twin exactly."""
    net = _tie_net(dtype, t_ref, leak, reset)
    T, B = 25, 3
    rng = np.random.default_rng(11)
    s = rng.random((B, T, 6)) < 0.3
    cur = {"h": rng.normal(0.0, 0.05, (B, T, 64)), "o": rng.normal(0.0, 0.05, (B, 5))}
    fwd = ns.run_forward(net, T, spikes={"src": s}, currents=cur, record=True)
    ref = reference.run_phase(net, T, spikes={"src": s}, currents=cur)
    _assert_phase_equal(fwd, ref, f"ties {dtype.__name__} t_ref={t_ref} leak={leak}")
    assert sum(int(c.sum()) for c in fwd.counts.values()) > 0
    if t_ref == 0 and reset == "subtract":
        g = {"o": rng.normal(0.0, 0.3, (B, 5))}
        bwd = ns.run_backward(net, fwd, g, 40, record=True)
        refb = reference.run_phase(net, 40, backward=True, grad=g, forward=ref)
        _assert_phase_equal(bwd, refb, f"ties backward {dtype.__name__}")


def test_block_site_and_lazy_paths_agree_in_float32():
    """The same population updated by the per-site path (touched sites), the vectorised
    block (busy) and densely every step (per-step current) gives identical results."""
    rng = np.random.default_rng(3)
    net = ns.Network(dtype=F32)
    net.add_population("src", 40, "source")
    net.add_population("p", 200, ns.LIF(v_th=0.7, leak=0.93))
    net.add_projection("w", "src", "p",
                       ns.Sparse.fixed_probability(40, 200, 0.05, weight=0.3137, seed=1))
    T = 30
    runs = []
    for p_in in (0.02, 0.5):           # few touched sites, then most of them (block path)
        s = rng.random((2, T, 40)) < p_in
        a = ns.run_forward(net, T, spikes={"src": s}, record=True)
        b = ns.run_forward(net, T, spikes={"src": s}, currents={"p": np.zeros((2, T, 200))},
                           record=True)
        np.testing.assert_array_equal(a.spikes["p"], b.spikes["p"])
        np.testing.assert_array_equal(a.v_final["p"], b.v_final["p"])
        ref = reference.run_phase(net, T, spikes={"src": s})
        np.testing.assert_array_equal(a.v_final["p"], ref["v_final"]["p"])
        runs.append(int(a.counts["p"].sum()))
    assert runs[1] > runs[0] > 0
