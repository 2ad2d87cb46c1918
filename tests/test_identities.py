"""Exact identities and error bounds of SPIDE's neurons (spec section 7, oracles 2-5).

* conservation: Θ·N + u(T) = Σ_t I(t) per forward neuron, Θ_b·Σq + w(T_b) = Σ_t Ib(t) per
  ternary couple, and the λ-weighted versions with u taken before the last leak;
* single-neuron rate error bounds (modified reset: |N/T - I/Θ| <= 1/(2T), attained;
  reset to 0: error in (-1/T, 0]; ternary: |β - I| <= Θ_b/(2T_b));
* counting: Σ over synapses of per-synapse counts = Σ_j sent[j] · out_degree[j];
* m = 1 exactly when 1 <= count <= T-1.

The input sums Σ_t I(t) come from the dense reference (on dyadic grids they are exact);
counts, potentials and sent counts come from the engine.
"""
import numpy as np
import pytest

import neurosim as ns
import reference
from conftest import random_case
from neurosim import counting

SEEDS = range(400, 430)


def _identity_pops(net, backward):
    """Populations where the conservation identity holds: LIF with subtractive reset and
    no refractoriness (forward); every spiking population (backward)."""
    out = []
    for name, p in net.populations.items():
        if not p.spiking:
            continue
        if backward:
            out.append(name)
        elif isinstance(p.neuron, ns.LIF) and p.neuron.reset == "subtract" and p.neuron.t_ref == 0:
            out.append(name)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_conservation_forward_and_backward(seed):
    case = random_case(seed, plain=True)
    net = case.net
    fwd = ns.run_forward(net, case.steps, **case.fwd_kwargs)
    ref = reference.run_phase(net, case.steps, inputs=case.inputs, spikes=case.spikes,
                              currents=case.currents, masks=case.masks, batch=case.batch)
    bwd = ns.run_backward(net, fwd, case.grad, case.steps_b)
    refb = reference.run_phase(net, case.steps_b, backward=True, grad=case.grad, forward=ref)
    checked = 0
    for name in _identity_pops(net, False):
        nr = net.populations[name].neuron
        lam = nr.leak
        if lam == 1.0:
            lhs = nr.subtract * fwd.counts[name] + fwd.v_final[name]
            np.testing.assert_array_equal(lhs, ref["input_sum"][name], err_msg=f"{name} {case}")
        else:   # Θ Σ λ^(T-1-t) s(t) + u(T)/λ = Σ λ^(T-1-t) I(t), exact on the dyadic grid
            lhs = nr.subtract * fwd.weighted_counts[name] + fwd.v_final[name] / lam
            np.testing.assert_array_equal(lhs, ref["input_wsum"][name], err_msg=f"{name} {case}")
        checked += 1
    for name in _identity_pops(net, True):
        tn = net.populations[name].ternary
        if tn.leak == 1.0:
            qsum = bwd.counts[name].astype(np.int64) - bwd.counts_neg[name]
            lhs = tn.subtract * qsum + bwd.v_final[name]
            np.testing.assert_array_equal(lhs, refb["input_sum"][name], err_msg=f"{name} {case}")
        else:
            lhs = tn.subtract * bwd.weighted_counts[name] + bwd.v_final[name] / tn.leak
            np.testing.assert_array_equal(lhs, refb["input_wsum"][name], err_msg=f"{name} {case}")
        checked += 1
    assert checked >= 2


def test_conservation_with_known_input_sum():
    """No reference needed: constant plus time-varying currents into unconnected IF neurons."""
    rng = np.random.default_rng(0)
    T, n = 37, 64
    c = np.round(rng.uniform(-1, 3, (2, n)) * 64) / 64
    tv = np.round(rng.uniform(-1, 1, (2, T, n)) * 64) / 64
    net = ns.Network(dtype=np.float64)
    net.add_population("a", n, ns.LIF())
    net.add_population("b", n, ns.LIF())
    res = ns.run_forward(net, T, currents={"a": c, "b": c[:, None, :] + tv})
    np.testing.assert_array_equal(2.0 * res.counts["a"] + res.v_final["a"], T * c)
    np.testing.assert_array_equal(2.0 * res.counts["b"] + res.v_final["b"], T * c + tv.sum(1))


