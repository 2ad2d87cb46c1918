"""SPIDE's gradient formula against finite differences and its backward phase against a
linear solve (SPIDE.md section 9, oracles 7 and 8)."""
import numpy as np
import pytest
import scipy.linalg

import neurosim as ns
from neurosim.training import SPIDEConfig, SPIDEModel
from neurosim.training.spide import local_gradients

from reference import dense_matrix


def _fc_net(rng):
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 4, "input")
    net.add_population("l0", 5, ns.LIF())
    net.add_population("l1", 3, ns.LIF(v_th=0.5))
    net.add_projection("F", "x", "l0", ns.Dense(rng.normal(0, 0.8, (4, 5)), bias=rng.normal(0, 0.3, 5)))
    net.add_projection("W1", "l0", "l1", ns.Dense(rng.normal(0, 0.8, (5, 3)), bias=rng.normal(0, 0.3, 3)))
    net.add_projection("fb", "l1", "l0", ns.Dense(rng.normal(0, 0.3, (3, 5)), delay=1))
    return net, rng.random((2, 4)) * 2


def _conv_net(rng):
    net = ns.Network(dtype=np.float64)
    net.add_population("x", (1, 4, 4), "input")
    net.add_population("l0", (2, 4, 4), ns.LIF())
    net.add_population("l1", (2, 2, 2), ns.LIF(v_th=0.4))
    net.add_population("l2", (3, 2, 2), ns.LIF())
    net.add_projection("F", "x", "l0", ns.Conv2d(rng.normal(0, 0.8, (2, 1, 3, 3)), pre_shape=(1, 4, 4),
                                                 padding=1, bias=rng.normal(0.5, 0.3, 2)))
    net.add_projection("pool", "l0", "l1", ns.AvgPool2d(2, pre_shape=(2, 4, 4)))
    net.add_projection("W2", "l1", "l2", ns.Conv2d(rng.normal(0, 0.8, (3, 2, 3, 3)), pre_shape=(2, 2, 2),
                                                   padding=1, bias=rng.normal(0.3, 0.3, 3)))
    net.add_projection("fb", "l2", "l0", ns.ConvTranspose2d(rng.normal(0, 0.3, (3, 2, 3, 3)),
                                                            pre_shape=(3, 2, 2), stride=2, padding=1,
                                                            output_padding=1, delay=1))
    net.add_projection("sk", "l1", "l2", ns.Sparse.fixed_probability(8, 12, 0.5, 0.3, seed=3,
                                                                    bias=rng.normal(0, 0.2, 12)))
    return net, rng.random((2, 1, 4, 4)) * 2


def _flat_x(net, x):
    return ns.chw_to_flat(x) if x.ndim == 4 else x


def equilibrium(net, x, iters=3000):
    """Fixed point of a_l = clamp((Σ W a_pre + b) / Θ, 0, 1) by iteration (float64)."""
    xf = _flat_x(net, x)
    B = xf.shape[0]
    a = {p.name: np.zeros((B, p.n)) for p in net.spiking_populations}
    mats = {q.name: dense_matrix(q) for q in net.projections.values()}
    order = [n for n in net.schedule() if net.populations[n].spiking]
    for _ in range(iters):
        new = {}
        for n in order:
            p = net.populations[n]
            z = np.zeros((B, p.n))
            for q in net.projections.values():
                if q.post != n:
                    continue
                pre = xf if net.populations[q.pre].kind == "input" else (new[q.pre] if q.pre in new else a[q.pre])
                z += pre @ mats[q.name]
                if q.bias is not None:
                    z += q.bias_per_neuron()
            new[n] = np.clip(z / p.neuron.subtract, 0.0, 1.0)
        diff = max(np.abs(new[n] - a[n]).max() for n in order)
        a = new
        if diff < 1e-15:
            break
    return a, mats


