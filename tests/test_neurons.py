"""Kernels against their same-named dense twins (STYLE 7.4), plus analytic / golden checks.

Case grid: sizes 1x1, 7x5, 50x40; densities 0, 0.05, 1; no / all / random spikes;
float32 and float64.  Spike indices and synop counts are compared exactly; floats with
the project's eps-scaled tolerance (``config.TEST_RTOL``) via ``conftest.assert_close``.
"""
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg

import neurosim as ns
import reference
from conftest import assert_close
from neurosim.connectivity import check_csr, kernel_table
from neurosim.kernels import neurons as kn
from neurosim.kernels import scatter as ks
from neurosim.kernels.engine import apply_map as k_apply_map

SIZES = [(1, 1), (7, 5), (50, 40)]
DENSITIES = [0.0, 0.05, 1.0]
SPIKES = ["none", "all", "random"]
DTYPES = [np.float32, np.float64]


def _spike_idx(kind, n, rng):
    if kind == "none":
        return np.zeros(0, np.int64)
    if kind == "all":
        return np.arange(n, dtype=np.int64)
    return np.flatnonzero(rng.random(n) < 0.3).astype(np.int64)


def _edges(n_pre, n_post, density, rng):
    """One random edge list (self-connections possible, empty rows, a few duplicates)."""
    pre, post = np.nonzero(rng.random((n_pre, n_post)) < density)
    if pre.size and density < 1:
        dup = rng.choice(pre.size, size=max(1, pre.size // 10))
        pre, post = np.concatenate([pre, pre[dup]]), np.concatenate([post, post[dup]])
    w = rng.normal(0, 1, pre.size)
    return pre, post, w


def _edge_forms(n_pre, n_post, density, rng):
    """The same edge list as a CSR projection, a dense matrix and a multiplicity matrix."""
    pre, post, w = _edges(n_pre, n_post, density, rng)
    pr = ns.Sparse.from_edges(pre, post, w, pre_shape=n_pre, post_shape=n_post)
    check_csr(pr.indptr, pr.indices, n_pre, n_post)
    for j in range(n_pre):                       # from_edges promises rows sorted by post
        row = pr.indices[pr.indptr[j]:pr.indptr[j + 1]]
        assert np.all(np.diff(row.astype(np.int64)) >= 0)
    W = np.zeros((n_pre, n_post))
    np.add.at(W, (pre, post), w)
    S = np.zeros((n_pre, n_post), np.int64)
    np.add.at(S, (pre, post), 1)
    return pr, W, S


# ---------------------------------------------------------------------------------------
# propagation kernels
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spikes", SPIKES)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("size", SIZES)
def test_csr_and_dense_propagate_match_twins(size, density, spikes, dtype):
    rng = np.random.default_rng(hash((size, density, spikes)) % 2 ** 32)
    n_pre, n_post = size
    pr, W, S = _edge_forms(n_pre, n_post, density, rng)
    idx = _spike_idx(spikes, n_pre, rng)
    out0 = rng.normal(0, 1, n_post).astype(dtype)
    scale = np.abs(out0) + np.bincount(idx, minlength=n_pre) @ np.abs(W) + 1.0

    o_csr = out0.copy()
    n_csr = ks.csr_propagate(idx, pr.indptr, pr.indices, pr.weight.astype(dtype), o_csr)
    o_csr_ref = out0.copy()
    n_csr_ref = reference.csr_propagate(idx, pr.indptr, pr.indices, pr.weight.astype(dtype), o_csr_ref)
    o_den = out0.copy()
    n_den = ks.dense_propagate(idx, W.astype(dtype), o_den)
    o_den_ref = out0.copy()
    n_den_ref = reference.dense_propagate(idx, W.astype(dtype), o_den_ref)

    # synop counts: exact
    assert n_csr == n_csr_ref == reference.count_synops(S, idx) == int(pr.out_degree()[idx].sum())
    assert n_den == n_den_ref == len(idx) * n_post
    # the same edge list in both forms gives the same currents
    expect = out0.astype(np.float64) + np.bincount(idx, minlength=n_pre) @ W
    for got in (o_csr, o_csr_ref, o_den, o_den_ref):
        assert got.dtype == dtype
        assert_close(got, expect, dtype, scale)
    if density > 0:   # W != 0 counts each distinct pair once; S counts duplicates
        assert reference.count_synops(W, idx) <= n_csr


CONV_GEOS = [  # (C_in, H, W, C_out, k, stride, pad)
    (1, 1, 1, 1, 1, 1, 0),
    (2, 7, 5, 3, 3, 1, 1),
    (3, 8, 8, 2, 3, 2, 1),
    (2, 6, 7, 4, 2, 2, 0),
    (1, 5, 5, 2, 3, 1, 2),
    (4, 9, 6, 3, 1, 2, 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spikes", SPIKES)
@pytest.mark.parametrize("geo_in", CONV_GEOS)
def test_conv_propagate_matches_twin_and_dense(geo_in, spikes, dtype):
    Cin, H, W, Cout, k, st, pad = geo_in
    rng = np.random.default_rng(hash((geo_in, spikes)) % 2 ** 32)
    w = rng.normal(0, 1, (Cout, Cin, k, k))
    pr = ns.Conv2d(w, pre_shape=(Cin, H, W), stride=st, padding=pad)
    _, Ho, Wo = pr.post_shape
    geo = np.array([Cin, H, W, Cout, Ho, Wo, k, k, st, pad], np.int64)
    wf = np.ascontiguousarray(w.transpose(2, 3, 1, 0)).ravel().astype(dtype)   # (kh, kw, C_in, C_out)
    idx = _spike_idx(spikes, pr.n_pre, rng)
    M = reference.dense_matrix(pr)
    out0 = np.zeros(pr.n_post, dtype)
    o_k, o_r = out0.copy(), out0.copy()
    n_k = ks.conv_propagate(idx, wf, geo, o_k)
    n_r = reference.conv_propagate(idx, wf, geo, o_r)
    S = reference.synapse_matrix(pr)
    assert n_k == n_r == reference.count_synops(S, idx) == int(pr.out_degree()[idx].sum())
    expect = np.bincount(idx, minlength=pr.n_pre) @ M
    scale = np.bincount(idx, minlength=pr.n_pre) @ np.abs(M) + 1.0
    assert_close(o_k, expect, dtype, scale)
    assert_close(o_r, expect, dtype, scale)


def _map_cases():
    rng = np.random.default_rng(7)
    yield "dense", ns.Dense(rng.normal(0, 1, (7, 5)))
    yield "sparse", ns.Sparse.fixed_probability(50, 40, 0.05, lambda r, n: r.normal(0, 1, n), seed=3)
    yield "sparse_full", ns.Sparse.fixed_probability(7, 5, 1.0, lambda r, n: r.normal(0, 1, n), seed=4)
    yield "conv", ns.Conv2d(rng.normal(0, 1, (3, 2, 3, 3)), pre_shape=(2, 7, 5), padding=1)
    yield "conv_s2", ns.Conv2d(rng.normal(0, 1, (2, 3, 3, 3)), pre_shape=(3, 8, 8), stride=2, padding=1)
    yield "convT_spide", ns.ConvTranspose2d(rng.normal(0, 1, (2, 3, 3, 3)), pre_shape=(2, 4, 5),
                                            stride=2, padding=1, output_padding=1)
    yield "convT_k2", ns.ConvTranspose2d(rng.normal(0, 1, (3, 2, 2, 2)), pre_shape=(3, 3, 4), stride=2)
    yield "convT_s1", ns.ConvTranspose2d(rng.normal(0, 1, (1, 2, 3, 3)), pre_shape=(1, 5, 5), padding=2)
    yield "pool2", ns.AvgPool2d(2, pre_shape=(3, 6, 7))
    yield "pool3_s1", ns.AvgPool2d(3, pre_shape=(2, 5, 6), stride=1)


def _kernel_form(pr, backward=False):
    """(kind, geo, flat weights, indptr, indices, pool_w) in the documented kernel layouts."""
    R = reference
    geo = np.zeros(10, np.int64)
    empty_ip, empty_ix = np.zeros(0, np.int64), np.zeros(0, np.uint32)
    if isinstance(pr, ns.Dense):
        return R.K_DENSE, geo, (pr.weight.T if backward else pr.weight).ravel(), empty_ip, empty_ix, 0.0
    if isinstance(pr, ns.Sparse):
        assert not backward
        return R.K_CSR, geo, pr.weight, pr.indptr, pr.indices, 0.0
    src, dst = (pr.post_shape, pr.pre_shape) if backward else (pr.pre_shape, pr.post_shape)
    geo[0:3], geo[3:6] = src, dst
    if isinstance(pr, ns.AvgPool2d):
        assert not backward
        geo[6:10] = pr.kernel, pr.kernel, pr.stride, 0
        return R.K_POOL_DOWN, geo, np.zeros(0), empty_ip, empty_ix, 1.0 / pr.kernel ** 2
    kh, kw = pr.kernel_shape
    geo[6:10] = kh, kw, pr.stride, pr.padding
    # documented layouts: conv2d (C_out, C_in, kh, kw), conv_transpose2d (C_in, C_out, kh, kw);
    # kernels take (kh, kw, C_sender, C_receiver)
    w = pr.weight
    if isinstance(pr, ns.Conv2d):
        wk = w.transpose(2, 3, 0, 1) if backward else w.transpose(2, 3, 1, 0)
        kind = R.K_CONV_UP if backward else R.K_CONV_DOWN
    else:
        wk = w.transpose(2, 3, 1, 0) if backward else w.transpose(2, 3, 0, 1)
        kind = R.K_CONV_DOWN if backward else R.K_CONV_UP
    np.testing.assert_array_equal(np.ascontiguousarray(wk), pr.kernel_weights()[1 if backward else 0])
    return kind, geo, np.ascontiguousarray(wk).ravel(), empty_ip, empty_ix, 0.0


# apply_map has no transposed CSR / pool form (the engine's random-network tests cover
# those transposes), so only the forward direction is generated for them.
_APPLY_CASES = [(name, pr, backward) for name, pr in _map_cases() for backward in (False, True)
                if not (backward and isinstance(pr, (ns.Sparse, ns.AvgPool2d)))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,pr,backward", _APPLY_CASES,
                         ids=[f"{c[0]}-{'bwd' if c[2] else 'fwd'}" for c in _APPLY_CASES])
def test_apply_map_matches_twin_and_dense(name, pr, backward, dtype):
    """Forward maps, and (conv / conv-transpose / dense) their transposes (oracle 9)."""
    rng = np.random.default_rng(11)
    kind, geo, w, ip, ix, pool_w = _kernel_form(pr, backward)
    n_in, n_out = (pr.n_post, pr.n_pre) if backward else (pr.n_pre, pr.n_post)
    x = rng.normal(0, 1, (3, n_in)) * (rng.random((3, n_in)) < 0.6)     # zeros are skipped
    x[0] = 0.0                                                          # an all-zero sample
    out_k = np.zeros((3, n_out), dtype)
    k_apply_map(kind, geo, kernel_table(kind, geo), w.astype(dtype), ip, ix, pool_w,
                x.astype(dtype), 0, 3, out_k)
    out_r = np.zeros((3, n_out), dtype)
    reference.apply_map(kind, geo, None, w.astype(dtype), ip, ix, pool_w, x.astype(dtype), 0, 3, out_r)
    M = reference.dense_matrix(pr)
    if backward:
        M = M.T
    expect = x @ M
    scale = np.abs(x) @ np.abs(M) + 1.0
    assert_close(out_k, expect, dtype, scale)
    assert_close(out_r, expect, dtype, scale)
    np.testing.assert_array_equal(out_k[0], 0.0)


# ---------------------------------------------------------------------------------------
# golden geometry: the dense expansions follow PyTorch's definitions
def _conv_direct(x, w, stride, padding):
    """Direct conv2d (cross-correlation) of one CHW image, vectorised over channels."""
    Cout, Cin, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    Ho = (xp.shape[1] - kh) // stride + 1
    Wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((Cout, Ho, Wo))
    for ky in range(kh):
        for kx in range(kw):
            patch = xp[:, ky:ky + stride * (Ho - 1) + 1:stride, kx:kx + stride * (Wo - 1) + 1:stride]
            out += np.einsum("oc,chw->ohw", w[:, :, ky, kx], patch)
    return out


@pytest.mark.parametrize("geo_in", CONV_GEOS)
def test_conv_dense_matrix_is_pytorch_conv2d(geo_in):
    Cin, H, W, Cout, k, st, pad = geo_in
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (Cout, Cin, k, k))
    pr = ns.Conv2d(w, pre_shape=(Cin, H, W), stride=st, padding=pad)
    x = rng.normal(0, 1, (Cin, H, W))
    y = _conv_direct(x, w, st, pad)
    assert y.shape == tuple(pr.post_shape)
    got = ns.chw_to_flat(x) @ reference.dense_matrix(pr)
    np.testing.assert_allclose(got, ns.chw_to_flat(y), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(reference.synapse_matrix(pr).sum(1), pr.out_degree())


@pytest.mark.parametrize("k,st,pad,op", [(3, 2, 1, 1), (2, 2, 0, 0), (3, 1, 0, 0), (3, 1, 2, 0),
                                         (4, 3, 1, 2), (1, 2, 0, 1)])
def test_conv_transpose_is_adjoint_of_conv(k, st, pad, op):
    """PyTorch defines conv_transpose2d as the adjoint of conv2d with the same weight:
    dense(ConvT(w)) == dense(Conv2d(w) on the ConvT output shape).T."""
    rng = np.random.default_rng(2)
    Cin_t, Cout_t, H, W = 2, 3, 4, 5
    w = rng.normal(0, 1, (Cin_t, Cout_t, k, k))
    ct = ns.ConvTranspose2d(w, pre_shape=(Cin_t, H, W), stride=st, padding=pad, output_padding=op)
    assert ct.post_shape[1:] == ((H - 1) * st - 2 * pad + k + op, (W - 1) * st - 2 * pad + k + op)
    cv = ns.Conv2d(w, pre_shape=ct.post_shape, stride=st, padding=pad)
    assert tuple(cv.post_shape) == (Cin_t, H, W)
    np.testing.assert_array_equal(reference.dense_matrix(ct), reference.dense_matrix(cv).T)
    np.testing.assert_array_equal(reference.synapse_matrix(ct).sum(1), ct.out_degree())


def test_spide_conv_transpose_doubles_the_size():
    ct = ns.ConvTranspose2d(np.ones((1, 1, 3, 3)), pre_shape=(1, 4, 6), stride=2, padding=1,
                            output_padding=1)
    assert ct.post_shape == (1, 8, 12)


@pytest.mark.parametrize("k,st", [(2, 2), (2, 1), (3, 1), (3, 2)])
def test_avgpool_dense_matrix_is_window_mean(k, st):
    rng = np.random.default_rng(3)
    C, H, W = 2, 7, 6
    pr = ns.AvgPool2d(k, pre_shape=(C, H, W), stride=st)
    x = rng.normal(0, 1, (C, H, W))
    _, Ho, Wo = pr.post_shape
    y = np.array([[[x[c, oy * st:oy * st + k, ox * st:ox * st + k].mean() for ox in range(Wo)]
                   for oy in range(Ho)] for c in range(C)])
    np.testing.assert_allclose(ns.chw_to_flat(x) @ reference.dense_matrix(pr), ns.chw_to_flat(y),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(reference.synapse_matrix(pr).sum(1), pr.out_degree())


def test_neuron_order_is_channel_last():
    shape = (3, 4, 5)
    a = np.arange(60).reshape(shape)
    f = reference.to_flat(a[None], shape, 1)[0]
    np.testing.assert_array_equal(f, ns.chw_to_flat(a))
    assert f[reference.flat_index(2, 1, 3, shape)] == a[2, 1, 3]
    np.testing.assert_array_equal(ns.flat_to_chw(f, shape), a)


# ---------------------------------------------------------------------------------------
# neuron kernels
NEURON_N = [1, 35, 2000]
LIF_PARAMS = [  # v_th, sub, leak, reset_code, v_reset, t_ref
    (1.0, 2.0, 1.0, 0, 0.0, 0),          # SPIDE IF
    (1.0, 1.0, 0.9, 0, 0.0, 2),          # leaky, reset to 0, refractory
    (0.5, 1.0, 0.5, 1, -0.25, 1),        # reset to value
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", LIF_PARAMS)
@pytest.mark.parametrize("drive", ["none", "all", "random"])
@pytest.mark.parametrize("n", NEURON_N)
def test_lif_step_matches_twin(n, drive, params, dtype):
    v_th, sub, leak, rc, v_reset, t_ref = params
    rng = np.random.default_rng(n)
    v = rng.uniform(-1, v_th, n).astype(dtype)
    ref = rng.integers(0, t_ref + 1, n).astype(np.int32)
    if drive == "all":
        ref[:] = 0
    v2, ref2 = v.copy(), ref.copy()
    for step in range(6):
        I = {"none": np.full(n, -0.5), "all": np.full(n, 3.0),
             "random": rng.normal(0.3, 0.8, n)}[drive].astype(dtype)
        s1, s2 = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        d = np.dtype(dtype).type          # the kernel takes its scalars in the state's dtype
        c1 = kn.lif_step(v, ref, I, d(v_th), d(sub), d(leak), rc, d(v_reset), t_ref, s1)
        c2 = reference.lif_step(v2, ref2, I, v_th, sub, leak, rc, v_reset, t_ref, s2)
        np.testing.assert_array_equal(s1, s2)
        assert c1 == c2 == s1.sum()
        np.testing.assert_array_equal(ref, ref2)
        np.testing.assert_array_equal(v, v2)          # same arithmetic in the dtype: exact
        if drive == "none":
            assert c1 == 0
        if drive == "all" and step == 0:
            assert c1 == n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("leak", [1.0, 0.5])
@pytest.mark.parametrize("n", NEURON_N)
def test_ternary_step_matches_twin(n, leak, dtype):
    rng = np.random.default_rng(n + 1)
    w = rng.uniform(-0.5, 0.5, n).astype(dtype)
    w2 = w.copy()
    for _ in range(6):
        I = rng.normal(0, 0.6, n).astype(dtype)
        q1, q2 = np.zeros(n, np.int8), np.zeros(n, np.int8)
        d = np.dtype(dtype).type
        c1 = kn.ternary_step(w, I, d(0.5), d(1.0), d(leak), q1)
        c2 = reference.ternary_step(w2, I, 0.5, 1.0, leak, q2)
        np.testing.assert_array_equal(q1, q2)
        assert c1 == c2 == np.count_nonzero(q1)
        assert_close(w, w2, dtype, np.abs(w2) + np.abs(I) + 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tau_syn", [(5.0,), (2.0, 10.0)])
@pytest.mark.parametrize("n", NEURON_N)
def test_cuba_step_matches_twin(n, tau_syn, dtype):
    nr = ns.CubaLIF(v_rest=-0.1, v_th=1.0, v_reset=-0.2, tau_mem=10.0, tau_syn=tau_syn, t_ref=2.0,
                    i_e=0.3)
    rng = np.random.default_rng(n + 2)
    P = nr.n_ports
    v = rng.uniform(-0.2, 1.0, n).astype(dtype)
    isyn = rng.normal(0, 0.5, (P, n)).astype(dtype)
    ref = rng.integers(0, 3, n).astype(np.int32)
    v2, isyn2, ref2 = v.copy(), isyn.copy(), ref.copy()
    const = rng.normal(0, 0.2, n).astype(dtype)
    d = np.dtype(dtype).type              # parameters as the engine holds them
    a_syn, p_syn = np.array(nr.alpha_syn, dtype), np.array(nr.p_syn, dtype)
    a_m = d(nr.alpha_mem)
    args = (d(nr.v_rest), d(nr.v_th), d(nr.v_reset), a_m, d(1) - a_m, a_syn, p_syn, d(nr.i_e),
            nr.ref_steps)
    for _ in range(8):
        ev = (rng.normal(0.5, 1.0, (P, n)) * (rng.random((P, n)) < 0.3)).astype(dtype)
        s1, s2 = np.zeros(n, np.bool_), np.zeros(n, np.bool_)
        c1 = kn.cuba_step(v, isyn, ref, ev, const, *args, s1)
        c2 = reference.cuba_step(v2, isyn2, ref2, ev, const, *args, s2)
        np.testing.assert_array_equal(s1, s2)
        assert c1 == c2 == s1.sum()
        np.testing.assert_array_equal(ref, ref2)
        np.testing.assert_array_equal(v, v2)          # same arithmetic in the dtype: exact
        np.testing.assert_array_equal(isyn, isyn2)


# ---------------------------------------------------------------------------------------
# analytic: first spike time under constant input
def _first_spike_expected(I, v_th, leak):
    """Smallest step t (0-based) with I * Σ_{k<=t} λ^k >= θ, in exact rationals; None if never."""
    I, v_th, lam = Fraction(I), Fraction(v_th), Fraction(leak)
    u = Fraction(0)
    for t in range(200):
        u = u + I
        if u >= v_th:
            return t
        u = u * lam
    return None


@pytest.mark.parametrize("leak", [1.0, 0.5])
def test_first_spike_time_under_constant_input(leak):
    T = 40
    I = np.arange(1, 49) / 16.0                            # dyadic: exact arithmetic
    expect = [_first_spike_expected(i, 1.0, leak) for i in I]
    # the dense kernel
    v, ref, s = np.zeros(I.size), np.zeros(I.size, np.int32), np.zeros(I.size, np.bool_)
    first = np.full(I.size, -1)
    for t in range(T):
        kn.lif_step(v, ref, I, 1.0, 2.0, leak, 0, 0.0, 0, s)
        first[(first < 0) & s] = t
    # the engine
    net = ns.Network(dtype=np.float64)
    net.add_population("p", I.size, ns.LIF(leak=leak))
    res = ns.run_forward(net, T, currents={"p": I[None]}, record=True)
    tr = res.spikes["p"][0]
    first_eng = np.where(tr.any(0), tr.argmax(0), -1)
    for i, e in enumerate(expect):
        want = -1 if e is None or e >= T else e
        assert first[i] == want, (I[i], first[i], want)
        assert first_eng[i] == want, (I[i], first_eng[i], want)
    if leak == 1.0:   # IF: t* = ceil(θ / I) - 1
        np.testing.assert_array_equal(first, np.ceil(1.0 / I).astype(int) - 1)


# ---------------------------------------------------------------------------------------
# golden: CubaLIF's exact propagator against the matrix exponential
def _cuba_generator(nr, k=0):
    """d/dt [v - v_rest - i_e, i_k] = A [..]: τ_m dv/dt = v_rest - v + i_k + i_e, τ_k di/dt = -i."""
    tm, ts = nr.tau_mem, nr.tau_syn[k]
    return np.array([[-1.0 / tm, 1.0 / tm], [0.0, -1.0 / ts]])


@pytest.mark.parametrize("tau_mem,tau_syn,dt", [(10.0, 5.0, 1.0), (20.0, 2.0, 0.1), (10.0, 10.0, 1.0),
                                                (5.0, 40.0, 0.5)])
def test_cuba_propagator_matches_expm(tau_mem, tau_syn, dt):
    nr = ns.CubaLIF(tau_mem=tau_mem, tau_syn=(tau_syn,), dt=dt)
    E = scipy.linalg.expm(_cuba_generator(nr) * dt)
    np.testing.assert_allclose(nr.alpha_mem, E[0, 0], rtol=1e-12)
    np.testing.assert_allclose(nr.p_syn[0], E[0, 1], rtol=1e-12)
    np.testing.assert_allclose(nr.alpha_syn[0], E[1, 1], rtol=1e-12)
    assert abs(E[1, 0]) < 1e-15


@pytest.mark.parametrize("tau_syn", [(5.0,), (10.0,), (3.0, 15.0)])
def test_cuba_trajectory_matches_expm(tau_syn):
    """Sub-threshold trajectory of the kernel and of the engine vs expm of the 2x2 system."""
    nr = ns.CubaLIF(v_rest=-0.5, v_th=100.0, v_reset=-1.0, tau_mem=10.0, tau_syn=tau_syn,
                    i_e=0.75, dt=1.0)
    P = nr.n_ports
    w = np.array([1.5, -0.75, 0.4, 2.0])[:P]
    T = 25
    # exact: each port is an independent 2x2 linear system sharing v
    x = np.zeros((P, 2))
    x[:, 1] = w                                  # events at step 0 jump i_k first
    v_exact = []
    Es = [scipy.linalg.expm(_cuba_generator(nr, k) * nr.dt) for k in range(P)]
    v0 = nr.v_rest - nr.v_rest - nr.i_e          # v - v_rest - i_e at t=0 (v starts at v_rest)
    base = v0
    for t in range(T):
        base = base * nr.alpha_mem
        for k in range(P):
            x[k] = Es[k] @ x[k]
        v_exact.append(nr.v_rest + nr.i_e + base + sum(x[k, 0] for k in range(P)))
    v_exact = np.array(v_exact)
    # kernel
    v = np.full(1, nr.v_rest)
    isyn = np.zeros((P, 1))
    ref = np.zeros(1, np.int32)
    s = np.zeros(1, np.bool_)
    got = []
    for t in range(T):
        ev = w[:, None] if t == 0 else np.zeros((P, 1))
        kn.cuba_step(v, isyn, ref, ev, np.zeros(1), nr.v_rest, nr.v_th, nr.v_reset, nr.alpha_mem,
                     1.0 - nr.alpha_mem, np.array(nr.alpha_syn), np.array(nr.p_syn), nr.i_e,
                     nr.ref_steps, s)
        got.append(v[0])
    np.testing.assert_allclose(got, v_exact, rtol=1e-12, atol=1e-12)
    # engine: one source spike at step 0 through one projection per port
    net = ns.Network(dtype=np.float64)
    net.add_population("src", 1, "source")
    net.add_population("c", 1, nr)
    for k in range(P):
        net.add_projection(f"p{k}", "src", "c", ns.Dense(np.array([[w[k]]]), port=k))
    tr = np.zeros((1, T, 1), bool)
    tr[0, 0, 0] = True
    for t_end in (1, 7, T):
        res = ns.run_forward(net, t_end, spikes={"src": tr[:, :t_end]})
        np.testing.assert_allclose(res.v_final["c"][0, 0], v_exact[t_end - 1], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------
# NaN / inf inputs must raise before reaching a kernel (STYLE 7.4 case grid)
def test_nan_or_inf_inputs_raise():
    from neurosim.neurons import lif as lif_mod
    from neurosim.neurons import ternary as ter_mod
    st = lif_mod.init_state(3, ns.LIF())
    with pytest.raises(ValueError, match="NaN or inf"):
        lif_mod.step(st, np.array([0.0, np.nan, 0.0]), ns.LIF())
    cst = lif_mod.init_state(2, ns.CubaLIF())
    with pytest.raises(ValueError, match="NaN or inf"):
        lif_mod.step(cst, np.array([[np.inf, 0.0]]), ns.CubaLIF())
    tst = ter_mod.init_state(2)
    with pytest.raises(ValueError, match="NaN or inf"):
        ter_mod.step(tst, np.array([np.inf, 0.0]), ns.Ternary())
    net = ns.Network(dtype=np.float64)
    net.add_population("p", 2, ns.LIF())
    with pytest.raises(ValueError, match="NaN or inf"):
        ns.run_forward(net, 3, currents={"p": np.array([[0.0, np.nan]])})
    fwd = ns.run_forward(net, 3, batch=1)
    with pytest.raises(ValueError, match="NaN or inf"):
        ns.run_backward(net, fwd, {"p": np.array([[np.inf, 0.0]])}, 3)


def test_public_step_functions_match_twins():
    """neurosim.neurons.*.step (validating wrappers) give the twins' results."""
    from neurosim.neurons import lif as lif_mod
    from neurosim.neurons import ternary as ter_mod
    rng = np.random.default_rng(5)
    p = ns.LIF(leak=0.75, t_ref=1)
    st = lif_mod.init_state(30, p)
    v, r = np.zeros(30), np.zeros(30, np.int32)
    tp = ns.Ternary()
    tst = ter_mod.init_state(30)
    w = np.zeros(30)
    for _ in range(10):
        I = rng.normal(0.5, 1.0, 30)
        s, st = lif_mod.step(st, I, p)
        s2 = np.zeros(30, np.bool_)
        reference.lif_step(v, r, I, p.v_th, p.subtract, p.leak, p.reset_code, p.v_reset, p.t_ref, s2)
        np.testing.assert_array_equal(s, s2)
        np.testing.assert_array_equal(st.ref, r)
        assert_close(st.v, v, np.float64, np.abs(v) + np.abs(I) + 2)
        q, tst = ter_mod.step(tst, I, tp)
        q2 = np.zeros(30, np.int8)
        reference.ternary_step(w, I, tp.v_th, tp.subtract, tp.leak, q2)
        np.testing.assert_array_equal(q, q2)
        assert_close(tst.w, w, np.float64, np.abs(w) + np.abs(I) + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["dense_tiles", "conv_s2"])
def test_apply_map_sums_in_increasing_input_index_exactly(name, dtype):
    """The gathered dense and conv maps (several sample blocks and output tiles) equal,
    bit for bit, a plain loop that adds ``x_j * w`` over the nonzero inputs in increasing
    index j, each operation rounded in the dtype (docs/hdf5-schema.md, "Arithmetic")."""
    rng = np.random.default_rng(5)
    if name == "dense_tiles":
        pr = ns.Dense(rng.normal(0, 1, (37, 300)))      # 3 tiles of 128 outputs
    else:
        pr = ns.Conv2d(rng.normal(0, 1, (5, 3, 3, 3)), pre_shape=(3, 9, 8), stride=2, padding=1)
    kind, geo, w, ip, ix, pool_w = _kernel_form(pr)
    B = 11                                              # two blocks of 8 samples
    x = (rng.normal(0, 1, (B, pr.n_pre)) * (rng.random((B, pr.n_pre)) < 0.7)).astype(dtype)
    out = np.zeros((B, pr.n_post), dtype)
    tab = kernel_table(kind, geo)
    for b0, b1 in ((0, 5), (5, B)):                    # two calls, one splitting a block
        k_apply_map(kind, geo, tab, w.astype(dtype), ip, ix, pool_w, x, b0, b1, out)
    M = reference.dense_matrix(pr).astype(dtype)        # M[j, i]: weight from input j to i
    expect = np.zeros((B, pr.n_post), dtype)
    for b in range(B):
        for i in range(pr.n_post):
            acc = dtype(0)
            for j in range(pr.n_pre):
                if x[b, j] != 0 and M[j, i] != 0:
                    acc = dtype(acc + dtype(x[b, j] * M[j, i]))
            expect[b, i] = acc
    np.testing.assert_array_equal(out, expect)