# ---------------------------------------------------------------------------------------
# single-neuron error bounds
def _single_forward(I, T, neuron):
    net = ns.Network(dtype=np.float64)
    net.add_population("p", I.size, neuron)
    return ns.run_forward(net, T, currents={"p": I[None]})


@pytest.mark.parametrize("T", [8, 32, 30, 100])
def test_if_rate_error_modified_reset(T):
    """Θ = 2θ: |N/T - I/Θ| <= 1/(2T) for I in [0, Θ]; equality attained on a fine grid."""
    theta, Theta = 1.0, 2.0
    I = Theta * np.arange(0, 8 * T + 1) / (8 * T) if T & (T - 1) == 0 else np.arange(0, 513) / 256
    res = _single_forward(I, T, ns.LIF(v_th=theta))
    err = res.counts["p"][0] / T - I / Theta
    assert np.all(np.abs(err) <= 1 / (2 * T) + 1e-12)
    assert np.all(err > -1 / (2 * T) - 1e-12)          # the interval is (-1/(2T), 1/(2T)]
    if T & (T - 1) == 0:    # powers of two: the grid holds I = Θ(2k+1)/(2T), where u(T) = -θ
        assert np.abs(err).max() == 1 / (2 * T)
    np.testing.assert_allclose(res.rates("p")[0], res.counts["p"][0] / T)


@pytest.mark.parametrize("T", [8, 32, 30])
def test_if_rate_error_reset_to_zero(T):
    """Θ = θ (IDE's neuron, reset to 0): error in (-1/T, 0], 0 attained, about -1/T approached."""
    Theta = 2.0
    I = Theta * np.arange(0, 8 * T + 1) / (8 * T) if T & (T - 1) == 0 else np.arange(0, 513) / 256
    res = _single_forward(I, T, ns.LIF(v_th=Theta, subtract=Theta))
    err = res.counts["p"][0] / T - I / Theta
    assert np.all(err <= 1e-12) and np.all(err > -1 / T)
    assert np.any(err == 0)
    assert err.min() < -1 / (2 * T)            # worse than the modified reset's bound


def test_if_rate_clamps_outside_range():
    T = 20
    I = np.array([-1.0, -0.25, 0.0, 2.0, 2.5, 7.0])
    res = _single_forward(I, T, ns.LIF())
    np.testing.assert_array_equal(res.counts["p"][0], [0, 0, 0, T, T, T])


def test_lif_weighted_rate_error():
    """λ = 0.5: |a - I/Θ| <= 1 / (2 Σ_{k<T} λ^k) for the leak-weighted rate a."""
    T, lam = 12, 0.5
    I = np.arange(0, 257) / 128
    res = _single_forward(I, T, ns.LIF(leak=lam))
    a = res.rates("p")[0]
    norm = np.sum(lam ** np.arange(T))
    np.testing.assert_array_equal(res.weighted_counts["p"][0] * 1.0,
                                  a * norm)
    assert np.all(np.abs(a - I / 2.0) <= 1 / (2 * norm) + 1e-12)


@pytest.mark.parametrize("Tb", [8, 32, 25])
def test_ternary_rate_error(Tb):
    """|β - I| <= Θ_b/(2T_b) = 1/(2T_b) for |I| <= Θ_b; attained on the grid."""
    Theta_b = 1.0
    I = Theta_b * np.arange(-8 * Tb, 8 * Tb + 1) / (8 * Tb) if Tb & (Tb - 1) == 0 \
        else np.arange(-256, 257) / 256
    net = ns.Network(dtype=np.float64)
    net.add_population("p", I.size, ns.LIF())
    fwd = ns.run_forward(net, 4, batch=1)
    bwd = ns.run_backward(net, fwd, {"p": I[None]}, Tb)
    beta = bwd.rates("p")[0]
    np.testing.assert_array_equal(
        beta, Theta_b * (bwd.counts["p"][0].astype(np.int64) - bwd.counts_neg["p"][0]) / Tb)
    err = beta - I
    assert np.all(np.abs(err) <= Theta_b / (2 * Tb) + 1e-12)
    if Tb & (Tb - 1) == 0:
        assert np.abs(err).max() == Theta_b / (2 * Tb)
    # symmetric: -I gives -β
    np.testing.assert_array_equal(beta, -beta[::-1])