def exact_beta(net, a, mats, g_out, out):
    """Solve β = g + J^T β with m = 1[0 < a < 1] (the clamp's derivative)."""
    pops = [p for p in net.spiking_populations]
    offs = np.cumsum([0] + [p.n for p in pops])
    idx = {p.name: i for i, p in enumerate(pops)}
    B = g_out.shape[0]
    betas = {p.name: np.zeros((B, p.n)) for p in pops}
    for b in range(B):
        N = offs[-1]
        M = np.zeros((N, N))
        for q in net.projections.values():
            if q.pre not in idx or q.post not in idx:
                continue
            post = net.populations[q.post]
            m = ((a[q.post][b] > 0) & (a[q.post][b] < 1)).astype(float)
            i, j = idx[q.pre], idx[q.post]
            M[offs[i]:offs[i + 1], offs[j]:offs[j + 1]] += mats[q.name] * m[None, :] / post.neuron.subtract
        gv = np.zeros(N)
        gv[offs[idx[out]]:offs[idx[out] + 1]] = g_out[b]
        beta = scipy.linalg.solve(np.eye(N) - M, gv)
        for p in pops:
            betas[p.name][b] = beta[offs[idx[p.name]]:offs[idx[p.name] + 1]]
    return betas


class _Exact:
    """Stand-in for the two PhaseResults with exact rates, masks and adjoints."""

    def __init__(self, vals, masks=None):
        self.vals, self.masks = vals, masks

    def rates(self, name):
        return self.vals[name]

    def mask(self, name):
        a = self.vals[name]
        return (a > 0) & (a < 1)


@pytest.mark.parametrize("builder", [_fc_net, _conv_net])
def test_gradient_formula_matches_finite_differences(builder):
    rng = np.random.default_rng(2)      # a seed whose equilibrium has active and silent units
    net, x = builder(rng)
    out = [n for n in net.schedule() if net.populations[n].spiking][-1]
    c = rng.normal(size=net.populations[out].n)

    def loss():
        a, _ = equilibrium(net, x)
        return float((a[out] @ c).sum())

    a, mats = equilibrium(net, x)
    for n, v in a.items():      # the check is only meaningful away from the clamp's kinks
        assert np.all((np.abs(v) > 1e-6) & (np.abs(v - 1) > 1e-6) | (v == 0) | (v == 1)), n
    kappa = 100.0
    g = kappa * np.broadcast_to(c, a[out].shape)
    beta = exact_beta(net, a, mats, g, out)
    model = SPIDEModel(net, classes=2, readout=True)
    cfg = SPIDEConfig(kappa=kappa)
    grads, _ = local_gradients(model, cfg, x, _Exact(a), _Exact(beta), {})
    h = 1e-6
    checked = 0
    for key, G in grads.items():
        name, kind = key.split(".")
        pr = net.projections[name]
        arr = pr.weight if kind == "weight" else pr.bias
        num = np.zeros_like(arr)
        for i in range(arr.size):
            old = arr.flat[i]
            arr.flat[i] = old + h
            lp = loss()
            arr.flat[i] = old - h
            lm = loss()
            arr.flat[i] = old
            num.flat[i] = (lp - lm) / (2 * h)
        scale = max(np.abs(num).max(), 1e-12)
        assert np.abs(G - num).max() / scale < 1e-6, (key, np.abs(G - num).max(), scale)
        checked += int(np.count_nonzero(num))
    assert checked > 20
    assert {k.split(".")[0] for k in grads} == {q.name for q in net.projections.values()
                                               if q.has_weights or q.bias is not None}


def test_backward_phase_converges_to_linear_solve():
    """β(T_b) → β* at rate O(1/T_b): T_b · error stays bounded (SPIDE.md 9.7)."""
    rng = np.random.default_rng(3)
    net, x = _fc_net(rng)
    T = 200
    fwd = ns.run_forward(net, T, inputs={"x": x})
    out = "l1"
    # the linear system of the *simulated* masks, with J built from the real weights
    a = {p.name: fwd.rates(p.name) for p in net.spiking_populations}
    mats = {q.name: dense_matrix(q) for q in net.projections.values()}
    for n in a:       # use m from the forward counts, as the engine does
        m = fwd.mask(n)
        a[n] = np.where(m, 0.5, np.where(fwd.counts[n] == 0, 0.0, 1.0))
    g = rng.uniform(-0.3, 0.3, (x.shape[0], 3))
    beta = exact_beta(net, a, mats, g, out)
    assert max(np.abs(v).max() for v in beta.values()) < 1.0   # no ternary saturation
    errs = []
    for Tb in (100, 1000, 10000):
        bwd = ns.run_backward(net, fwd, {out: g}, Tb)
        err = max(np.abs(bwd.rates(n) - beta[n]).max() for n in beta)
        errs.append(err * Tb)
    assert errs[-1] < 10 and max(errs) < 10, errs
    assert errs[-1] / 10000 < errs[0] / 100       # and the error itself shrinks


