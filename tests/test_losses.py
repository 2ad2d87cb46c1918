"""Losses: Spikemax oracles O1-O7 (SPIKEMAX.md section 6), invariances, finite differences,
the SPIDE cross-entropy readout, prediction rules and input validation."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_allclose, assert_array_equal

from neurosim import losses as L
from neurosim._validate import NeurosimError

ORACLE_TOL = dict(rtol=0, atol=1e-6)          # spec numbers are printed to 6 digits
FD_TOL = dict(rtol=1e-6, atol=1e-8)           # central differences, h = 1e-6
H = 1e-6
DET = settings(derandomize=True, max_examples=40, deadline=None, database=None)


def fd(f, x, h=H):
    """Central finite-difference gradient of scalar f at float64 array x."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def o6_spikes():
    s = np.zeros((1, 5, 2))
    s[0, :, 0] = [1, 0, 1, 1, 0]
    s[0, :, 1] = [1, 0, 1, 0, 1]
    return s


def random_counts(rng, B, K, T, low=0):
    return rng.integers(low, T + 1, size=(B, K)).astype(np.float64)


# --------------------------------------------------------------------------- oracles O1-O7

def test_o1_global_prob():
    T = 10
    r = L.spikemax([[6, 3, 1]], [0], T)
    per_sample, grad = r                               # unpacks as (loss_per_sample, grad)
    assert_allclose(per_sample, [-math.log(0.6)], **ORACLE_TOL)
    assert_allclose(r.loss, 0.510826, **ORACLE_TOL)
    assert_allclose(grad, [[-0.666667, 1, 1]], **ORACLE_TOL)
    assert_allclose(grad / T, [[-0.0666667, 0.1, 0.1]], **ORACLE_TOL)   # dL/dN
    # N_2 = 1 sits on the clamp boundary (a = 1/T), where the clamped loss has a kink; the
    # spec's central difference is that of the unclamped formula, which agrees there.
    exact = L.spikemax([[6, 3, 1]], [0], T, clamp=False, eps=0.0)
    assert_allclose(exact.per_sample, per_sample, rtol=1e-15)
    assert_allclose(exact.grad, grad, rtol=1e-15)
    g = fd(lambda a: L.spikemax(a * T, [0], T, clamp=False, eps=0.0).loss, [[0.6, 0.3, 0.1]],
           h=1e-7)
    assert_allclose(g, grad, rtol=0, atol=1e-6)


def test_o2_softmax_beta1():
    r = L.spikemax([[6, 3, 1]], [0], 10, mode="softmax")
    p = r.grad[0] + [1, 0, 0]
    assert_allclose(p, [0.426013, 0.315598, 0.258390], **ORACLE_TOL)
    assert_allclose(r.loss, 0.853287, **ORACLE_TOL)
    assert_allclose(r.grad, [[-0.573987, 0.315598, 0.258390]], **ORACLE_TOL)


def test_o3_softmax_beta_T():
    r = L.spikemax([[6, 3, 1]], [0], 10, mode="softmax", beta=10)
    assert_allclose(r.grad[0] / 10 + [1, 0, 0], [0.946499, 0.047123, 0.006377], **ORACLE_TOL)
    assert_allclose(r.loss, 0.054985, **ORACLE_TOL)
    assert_allclose(r.grad, [[-0.535009, 0.471234, 0.063775]], **ORACLE_TOL)


@pytest.mark.parametrize("T", [1, 10, 300])
def test_o4_silent_output_with_clamp(T):
    r = L.spikemax([[0, 0, 0]], [0], T)
    assert np.all(np.isfinite(r.grad))
    assert_allclose(r.loss, math.log(3), **ORACLE_TOL)
    assert_allclose(r.grad / T, [[-0.666667, 0.333333, 0.333333]], **ORACLE_TOL)
    assert r.grad[0, 0] < 0                             # true class pushed to fire


def test_o5_rate_mse():
    a = [[0.6, 0.3, 0.1]]
    r = L.rate_mse(a, [0], 0.2, 0.03)
    assert_allclose(r.loss, 0.2378, **ORACLE_TOL)
    assert_allclose(r.grad, [[0.8, 0.54, 0.14]], **ORACLE_TOL)
    r = L.rate_mse(a, [0], 0.2, 0.03, form="slayer", T=10)
    assert_allclose(r.loss, 1.189, **ORACLE_TOL)
    assert_allclose(r.grad, [[4, 2.7, 0.7]], **ORACLE_TOL)
    assert_allclose(r.grad / 10, [[0.4, 0.27, 0.07]], **ORACLE_TOL)     # dL/dN = a - a^