def test_ternary_tie_alternates():
    """Spec section 7: a couple that fires at exactly +θ_b lands on -θ_b and, with zero
    input, then alternates -1, +1, -1, ... (inclusive thresholds, Θ_b = 2θ_b)."""
    from neurosim.kernels.neurons import ternary_step
    w = np.zeros(1)
    qs = []
    for t in range(9):
        q = np.zeros(1, np.int8)
        ternary_step(w, np.array([0.5 if t == 0 else 0.0]), 0.5, 1.0, 1.0, q)
        qs.append(int(q[0]))
    assert qs == [1, -1, 1, -1, 1, -1, 1, -1, 1]
    qs = []
    w = np.zeros(1)
    for t in range(9):
        q = np.zeros(1, np.int8)
        reference.ternary_step(w, np.array([0.5 if t == 0 else 0.0]), 0.5, 1.0, 1.0, q)
        qs.append(int(q[0]))
    assert qs == [1, -1, 1, -1, 1, -1, 1, -1, 1]


# ---------------------------------------------------------------------------------------
# counting identity
@pytest.mark.parametrize("seed", range(500, 520))
def test_synapse_counts_equal_sent_times_out_degree(seed):
    case = random_case(seed)
    net = case.net
    fwd = ns.run_forward(net, case.steps, **case.fwd_kwargs)
    bwd = ns.run_backward(net, fwd, case.grad, case.steps_b)
    for name in fwd.sent:
        pr = net.projections[name]
        S = reference.synapse_matrix(pr)                  # explicit-loop multiplicities
        np.testing.assert_array_equal(S.sum(1), pr.out_degree(), err_msg=name)
        np.testing.assert_array_equal(S.sum(0), counting.in_degree(pr), err_msg=name)
        sent = fwd.sent[name]                             # [B, n_pre]
        # Σ_synapses count = Σ_{j,i} sent[j] S[j,i] = Σ_j sent[j] out_degree[j]
        by_synapse = np.einsum("bj,ji->b", sent, S)
        np.testing.assert_array_equal(by_synapse, sent @ pr.out_degree())
        np.testing.assert_array_equal(counting.synaptic_events(fwd, name), by_synapse)
        per = counting.per_synapse(fwd, name)["count"]
        assert per.sum() == by_synapse.sum()
        # the same through count_synops on the spike list of every (sample, step)
        assert reference.count_synops(S, np.repeat(np.arange(pr.n_pre), sent.sum(0))) == by_synapse.sum()
    # the analog input encoding: nonzero inputs × fan-out (summed over steps if per-step)
    for name, ops in fwd.input_ops.items():
        pr = net.projections[name]
        x = np.asarray(case.inputs[pr.pre], np.float64)
        tv = x.ndim in (3, 5)
        x = reference.to_flat(x, net.populations[pr.pre].shape, 2 if tv else 1)
        x = x if tv else x[:, None, :]
        S = reference.synapse_matrix(pr)
        want = [sum(reference.count_synops(S, np.flatnonzero(xt)) for xt in xb) for xb in x]
        np.testing.assert_array_equal(ops, want, err_msg=name)
    for name in bwd.sent:
        pr = net.projections[name]
        S = reference.synapse_matrix(pr)
        pos = np.einsum("bi,ji->b", bwd.sent[name], S)    # backward senders are post neurons
        neg = np.einsum("bi,ji->b", bwd.sent_neg[name], S)
        ev_pos, ev_neg = counting.synaptic_events(bwd, name)
        np.testing.assert_array_equal(ev_pos, pos)
        np.testing.assert_array_equal(ev_neg, neg)


