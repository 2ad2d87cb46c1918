"""The vector row sums and the two conv delivery orders of the engine.

``kernels.simd`` (512-bit vectors with masked loads / stores), ``kernels.scatter.rows_acc``
(the rows of a group of events summed in registers) and the offset-major / receiver-major
conv deliveries of ``kernels.deliver`` must give the documented sums exactly: every event
added one by one, in increasing sender index, one rounding per addition
(docs/hdf5-schema.md, "Arithmetic").  Values here are not dyadic, so a different order
of additions would show.
"""
import numba
import numpy as np
import pytest

import neurosim as ns
import reference
from conftest import needs_jit
from neurosim.connectivity.conv import receiver_table, sender_table
from neurosim.kernels import deliver as D
from neurosim.kernels.layout import K_CONV_DOWN, K_CONV_UP, aligned_zeros, align_up, ALIGN
from neurosim.kernels.scatter import rows_acc
from neurosim.kernels.simd import vadd, vlanes, vloadm, vmul, vsplat, vstorem

DTYPES = (np.float32, np.float64)


@numba.njit
def _vec_ops(a, b, out, i, n, x):
    v = vloadm(a, np.uint64(i), n)
    w = vloadm(b, np.uint64(i), n)
    vstorem(out, np.uint64(i), vadd(v, vmul(w, vsplat(x, a))), n)
    return vlanes(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [-3, 0, 1, 5, 7, 8, 15, 16, 17, 40])
def test_vector_ops_touch_only_their_lanes(dtype, n):
    rng = np.random.default_rng(n + 10)
    a = rng.normal(size=64).astype(dtype)
    b = rng.normal(size=64).astype(dtype)
    out = np.full(64, 7.0, dtype)
    x = dtype(rng.normal())
    lanes = _vec_ops(a, b, out, 3, n, x)
    assert lanes == 64 // np.dtype(dtype).itemsize
    k = max(0, min(n, lanes))
    want = np.full(64, 7.0, dtype)
    want[3:3 + k] = a[3:3 + k] + b[3:3 + k] * x            # one rounding each, in the dtype
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Cr", [1, 5, 8, 16, 17, 31, 40, 64, 65, 100, 130])
@pytest.mark.parametrize("weighted", [False, True])
def test_rows_acc_adds_event_by_event(dtype, Cr, weighted):
    rng = np.random.default_rng(Cr)
    n_rows = 12
    W = rng.normal(size=n_rows * Cr + 3).astype(dtype)
    for ng in (0, 1, 2, 3, 4, 5, 9):
        buf = rng.normal(size=Cr + 11).astype(dtype)
        gch = rng.integers(0, n_rows, 12).astype(np.int64)
        gval = rng.normal(size=12).astype(dtype)
        want = reference.rows_acc(buf, 4, W, 3, Cr, gch, gval, 2, ng, weighted)
        rows_acc(buf, 4, W, 3, Cr, gch, gval, 2, ng, weighted)
        np.testing.assert_array_equal(buf, want, err_msg=f"Cr {Cr}, {ng} rows")


def test_aligned_arrays():
    for dtype in DTYPES:
        for n in (0, 1, 17, 1000):
            a = aligned_zeros(n, dtype)
            assert a.shape == (n,) and a.dtype == dtype and not a.any()
            assert n == 0 or a.ctypes.data % ALIGN == 0
        assert align_up(1, dtype) * np.dtype(dtype).itemsize == ALIGN
        assert align_up(0, dtype) == 0
    net = ns.Network(dtype=np.float32)
    net.add_population("s", (3, 5, 5), "source")
    net.add_population("a", (7, 5, 5), ns.LIF())
    net.add_population("b", 9, ns.LIF())
    net.add_projection("c", "s", "a", ns.Conv2d(np.ones((7, 3, 3, 3)), pre_shape=(3, 5, 5), padding=1))
    net.add_projection("d", "a", "b", ns.Dense(np.ones((175, 9))))
    prog = ns.network.compile_program(net)
    A = prog.arrays
    assert A.weights.ctypes.data % ALIGN == 0
    for q in range(len(prog.proj_names)):
        assert A.proj_woff[q] * 4 % ALIGN == 0 and A.proj_boff[q] * 4 % ALIGN == 0


@pytest.mark.parametrize("make", [
    lambda: ns.Conv2d(np.zeros((2, 3, 3, 3)), pre_shape=(3, 6, 7), padding=1),
    lambda: ns.Conv2d(np.zeros((2, 3, 5, 5)), pre_shape=(3, 9, 8), stride=2, padding=2),
    lambda: ns.Conv2d(np.zeros((2, 3, 2, 3)), pre_shape=(3, 5, 6), stride=2),
    lambda: ns.ConvTranspose2d(np.zeros((3, 2, 3, 3)), pre_shape=(3, 4, 5), stride=2,
                               padding=1, output_padding=1),
    lambda: ns.ConvTranspose2d(np.zeros((3, 2, 2, 3)), pre_shape=(3, 4, 3), stride=1),
])
def test_receiver_and_sender_tables(make):
    pr = make()
    for backward in (False, True):
        lay = pr.kernel_layout(backward)
        geo = lay.geo
        rt = receiver_table(lay.kind, geo)
        S, R = int(geo[1] * geo[2]), int(geo[4] * geo[5])
        assert rt.shape == (int(geo[6] * geo[7]), S)
        if not backward:          # the forward walk of offset_targets, site by site
            ot = pr.offset_targets()[::pr.pre_shape[0]]             # channel 0 of each site
            np.testing.assert_array_equal(rt, ot.T)
        st = sender_table(rt, R)
        k, s = np.nonzero(rt >= 0)
        np.testing.assert_array_equal(st[k, rt[k, s]], s)
        assert (st >= 0).sum() == (rt >= 0).sum()
    with pytest.raises(ValueError):
        receiver_table(99, geo)