@pytest.mark.parametrize("seed", range(4))
def test_weight_grad_kernel_matches_dense_twin(seed):
    """kernels.spide.weight_grad (through projection_grads) against its dense twin, on
    dyadic values (exact in float64) with zeros in both factors."""
    from neurosim.local_rule import projection_grads
    from reference import weight_grad
    rng = np.random.default_rng(seed)
    dy = lambda shape: rng.integers(-8, 9, shape) / 8.0
    projs = [ns.Dense(dy((5, 4))), ns.Sparse.fixed_probability(6, 5, 0.4, 1.0, seed=seed),
             ns.Conv2d(dy((3, 2, 3, 3)), pre_shape=(2, 5, 6), stride=2, padding=1),
             ns.Conv2d(dy((2, 2, 5, 5)), pre_shape=(2, 7, 7), stride=1, padding=2),
             ns.ConvTranspose2d(dy((2, 3, 3, 3)), pre_shape=(2, 3, 4), stride=2, padding=1,
                                output_padding=1)]
    for pr in projs:
        a = dy((3, pr.n_pre)) * (rng.random((3, pr.n_pre)) < 0.6)
        d = dy((3, pr.n_post)) * (rng.random((3, pr.n_post)) < 0.5)
        g, ops = projection_grads(pr, a, d)
        G, ops_ref = weight_grad(pr, a, d)
        np.testing.assert_array_equal(g["weight"], G)
        np.testing.assert_array_equal(ops, ops_ref)