# ---------------------------------------------------------------------------------------
# m
@pytest.mark.parametrize("seed", range(600, 610))
def test_mask_is_one_exactly_for_intermediate_counts(seed):
    case = random_case(seed)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    T = case.steps
    for p in case.net.spiking_populations:
        c = fwd.spikes[p.name].sum(1)
        np.testing.assert_array_equal(fwd.mask(p.name), (c >= 1) & (c <= T - 1))
        np.testing.assert_array_equal(fwd.mask(p.name), reference.forward_mask(fwd.counts[p.name], T))
    # with the default gate, senders with m = 0 deliver nothing backward
    bwd = ns.run_backward(case.net, fwd, case.grad, case.steps_b)
    for name, s in bwd.sent.items():
        snd = case.net.projections[name].post
        m = fwd.mask(snd)
        assert not np.any(s[~m]) and not np.any(bwd.sent_neg[name][~m])


def test_mask_boundaries_single_neurons():
    T = 10
    # silent (0 spikes), exactly 1, exactly T-1, saturated (T)
    I = np.array([0.0, 0.25, 1.75, 2.0, 5.0])
    res = _single_forward(I, T, ns.LIF())
    c = res.counts["p"][0]
    np.testing.assert_array_equal(c, [0, 1, 9, 10, 10])
    np.testing.assert_array_equal(res.mask("p")[0], [False, True, True, False, False])


# ---------------------------------------------------------------------------------------
# regression: weighted counts of a non-leaky population in a leaky network (were zeros)
def test_rates_of_if_population_in_leaky_network():
    net = ns.Network(dtype=np.float64)
    net.add_population("a", 3, ns.LIF(leak=0.5))
    net.add_population("b", 3, ns.LIF())
    net.add_projection("ab", "a", "b", ns.Dense(np.eye(3)))
    T = 8
    res = ns.run_forward(net, T, currents={"a": np.full((1, 3), 1.5), "b": np.full((1, 3), 0.75)})
    assert res.counts["b"].sum() > 0
    np.testing.assert_array_equal(res.rates("b"), res.counts["b"] / T)


def test_rates_in_mixed_leak_networks_both_phases():
    """Same regression for CubaLIF populations (no leak attribute) and for the backward
    phase (one ternary population leaks, the other does not)."""
    net = ns.Network(dtype=np.float64)
    net.add_population("a", 3, ns.LIF(leak=0.5), ns.Ternary(leak=0.5))
    net.add_population("b", 3, ns.LIF(), ns.Ternary())
    net.add_projection("ab", "a", "b", ns.Dense(np.eye(3)))
    T, Tb = 8, 10
    fwd = ns.run_forward(net, T, currents={"a": np.full((1, 3), 1.5), "b": np.full((1, 3), 0.75)})
    bwd = ns.run_backward(net, fwd, {"b": np.full((1, 3), 0.25)}, Tb)
    qb = bwd.counts["b"].astype(np.int64) - bwd.counts_neg["b"]
    assert qb.sum() > 0
    np.testing.assert_array_equal(bwd.rates("b"), qb / Tb)
    ref = reference.run_phase(net, Tb, backward=True, grad={"b": np.full((1, 3), 0.25)}, forward=fwd)
    norm = np.sum(0.5 ** np.arange(Tb))
    np.testing.assert_array_equal(bwd.rates("a"), ref["weighted_counts"]["a"] / norm)

    net2 = ns.Network(dtype=np.float64)
    net2.add_population("a", 3, ns.LIF(leak=0.5))
    net2.add_population("c", 3, ns.CubaLIF(v_th=0.25, tau_mem=5.0))
    res = ns.run_forward(net2, T, currents={"a": np.full((1, 3), 1.5), "c": np.full((1, 3), 1.0)})
    assert res.counts["c"].sum() > 0
    np.testing.assert_array_equal(res.rates("c"), res.counts["c"] / T)