def test_o6_sliding_prob():
    s = o6_spikes()
    c = L.window_counts(s, 2)
    assert_array_equal(c[0].T, [[1, 1, 1, 2, 1], [1, 1, 1, 1, 1]])
    ex = L.spikemax_sliding(s, [0], 2)
    au = L.spikemax_sliding(s, [0], 2, gradient="authors")
    assert_allclose(ex.loss, 4 * math.log(2) + math.log(1.5), **ORACLE_TOL)
    assert_allclose(ex.loss, 3.178054, **ORACLE_TOL)
    assert_allclose(np.exp(-ex.per_step[0]), [.5, .5, .5, .666667, .5], **ORACLE_TOL)   # p_y[t]
    assert_allclose(au.grad_spikes[0].T, [[-.5, -.5, -.5, -.166667, -.5],
                                          [.5, .5, .5, .333333, .5]], **ORACLE_TOL)
    assert_allclose(ex.grad_spikes[0].T, [[-1, -1, -.666667, -.666667, -.5],
                                          [1, 1, .833333, .833333, .5]], **ORACLE_TOL)
    assert au.loss == ex.loss
    # "equals finite difference": no clamp is active, so the unclamped exact loss (eps=0)
    # has the same value and its derivative is the exact gradient.
    f = lambda x: L.spikemax_sliding(x, [0], 2, clamp=False, eps=0.0).loss
    assert_allclose(f(s), ex.loss, rtol=1e-15)
    s_in = np.clip(s, H, 1 - H)                        # FD needs room on both sides
    assert_allclose(fd(f, s_in), L.spikemax_sliding(s_in, [0], 2, clamp=False, eps=0.0)
                    .grad_spikes, **FD_TOL)
    assert_allclose(ex.grad_spikes, L.spikemax_sliding(s, [0], 2, clamp=False, eps=0.0)
                    .grad_spikes, rtol=1e-14)


def test_o7_sliding_softmax():
    s = o6_spikes()
    r = L.spikemax_sliding(s, [0], 2, mode="softmax")
    assert_allclose(r.loss, 3.246666, **ORACLE_TOL)
    g0 = [-.5, -.5, -.43877, -.43877, -.25]
    assert_allclose(r.grad_spikes[0, :, 0], g0, rtol=0, atol=1e-5)   # printed to 5 digits
    assert_allclose(r.grad_spikes[0, :, 1], -r.grad_spikes[0, :, 0], rtol=1e-15)
    s_in = np.clip(s, H, 1 - H)                        # FD needs room inside [0, 1]
    assert_allclose(fd(lambda x: L.spikemax_sliding(x, [0], 2, mode="softmax").loss, s_in),
                    L.spikemax_sliding(s_in, [0], 2, mode="softmax").grad_spikes, **FD_TOL)


def test_lava_exact_global():
    eps = L.LAVA_EPS
    r = L.spikemax([[6, 3, 1]], [0], 10, clamp=False)
    assert_allclose(r.loss, -math.log(0.6 / (1 + eps)), rtol=1e-14)
    assert_allclose(r.grad, [[1 / (1 + eps) - 1 / 0.6, 1 / (1 + eps), 1 / (1 + eps)]],
                    rtol=1e-14)
    r0 = L.spikemax([[6, 3, 1]], [0], 10, clamp=False, eps=0.0)
    assert_allclose(r0.loss, -math.log(0.6), rtol=1e-14)


# --------------------------------------------------------------------------- invariances