@pytest.mark.parametrize("seed", range(2))
def test_weight_grad_sparse_and_dense_error_rows(seed):
    """Wide receivers (>= SPARSE_MIN_C channels) take the kernel's packed-nonzero path at
    sites with few nonzero errors and the whole-row path elsewhere; both against the dense
    twin, exactly (dyadic values), with sites of 0, 1, a few and most channels nonzero."""
    from neurosim.kernels import spide as K
    from neurosim.local_rule import projection_grads
    from reference import weight_grad
    rng = np.random.default_rng(10 + seed)
    dy = lambda shape: rng.integers(-8, 9, shape) / 8.0
    C = K.SPARSE_MIN_C + 8
    projs = [ns.Conv2d(dy((C, 3, 3, 3)), pre_shape=(3, 6, 5), stride=1, padding=1),
             ns.ConvTranspose2d(dy((3, C, 3, 3)), pre_shape=(3, 3, 3), stride=2, padding=1)]
    for pr in projs:
        B, n_sites = 3, pr.n_post // C
        a = dy((B, pr.n_pre)) * (rng.random((B, pr.n_pre)) < 0.6)
        # per receiver site, how many of its C channels carry a nonzero error
        k = rng.choice([0, 1, 2, C // K.SPARSE_ROW - 1, C // K.SPARSE_ROW, C], (B, n_sites))
        mask = rng.random((B, n_sites, C)).argsort(2) < k[..., None]
        vals = rng.integers(1, 9, (B, n_sites, C)) * rng.choice([-1, 1], (B, n_sites, C)) / 8
        d = (mask * vals).reshape(B, pr.n_post)
        few = (k > 0) & (k * K.SPARSE_ROW < C)
        assert few.any() and (k * K.SPARSE_ROW >= C).any()       # both paths are taken
        g, ops = projection_grads(pr, a, d)
        G, ops_ref = weight_grad(pr, a, d)
        np.testing.assert_array_equal(g["weight"], G)
        np.testing.assert_array_equal(ops, ops_ref)


def test_output_gate_one_sided():
    """The spiking-output gate lets a gradient through the clamp only towards the range:
    silent neurons are pushed up, never further down; saturated ones only down."""
    from neurosim.training.spide import output_gate
    T = 30
    counts = np.array([[0, 0, 5, 5, T, T]])
    g = np.array([[-0.5, 0.5, -0.5, 0.5, -0.5, 0.5]])
    np.testing.assert_array_equal(output_gate(counts, g, T),
                                  [[True, False, True, True, False, True]])
    assert output_gate(counts, g, T, "all").all()
    # the default of training configs and of the spiking-output model
    from neurosim.models import load_model
    from neurosim.training.spide import SPIDEConfig
    from neurosim.training.trainer import config_for
    assert SPIDEConfig().output_gate == "one-sided"
    assert config_for(load_model("fsnn_mlp_spiking"), {})[0].output_gate == "one-sided"
    with pytest.raises(ValueError, match="output_gate"):
        SPIDEConfig(output_gate="both")


@pytest.mark.parametrize("builder", [_fc_net, _conv_net])
@pytest.mark.parametrize("readout", [True, False])
def test_post_error_kernel_matches_dense_twin(builder, readout):
    """post_errors on the engine's results (kernels.spide.post_error on the threads)
    against its dense twin, exactly: the forward-count mask (mode 0, the one default, also
    for a spiking output without a readout: decisions 51) and a given gate (mode 1); the
    kernel's m = 1 (mode 2), which the library no longer asks for, called directly."""
    from neurosim.kernels.spide import post_error as kernel
    from neurosim.local_rule import post_errors
    from reference import post_error
    rng = np.random.default_rng(2)           # a seed with forward and backward activity
    net, x = builder(rng)
    out = [p.name for p in net.spiking_populations][-1]
    T, Tb = 20, 40
    fwd = ns.run_forward(net, T, inputs={"x": x})
    bwd = ns.run_backward(net, fwd, {out: rng.uniform(-0.6, 0.6, (x.shape[0], net.populations[out].n))}, Tb)
    gated = [p.name for p in net.spiking_populations][0]
    gate = {gated: rng.random(fwd.counts[gated].shape) < 0.5}
    delta = post_errors(net, fwd, bwd, gate)
    modes = set()
    for p in net.spiking_populations:
        n = p.name
        assert bwd.weighted_counts.get(n) is None          # the kernel path
        mode = 1 if n in gate else 0
        modes.add(mode)
        want = post_error(bwd.counts[n], bwd.counts_neg[n], fwd.counts[n], gate.get(n), mode,
                          T, p.ternary.subtract, Tb, p.neuron.subtract)
        np.testing.assert_array_equal(delta[n], want, err_msg=n)
    assert all(np.count_nonzero(d) for d in delta.values())
    assert modes == {0, 1}
    if not readout:
        p = net.populations[out]
        c = lambda a: np.ascontiguousarray(a)
        d = np.empty(fwd.counts[out].shape, np.float64)
        kernel(c(bwd.counts[out]), c(bwd.counts_neg[out]), c(fwd.counts[out]), 0, 0, 0,
               np.zeros((1, 1), np.uint8), 2, T, float(p.ternary.subtract), float(Tb),
               float(p.neuron.subtract), 0, d.shape[0], d)
        want = post_error(bwd.counts[out], bwd.counts_neg[out], fwd.counts[out], None, 2,
                          T, p.ternary.subtract, Tb, p.neuron.subtract)
        np.testing.assert_array_equal(d, want)


@pytest.mark.parametrize("builder", [_fc_net, _conv_net])
def test_post_errors_default_gate_is_the_backward_phases(builder):
    """One default gate (decisions 51): without a given gate every population, a spiking
    output included, is gated by its forward mask m, as run_backward gates its senders;
    the same δ as with m given, and different from the former m = 1 of the output."""
    from neurosim import local_rule as LR
    rng = np.random.default_rng(2)
    net, x = builder(rng)
    out = [p.name for p in net.spiking_populations][-1]
    fwd = ns.run_forward(net, 20, inputs={"x": x})
    bwd = ns.run_backward(net, fwd, {out: rng.uniform(-0.6, 0.6, (x.shape[0], net.populations[out].n))}, 40)
    m = fwd.mask(out)
    assert not m.all()                          # the old default would differ here
    got = LR.post_errors(net, fwd, bwd)
    np.testing.assert_array_equal(got[out], LR.post_errors(net, fwd, bwd, {out: m})[out])
    np.testing.assert_array_equal(LR.gate(fwd, out), m)
    ones = LR.post_errors(net, fwd, bwd, {out: np.ones_like(m)})[out]
    assert not np.array_equal(got[out], ones)