def _uses_gather(n_events_per_site, nk, R):
    """The engine's choice for one delivery (kernels.deliver, GATHER_GROUP / _PAIRS)."""
    ev = np.asarray(n_events_per_site)
    na = int((ev > 0).sum())
    return na > 0 and ev.sum() < D.GATHER_GROUP * na and na * nk >= D.GATHER_PAIRS * R


def _conv_net(dtype, Cs, Co, H, k, stride, pad, transpose=False, seed=0):
    rng = np.random.default_rng(seed)
    net = ns.Network(dtype=dtype)
    net.add_population("s", (Cs, H, H), "source")
    if transpose:
        pr = ns.ConvTranspose2d(rng.normal(0, 0.4, (Cs, Co, k, k)), pre_shape=(Cs, H, H),
                                stride=stride, padding=pad, bias=rng.normal(0, 0.1, Co))
    else:
        pr = ns.Conv2d(rng.normal(0, 0.4, (Co, Cs, k, k)), pre_shape=(Cs, H, H), stride=stride,
                       padding=pad, bias=rng.normal(0, 0.1, Co))
    net.add_population("h", pr.post_shape, ns.LIF(v_th=0.7))
    net.add_projection("w", "s", "h", pr)
    # a conv back to a second layer, so that the backward phase delivers through conv
    # projections in both directions of the walk
    net.add_population("o", (5,) + pr.post_shape[1:], ns.LIF(v_th=0.5))
    net.add_projection("v", "h", "o", ns.Conv2d(rng.normal(0, 0.4, (5, Co, 3, 3)),
                                                 pre_shape=pr.post_shape, padding=1))
    return net, pr


@needs_jit("the delivery order is a property of the compiled engine")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", [
    (20, 40, 9, 5, 1, 2, False, {True, False}),   # LeNet-like: 40-wide rows (two vectors + a masked one)
    (24, 70, 8, 5, 2, 2, False, {True, False}),   # rows of 70: four vectors and a short one
    (16, 33, 8, 3, 1, 0, True, {True, False}),    # conv-transpose (senders heard in reverse offset order)
    (16, 20, 5, 3, 2, 1, True, {False}),          # SPIDE's decoder geometry: few senders per receiver
])
def test_both_conv_delivery_orders_match_reference(dtype, geometry):
    Cs, Co, H, k, st, pad, tr, expect = geometry
    net, pr = _conv_net(dtype, Cs, Co, H, k, st, pad, tr)
    T, B = 6, 2
    rng = np.random.default_rng(1)
    n = Cs * H * H
    sp = np.zeros((B, T, n), bool)
    # even steps: half of every site's channels (big groups: offset-major); odd steps:
    # one channel at every site (small groups, every receiver reached: receiver-major
    # where enough senders reach each receiver)
    sp[:, 0::2] = rng.random((B, (T + 1) // 2, n)) < 0.5
    one = np.zeros((H * H, Cs), bool)
    one[np.arange(H * H), rng.integers(0, Cs, H * H)] = True
    sp[:, 1::2] = one.reshape(-1)
    lay = pr.kernel_layout(False)
    nk, R = int(lay.geo[6] * lay.geo[7]), int(lay.geo[4] * lay.geo[5])
    per_site = sp.reshape(B, T, H * H, Cs).sum(-1)
    paths = {_uses_gather(per_site[b, t], nk, R) for b in range(B) for t in range(T)}
    assert paths == expect, "the delivery orders this case is meant to exercise"
    fwd = ns.run_forward(net, T, spikes={"s": sp}, record=True, n_threads=1)
    ref = reference.run_phase(net, T, spikes={"s": sp})
    for name in ("h", "o"):
        np.testing.assert_array_equal(fwd.spikes[name], ref["spikes"][name], err_msg=name)
        np.testing.assert_array_equal(fwd.v_final[name], ref["v_final"][name], err_msg=name)
    for q in ("w", "v"):
        np.testing.assert_array_equal(fwd.sent[q], ref["sent"][q], err_msg=q)
    assert fwd.counts["h"].sum() > 0 and fwd.counts["o"].sum() > 0
    grad = {"o": rng.normal(0, 3.0, (B, net.populations["o"].n))}
    bwd = ns.run_backward(net, fwd, grad, 2 * T, record=True, n_threads=1)
    refb = reference.run_phase(net, 2 * T, backward=True, grad=grad, forward=ref)
    for name in ("h", "o"):
        np.testing.assert_array_equal(bwd.spikes[name], refb["spikes"][name], err_msg=name)
        np.testing.assert_array_equal(bwd.v_final[name], refb["v_final"][name], err_msg=name)
    np.testing.assert_array_equal(bwd.sent["v"], refb["sent"]["v"])
    np.testing.assert_array_equal(bwd.sent_neg["v"], refb["sent_neg"]["v"])