@pytest.mark.parametrize("seed", range(5))
def test_prob_scale_invariance_and_euler(seed):
    rng = np.random.default_rng(seed)
    B, K, T = 6, 7, 40
    N = random_counts(rng, B, K, T // 2, low=1)       # clamp inactive, room to double
    y = rng.integers(0, K, B)
    r = L.spikemax(N, y, T)
    assert_allclose(L.spikemax(2 * N, y, T).per_sample, r.per_sample, rtol=1e-13)
    assert_allclose(L.spikemax(N, y, 2 * T).per_sample, r.per_sample, rtol=1e-13)
    a = N / T
    assert_allclose((a * r.grad).sum(1), 0, atol=1e-12)          # Euler, degree 0
    S = a.sum(1)
    wrong = np.ones((B, K), bool)
    wrong[np.arange(B), y] = False
    assert_allclose(r.grad[wrong], np.repeat(1 / S, K - 1), rtol=1e-13)   # all = 1/S
    assert_allclose(r.grad[~wrong], 1 / S - 1 / a[np.arange(B), y], rtol=1e-12)
    # unclamped, eps = 0: scale-invariant for any lambda and any counts with N_y > 0
    N2 = rng.uniform(0, T / 3, (B, K))
    N2[np.arange(B), y] += 1
    r0 = L.spikemax(N2, y, T, clamp=False, eps=0.0)
    assert_allclose(L.spikemax(2.7 * N2, y, T, clamp=False, eps=0.0).per_sample,
                    r0.per_sample, rtol=1e-12)
    assert_allclose((N2 / T * r0.grad).sum(1), 0, atol=1e-10)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("beta", [1.0, 3.5, 40.0])
def test_softmax_shift_invariance(seed, beta):
    rng = np.random.default_rng(seed)
    B, K, T = 5, 6, 50
    N = random_counts(rng, B, K, T // 2)
    y = rng.integers(0, K, B)
    r = L.spikemax(N, y, T, mode="softmax", beta=beta)
    assert_allclose(L.spikemax(N + 17, y, T, mode="softmax", beta=beta).per_sample,
                    r.per_sample, rtol=1e-12)         # a + 17/T for every class
    assert_allclose(r.grad.sum(1), 0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_p_minus_q_sums_to_zero(seed):
    rng = np.random.default_rng(seed)
    B, K, T = 8, 5, 20
    N = random_counts(rng, B, K, T)                    # zeros included: clamp active
    y = rng.integers(0, K, B)
    r = L.spikemax(N, y, T)
    at = np.maximum(N, 1) / T
    assert_allclose((at * r.grad).sum(1), 0, atol=1e-12)         # sum(p - q) = 0
    rs = L.spikemax(N, y, T, mode="softmax", beta=2.0)
    assert_allclose((rs.grad / 2.0).sum(1), 0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kw", [dict(mode="prob"), dict(mode="prob", clamp=False),
                                dict(mode="softmax", beta=2.0)])
def test_class_permutation_equivariance(seed, kw):
    rng = np.random.default_rng(seed)
    B, K, T = 6, 5, 12
    N = random_counts(rng, B, K, T, low=1)
    y = rng.integers(0, K, B)
    pi = rng.permutation(K)
    y2 = np.argsort(pi)[y]                             # pi[y2] == y
    r, r2 = L.spikemax(N, y, T, **kw), L.spikemax(N[:, pi], y2, T, **kw)
    assert_allclose(r2.per_sample, r.per_sample, rtol=1e-13)
    assert_allclose(r2.grad, r.grad[:, pi], rtol=1e-13)
    s = (rng.random((B, T, K)) < 0.5).astype(float)
    s[:, :, :] = np.maximum(s, (np.arange(K) == y[:, None])[:, None, :])  # true class fires
    w, w2 = L.spikemax_sliding(s, y, 3, **kw), L.spikemax_sliding(s[..., pi], y2, 3, **kw)
    assert_allclose(w2.per_step, w.per_step, rtol=1e-13)
    assert_allclose(w2.grad_spikes, w.grad_spikes[..., pi], rtol=1e-13)


# --------------------------------------------------------------------------- bounds

@DET
@given(st.integers(1, 12), st.integers(1, 30), st.data())
def test_prob_bounds(K, T, data):
    N = data.draw(hnp.arrays(np.int64, (1, K), elements=st.integers(0, T)))
    y = data.draw(st.integers(0, K - 1))
    r = L.spikemax(N, [y], T)
    assert r.loss >= 0
    Nt = max(N[0, y], 1)
    assert r.loss >= -math.log(Nt / (Nt + K - 1)) - 1e-12        # clamp bound
    if N[0, y] > 0:
        r0 = L.spikemax(N, [y], T, clamp=False, eps=0.0)
        assert r0.loss >= 0
        assert (r0.loss == 0) == bool((N[0] > 0).sum() == 1)     # 0 iff only the true class


def test_prob_zero_iff_only_true_class():
    N = np.array([[0, 7, 0, 0]])
    assert L.spikemax(N, [1], 10, clamp=False, eps=0.0).loss == 0.0
    assert L.spikemax(N, [1], 10, clamp=False).loss > 0             # eps > 0: tiny, positive
    assert_allclose(L.spikemax(N, [1], 10).loss, -math.log(7 / 10), rtol=1e-14)  # clamp bound met


@DET
@given(st.integers(2, 12), st.integers(1, 30), st.data())
def test_softmax_beta1_lower_bound(K, T, data):
    N = data.draw(hnp.arrays(np.int64, (1, K), elements=st.integers(0, T)))
    y = data.draw(st.integers(0, K - 1))
    r = L.spikemax(N, [y], T, mode="softmax")
    assert r.loss >= math.log(1 + (K - 1) / math.e) - 1e-12


def test_softmax_beta1_bound_value_K10():
    bound = math.log(1 + 9 / math.e)
    assert_allclose(bound, 1.461150, **ORACLE_TOL)
    N = np.zeros((1, 10))
    N[0, 3] = 25
    assert_allclose(L.spikemax(N, [3], 25, mode="softmax").loss, bound, rtol=1e-13)  # attained


# --------------------------------------------------------------------------- window

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kw", [dict(mode="prob"), dict(mode="softmax", beta=1.5)])
def test_window_T_last_step_is_global(seed, kw):
    rng = np.random.default_rng(seed)
    B, T, K = 4, 9, 5
    s = (rng.random((B, T, K)) < 0.4).astype(float)
    y = rng.integers(0, K, B)
    w = L.spikemax_sliding(s, y, T, **kw)
    g = L.spikemax(s.sum(1), y, T, **kw)
    assert_allclose(w.per_step[:, -1], g.per_sample, rtol=1e-13)
    assert_array_equal(L.window_counts(s, T)[:, -1], s.sum(1))


@pytest.mark.parametrize("kw", [dict(mode="prob"), dict(mode="softmax", beta=0.7)])
def test_window_1_binary_counts(kw):
    rng = np.random.default_rng(7)
    B, T, K = 3, 6, 4
    s = (rng.random((B, T, K)) < 0.5).astype(float)
    y = rng.integers(0, K, B)
    c = L.window_counts(s, 1)
    assert_array_equal(c, s)
    assert set(np.unique(c)) <= {0.0, 1.0}
    w = L.spikemax_sliding(s, y, 1, **kw)
    for t in range(T):                                  # each step: global loss with T = 1
        assert_allclose(w.per_step[:, t], L.spikemax(s[:, t], y, 1, **kw).per_sample,
                        rtol=1e-14)


def test_window_counts_partial_windows():
    s = np.ones((1, 6, 1))
    assert_array_equal(L.window_counts(s, 3)[0, :, 0], [1, 2, 3, 3, 3, 3])
    assert_array_equal(L.window_counts(s.astype(bool), 6)[0, :, 0], [1, 2, 3, 4, 5, 6])


def test_per_step_labels():
    rng = np.random.default_rng(3)
    s = (rng.random((2, 7, 3)) < 0.5).astype(float)
    y = np.array([2, 0])
    r1 = L.spikemax_sliding(s, y, 3)
    r2 = L.spikemax_sliding(s, np.repeat(y[:, None], 7, 1), 3)
    assert_allclose(r1.grad_spikes, r2.grad_spikes, rtol=0)
    yt = np.repeat(y[:, None], 7, 1)
    yt[0, 4:] = 1                                       # label changes mid-sample
    r3 = L.spikemax_sliding(s, yt, 3)
    assert_allclose(r3.per_step[:, :4], r1.per_step[:, :4], rtol=0)
    assert_allclose(r3.per_step[0, 4:], [L.spikemax(L.window_counts(s, 3)[:1, t], [1], 3)
                                         .per_sample[0] for t in range(4, 7)], rtol=1e-14)


# --------------------------------------------------------------------------- reductions

def test_reductions():
    rng = np.random.default_rng(11)
    B, T, K = 4, 6, 3
    N = random_counts(rng, B, K, T)
    y = rng.integers(0, K, B)
    for kw in (dict(), dict(mode="softmax", beta=2.0)):
        rs, rm = L.spikemax(N, y, T, **kw), L.spikemax(N, y, T, reduction="mean", **kw)
        assert_allclose(rm.loss, rs.loss / B, rtol=1e-14)
        assert_allclose(rm.grad, rs.grad / B, rtol=1e-14)
        assert_allclose(rm.per_sample, rs.per_sample / B, rtol=1e-14)
    s = (rng.random((B, T, K)) < 0.5).astype(float)
    for g in L.SLIDING_GRADIENTS:
        ws = L.spikemax_sliding(s, y, 2, gradient=g)
        wm = L.spikemax_sliding(s, y, 2, gradient=g, reduction="mean")
        assert_allclose(wm.loss, ws.loss / (B * T), rtol=1e-14)
        for f in ("per_sample", "grad", "grad_spikes", "per_step"):
            assert_allclose(getattr(wm, f), getattr(ws, f) / (B * T), rtol=1e-14)
        assert_allclose(ws.per_step.sum(1), ws.per_sample, rtol=1e-14)
        assert_allclose(ws.grad_spikes.sum(1), ws.grad, rtol=1e-14)
    a = N / T
    for kw in (dict(), dict(form="slayer", T=T)):
        rs = L.rate_mse(a, y, 0.2, 0.03, **kw)
        rm = L.rate_mse(a, y, 0.2, 0.03, reduction="mean", **kw)
        assert_allclose(rm.loss, rs.loss / B, rtol=1e-14)
        assert_allclose(rm.grad, rs.grad / B, rtol=1e-14)
    C, c = rng.normal(size=(K, K)), rng.normal(size=K)
    rs = L.cross_entropy_readout(a, y, C, c, reduction="sum")
    rm = L.cross_entropy_readout(a, y, C, c)            # default 'mean'
    for f in ("per_sample", "grad", "grad_C", "grad_c"):
        assert_allclose(getattr(rm, f), getattr(rs, f) / B, rtol=1e-14)


def test_batch_losses_add_up_under_sum():
    rng = np.random.default_rng(5)
    N = random_counts(rng, 6, 4, 10)
    y = rng.integers(0, 4, 6)
    whole = L.spikemax(N, y, 10)
    parts = [L.spikemax(N[i:i + 3], y[i:i + 3], 10) for i in (0, 3)]
    assert_allclose(whole.loss, parts[0].loss + parts[1].loss, rtol=1e-14)
    assert_allclose(whole.grad, np.vstack([p.grad for p in parts]), rtol=0)
    for i in range(6):
        assert_allclose(L.spikemax(N[i:i + 1], y[i:i + 1], 10).loss, whole.per_sample[i], rtol=0)


# --------------------------------------------------------------------------- finite differences

@pytest.mark.parametrize("kw", [dict(mode="prob"), dict(mode="prob", clamp=False),
                                dict(mode="prob", clamp=False, eps=0.0),
                                dict(mode="softmax"), dict(mode="softmax", beta=7.0),
                                dict(mode="prob", reduction="mean")])
def test_fd_global_spikemax(kw):
    rng = np.random.default_rng(1)
    B, K, T = 3, 4, 20
    a = rng.uniform(1 / T + 0.05, 0.95, (B, K))       # away from the clamp boundary
    y = rng.integers(0, K, B)
    f = lambda x: L.spikemax(x * T, y, T, **kw).loss
    assert_allclose(L.spikemax(a * T, y, T, **kw).grad, fd(f, a), **FD_TOL)


@pytest.mark.parametrize("kw", [dict(), dict(form="slayer", T=30), dict(reduction="mean")])
def test_fd_rate_mse(kw):
    rng = np.random.default_rng(2)
    a = rng.uniform(0.05, 0.95, (3, 5))
    y = rng.integers(0, 5, 3)
    f = lambda x: L.rate_mse(x, y, 0.2, 0.03, **kw).loss
    assert_allclose(L.rate_mse(a, y, 0.2, 0.03, **kw).grad, fd(f, a), **FD_TOL)


@pytest.mark.parametrize("W", [1, 3, 6])
@pytest.mark.parametrize("kw", [dict(mode="prob", clamp=False), dict(mode="prob", clamp=False,
                                eps=0.0), dict(mode="softmax"), dict(mode="softmax", beta=4.0),
                                dict(mode="softmax", reduction="mean")])
def test_fd_sliding_exact_not_authors(W, kw):
    rng = np.random.default_rng(W)
    B, T, K = 2, 6, 3
    s = rng.uniform(0.05, 0.95, (B, T, K))
    y = rng.integers(0, K, B)
    f = lambda x: L.spikemax_sliding(x, y, W, **kw).loss
    num = fd(f, s)
    ex = L.spikemax_sliding(s, y, W, **kw)
    au = L.spikemax_sliding(s, y, W, gradient="authors", **kw)
    assert_allclose(ex.grad_spikes, num, **FD_TOL)
    if W > 1:
        assert not np.allclose(au.grad_spikes, num, rtol=1e-3, atol=0)
    else:                                               # W = 1: the window is the identity
        assert_allclose(au.grad_spikes, ex.grad_spikes, rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_authors_shortcut_same_sign_smaller(seed):
    rng = np.random.default_rng(seed)
    B, T, K = 3, 15, 4
    s = (rng.random((B, T, K)) < 0.3).astype(float)
    y = rng.integers(0, K, B)
    for mode in L.SPIKEMAX_MODES:
        ex = L.spikemax_sliding(s, y, 5, mode=mode).grad_spikes
        au = L.spikemax_sliding(s, y, 5, mode=mode, gradient="authors").grad_spikes
        assert np.all(ex * au >= 0)
        assert np.all(np.abs(au) <= np.abs(ex) + 1e-15)
        assert np.abs(au).sum() < np.abs(ex).sum()


@pytest.mark.parametrize("W", [1, 4, 8])
@pytest.mark.parametrize("kw", [dict(mode="prob", clamp=False), dict(mode="softmax", beta=2.0)])
def test_sliding_rate_gradient_is_time_sum(W, kw):
    """grad = sum_tau dL/ds[tau] = d/da of the loss of a constant train s[tau] = a."""
    rng = np.random.default_rng(W)
    B, T, K = 2, 8, 3
    a = rng.uniform(0.1, 0.9, (B, K))
    y = rng.integers(0, K, B)
    const = lambda x: np.repeat(x[:, None, :], T, axis=1)
    r = L.spikemax_sliding(const(a), y, W, **kw)
    assert_allclose(r.grad, r.grad_spikes.sum(1), rtol=1e-14)
    assert_allclose(r.grad, fd(lambda x: L.spikemax_sliding(const(x), y, W, **kw).loss, a),
                    **FD_TOL)
    au = L.spikemax_sliding(const(a), y, W, gradient="authors", **kw)
    assert_allclose(au.grad, au.grad_spikes.sum(1), rtol=1e-14)
    w = np.minimum(W, np.arange(T) + 1)[None, :, None]
    assert_allclose(r.grad, (au.grad_spikes * w).sum(1), rtol=1e-12)   # sum_t min(W, t+1) g[t]


def test_global_grad_per_spike_is_count_unit():
    """Global loss as a function of the spikes: dL/ds[tau] = dL/dN = grad/T at every step,
    and the time-sum of those per-spike values is spikemax's dL/da (the convention of
    spikemax_sliding's ``grad``)."""
    rng = np.random.default_rng(9)
    B, T, K = 2, 5, 3
    s = rng.uniform(0.3, 0.9, (B, T, K))               # counts > 1: no clamp active
    y = rng.integers(0, K, B)
    for kw in (dict(), dict(mode="softmax", beta=3.0)):
        grad = L.spikemax(s.sum(1), y, T, **kw).grad
        ds = fd(lambda x: L.spikemax(x.sum(1), y, T, **kw).loss, s)
        assert_allclose(ds, np.repeat(grad[:, None, :] / T, T, axis=1), **FD_TOL)
        assert_allclose(ds.sum(1), grad, **FD_TOL)


# --------------------------------------------------------------------------- readout

def test_readout_matches_softmax_spikemax():
    a = np.array([[0.6, 0.3, 0.1]])
    r = L.cross_entropy_readout(a, [0], 10 * np.eye(3), np.zeros(3), reduction="sum")
    s = L.spikemax([[6, 3, 1]], [0], 10, mode="softmax", beta=10)
    assert_allclose(r.loss, 0.054985, **ORACLE_TOL)
    assert_allclose(r.per_sample, s.per_sample, rtol=1e-14)
    assert_allclose(r.grad, s.grad, rtol=1e-14)


def test_readout_zero_weights():
    B, n, K = 4, 6, 5
    a = np.random.default_rng(0).random((B, n))
    y = np.array([0, 1, 4, 4])
    r = L.cross_entropy_readout(a, y, np.zeros((K, n)), np.zeros(K))
    assert_allclose(r.per_sample, np.full(B, math.log(K) / B), rtol=1e-14)
    q = np.eye(K)[y]
    assert_allclose(r.grad_c, (1 / K - q).mean(0), rtol=1e-14)
    assert_allclose(r.grad, 0, atol=0)


@pytest.mark.parametrize("reduction", L.REDUCTIONS)
def test_fd_readout(reduction):
    rng = np.random.default_rng(4)
    B, n, K = 3, 5, 4
    a, C, c = rng.random((B, n)), rng.normal(size=(K, n)), rng.normal(size=K)
    y = rng.integers(0, K, B)
    r = L.cross_entropy_readout(a, y, C, c, reduction)
    assert_allclose(r.grad, fd(lambda x: L.cross_entropy_readout(x, y, C, c, reduction).loss, a),
                    **FD_TOL)
    assert_allclose(r.grad_C, fd(lambda x: L.cross_entropy_readout(a, y, x, c, reduction).loss,
                                 C), **FD_TOL)
    assert_allclose(r.grad_c, fd(lambda x: L.cross_entropy_readout(a, y, C, x, reduction).loss,
                                 c), **FD_TOL)


def test_readout_large_logits_stable():
    a = np.array([[1.0, 0.0]])
    C = np.array([[1000.0, 0.0], [0.0, 0.0], [-1000.0, 0.0]])
    r = L.cross_entropy_readout(a, [1], C, np.zeros(3), reduction="sum")
    assert np.isfinite(r.loss) and np.all(np.isfinite(r.grad))
    assert_allclose(r.loss, 1000.0, rtol=1e-14)
    r = L.spikemax([[300, 0]], [1], 300, mode="softmax", beta=1e4)
    assert_allclose(r.loss, 1e4, rtol=1e-14)


# --------------------------------------------------------------------------- prediction

def test_predict_ties_and_silence():
    N = np.array([[0, 3, 3], [5, 1, 5], [0, 0, 0], [1, 2, 0], [0.0, 0.0, 1e-9]])
    assert_array_equal(L.predict(N), [1, 0, -1, 1, 2])
    assert_array_equal(L.predict(N, silent="argmax"), [1, 0, 0, 1, 2])
    y = np.array([1, 0, 0, 0, 2])
    assert L.accuracy(L.predict(N), y) == 0.6            # silent never counts, even for y = 0
    assert L.accuracy(L.predict(N, silent="argmax"), y) == 0.8
    assert L.predict(N).dtype == np.int64


def test_predict_sliding():
    s = o6_spikes()
    assert_array_equal(L.predict_sliding(s, 2), [[0, 0, 0, 0, 0]])   # ties -> class 0
    s2 = np.zeros((2, 5, 3))
    s2[0, 2:, 2] = 1                                     # silent until step 2
    s2[1, :, 1] = 1
    s2[1, 1, 0] = s2[1, 2, 0] = 1
    p = L.predict_sliding(s2, 2)
    # sample 1: c_1 = [1, 2, 2, 2, 2], c_0 = [0, 1, 2, 1, 0] -> the tie at step 2 goes to 0
    assert_array_equal(p, [[-1, -1, 2, 2, 2], [1, 1, 0, 1, 1]])
    assert_array_equal(L.predict_sliding(s2, 2, silent="argmax")[0], [0, 0, 2, 2, 2])
    assert_allclose(L.accuracy(p, np.array([2, 1])), [0.5, 0.5, 0.5, 1.0, 1.0])
    assert_array_equal(L.predict_sliding(s2, 5)[:, -1], L.predict(s2.sum(1)))


# --------------------------------------------------------------------------- bad input

N3 = np.array([[6, 3, 1], [0, 2, 2]])
S3 = np.zeros((2, 5, 3))


@pytest.mark.parametrize("call, exc, match", [
    (lambda: L.spikemax([6, 3, 1], [0], 10), NeurosimError,
     r"counts must have 2 dimensions, got shape \(3,\)"),
    (lambda: L.spikemax(np.zeros((0, 3)), [], 10), NeurosimError,
     r"at least one sample \(B >= 1\), got shape \(0, 3\)"),
    (lambda: L.spikemax(N3, [0, 1, 2], 10), NeurosimError,
     r"y must have shape \(2,\) \(one label per sample\), got \(3,\)"),
    (lambda: L.spikemax(N3, [0, 3], 10), NeurosimError,
     r"y must hold class indices in \[0, K\) = \[0, 3\), got 3 at index \(1,\)"),
    (lambda: L.spikemax(N3, [-1, 0], 10), NeurosimError, r"\[0, 3\), got -1 at index \(0,\)"),
    (lambda: L.spikemax(N3, [0.0, 1.0], 10), TypeError,
     r"y must hold integer class indices, got array of shape \(2,\) and dtype float64"),
    (lambda: L.spikemax([[6, np.nan, 1]], [0], 10), NeurosimError,
     r"counts contains NaN or inf \(first at index \(0, 1\), value nan\)"),
    (lambda: L.spikemax([[11, 0, 1]], [0], 10), NeurosimError,
     r"counts must hold spike counts in \[0, 10\], got 11.0 at index \(0, 0\)"),
    (lambda: L.spikemax([[-1, 0, 1]], [0], 10), NeurosimError, r"got -1.0 at index \(0, 0\)"),
    (lambda: L.spikemax([["a", "b"]], [0], 10), TypeError, r"real numeric array, got dtype <U1"),
    (lambda: L.spikemax(N3, [0, 1], 0), NeurosimError, r"T must be >= 1, got 0"),
    (lambda: L.spikemax(N3, [0, 1], 10.0), TypeError, r"T must be an integer, got float 10.0"),
    (lambda: L.spikemax(N3, [0, 1], 10, mode="probability"), NeurosimError,
     r"mode must be one of \['prob', 'softmax'\], got 'probability'"),
    (lambda: L.spikemax(N3, [0, 1], 10, mode="softmax", beta=0), NeurosimError,
     r"beta must be > 0, got 0.0"),
    (lambda: L.spikemax(N3, [0, 1], 10, beta=float("nan")), NeurosimError,
     r"beta must be finite, got nan"),
    (lambda: L.spikemax(N3, [0, 1], 10, clamp="no"), TypeError,
     r"clamp must be True or False, got str 'no'"),
    (lambda: L.spikemax(N3, [0, 1], 10, eps=-1e-6), NeurosimError, r"eps must be >= 0, got -1e-06"),
    (lambda: L.spikemax(N3, [0, 1], 10, reduction="avg"), NeurosimError,
     r"reduction must be one of \['mean', 'sum'\], got 'avg'"),
    (lambda: L.spikemax(N3, [1, 0], 10, clamp=False), NeurosimError,
     r"clamp=False: the true class is silent \(rate 0\) at sample 1.*use clamp=True"),
    (lambda: L.spikemax_sliding(S3[0], [0, 1], 2), NeurosimError,
     r"spikes must have 3 dimensions, got shape \(5, 3\)"),
    (lambda: L.spikemax_sliding(S3 + 2, [0, 1], 2), NeurosimError,
     r"spikes must hold spikes \(binary, or relaxed to reals\) in \[0, 1\], got 2.0"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 0), NeurosimError,
     r"W must be in \[1, T\] = \[1, 5\] \(window length in steps\), got 0"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 6), NeurosimError, r"\[1, 5\].*got 6"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 2.5), TypeError, r"W must be an integer, got float"),
    (lambda: L.spikemax_sliding(S3, np.zeros((2, 4), int), 2), NeurosimError,
     r"y must have shape \(2,\) or \(2, 5\) .*got \(2, 4\)"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 2, gradient="autograd"), NeurosimError,
     r"gradient must be one of \['authors', 'exact'\], got 'autograd'"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 2, mode="logsoftmax"), NeurosimError,
     r"mode must be one of \['prob', 'softmax'\], got 'logsoftmax'"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 2, clamp=False), NeurosimError,
     r"true class is silent \(rate 0\) at \(sample, step\) \(0, 0\)"),
    (lambda: L.spikemax_sliding(S3, [0, 1], 2, reduction=None), NeurosimError,
     r"reduction must be one of \['mean', 'sum'\], got None"),
    (lambda: L.rate_mse([[0.5, 1.5]], [0], 0.2, 0.03), NeurosimError,
     r"a must hold rates in \[0, 1\], got 1.5 at index \(0, 1\)"),
    (lambda: L.rate_mse([[0.5, 0.5]], [0], 2.0, 0.03), NeurosimError, r"true_rate must be <= 1.0, got 2.0"),
    (lambda: L.rate_mse([[0.5, 0.5]], [0], 0.2, -0.1), NeurosimError, r"false_rate must be >= 0.0, got -0.1"),
    (lambda: L.rate_mse([[0.5, 0.5]], [0], 0.2, 0.03, form="slayer"), NeurosimError,
     r"form='slayer' needs T, the number of time steps \(>= 1\), got None"),
    (lambda: L.rate_mse([[0.5, 0.5]], [0], 0.2, 0.03, form="mse"), NeurosimError,
     r"form must be one of \['lava', 'slayer'\], got 'mse'"),
    (lambda: L.rate_mse([[0.5, 0.5]], [0], 0.2, 0.03, form="slayer", T=0), NeurosimError,
     r"T must be >= 1, got 0"),
    (lambda: L.cross_entropy_readout(np.ones((2, 4)), [0, 1], np.ones((3, 5)), np.ones(3)),
     NeurosimError, r"C must have shape \(K, n\) with n = 4 \(the width of a\), got \(3, 5\)"),
    (lambda: L.cross_entropy_readout(np.ones((2, 4)), [0, 1], np.ones((3, 4)), np.ones(2)),
     NeurosimError, r"c must have shape \(K,\) = \(3,\) \(one bias per row of C\), got \(2,\)"),
    (lambda: L.cross_entropy_readout(np.ones((2, 4)), [0, 1], np.full((3, 4), np.inf), np.ones(3)),
     NeurosimError, r"C contains NaN or inf"),
    (lambda: L.cross_entropy_readout(np.ones((2, 4)), [0, 3], np.ones((3, 4)), np.ones(3)),
     NeurosimError, r"y must hold class indices in \[0, K\) = \[0, 3\), got 3"),
    (lambda: L.predict(N3, silent="zero"), NeurosimError,
     r"silent must be one of \['argmax', 'wrong'\], got 'zero'"),
    (lambda: L.predict([[1, -2]]), NeurosimError, r"counts must hold non-negative counts >= 0, got -2.0 at index \(0, 1\)"),
    (lambda: L.predict_sliding(S3, 9), NeurosimError, r"W must be in \[1, T\] = \[1, 5\]"),
    (lambda: L.window_counts(S3, 0), NeurosimError, r"W must be in \[1, T\] = \[1, 5\]"),
    (lambda: L.accuracy([0, 1], [0, 1, 2]), NeurosimError,
     r"y must have shape \(2,\) to match pred of shape \(2,\), got \(3,\)"),
    (lambda: L.accuracy(np.zeros((2, 5), int), np.zeros(3, int)), NeurosimError,
     r"y must have shape \(2,\) or \(2, 5\) to match pred of shape \(2, 5\), got \(3,\)"),
    (lambda: L.accuracy([0.0, 1.0], [0, 1]), TypeError, r"pred must hold integer class indices"),
    (lambda: L.accuracy([-2, 1], [0, 1]), NeurosimError, r"pred must hold class indices >= 0 or -1 \(silent\), got -2"),
    (lambda: L.accuracy([0, 1], [0, -1]), NeurosimError, r"y must hold class indices >= 0, got -1"),
])
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
