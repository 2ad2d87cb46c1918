"""The vectorised CubaLIF path (neurosim/kernels/cuba.py) and initial potentials (v_init).

The engine's CubaLIF update must stay bit-identical to the per-neuron kernel and to the
dense reference: recurrent CUBA-style networks (one population, excitatory and
inhibitory CSR projections on two receptor ports, delay 1) are compared exactly, in the
fused case (each port fed by one unmasked projection) and in the gathered one (masks,
two projections on one port, a port without input), plus populations with three ports
(per-neuron path).
"""
import numpy as np
import pytest

import neurosim as ns
import reference
from conftest import GRID, assert_close, random_case
from neurosim._validate import NeurosimError
from neurosim.kernels import cuba as kc
from neurosim.kernels import neurons as kn
from test_engine_reference import _assert_phase_equal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tau_syn", [(5.0,), (2.0, 10.0), (2.0, 5.0, 10.0)])
@pytest.mark.parametrize("n", [1, 7, 130])
def test_cuba_block_step_matches_kernel_and_twin(n, tau_syn, dtype):
    """Bit-identical to the per-neuron kernel; within eps of the float64 twin."""
    nr = ns.CubaLIF(v_rest=-0.1, v_th=1.0, v_reset=-0.2, tau_mem=10.0, tau_syn=tau_syn, t_ref=2.0,
                    i_e=0.3)
    rng = np.random.default_rng(n + len(tau_syn))
    P = nr.n_ports
    v = rng.uniform(-0.2, 1.0, n).astype(dtype)
    isyn = rng.normal(0, 0.5, (P, n)).astype(dtype)
    ref = rng.integers(0, 3, n).astype(np.int32)
    v1, isyn1, ref1 = v.copy(), isyn.copy(), ref.copy()
    v2, isyn2, ref2 = v.copy(), isyn.copy(), ref.copy()
    const = rng.normal(0, 0.2, n).astype(dtype)
    a_syn, p_syn = np.array(nr.alpha_syn), np.array(nr.p_syn)
    args = (nr.v_rest, nr.v_th, nr.v_reset, nr.alpha_mem, a_syn, p_syn, nr.i_e, nr.ref_steps)
    total = 0
    for _ in range(12):
        ev = (rng.normal(0.5, 1.0, (P, n)) * (rng.random((P, n)) < 0.3)).astype(dtype)
        s, s1, s2 = (np.zeros(n, np.bool_) for _ in range(3))
        c = kc.cuba_block_step(v, isyn, ref, ev, const, *args, s)
        c1 = kn.cuba_step(v1, isyn1, ref1, ev, const, *args, s1)
        c2 = reference.cuba_block_step(v2, isyn2, ref2, ev, const, *args, s2)
        np.testing.assert_array_equal(s, s1)
        np.testing.assert_array_equal(s, s2)
        assert c == c1 == c2 == s.sum()
        np.testing.assert_array_equal(v, v1)
        np.testing.assert_array_equal(isyn, isyn1)
        np.testing.assert_array_equal(ref, ref1)
        np.testing.assert_array_equal(ref, ref2)
        assert_close(v, v2, dtype, np.abs(v2) + np.abs(isyn2).sum(0) + 2.0)
        total += c
    assert total > 0 or n == 1


def _dyadic_weights(rng, n, scale):
    return np.round(rng.normal(0.0, scale, n) / GRID) * GRID


def cuba_net(n, p, *, seed, ports=2, extra_e=False, t_ref=2.0, dtype=np.float64):
    """A CUBA-style recurrent network: one CubaLIF population, excitatory (first 80 %)
    and inhibitory senders through CSR projections of delay 1 on ports 0 and 1; dyadic
    weights.  ``extra_e`` adds a second projection on port 0 (the gathered path)."""
    rng = np.random.default_rng(seed)
    ne = int(0.8 * n)
    nr = ns.CubaLIF(v_rest=0.625, v_th=0.5, v_reset=0.0, tau_mem=10.0,
                    tau_syn=(5.0, 10.0, 2.0)[:ports], t_ref=t_ref, dt=1.0)
    net = ns.Network(dtype=dtype)
    net.add_population("P", n, nr)

    def proj(name, lo, hi, sign, port):
        m = rng.random((hi - lo, n)) < p
        pre, post = np.nonzero(m)
        w = sign * np.abs(_dyadic_weights(rng, pre.size, 0.2))
        net.add_projection(name, "P", "P", ns.Sparse.from_edges(pre + lo, post, w, pre_shape=n,
                                                                 post_shape=n, delay=1, port=port))
    proj("E", 0, ne, 1.0, 0)
    proj("I", ne, n, -1.0, 1 if ports > 1 else 0)
    if extra_e:
        proj("E2", 0, ne, 1.0, 0)
    if ports > 2:
        proj("X", 0, n, 1.0, 2)
    return net


def _v0(rng, net, B):
    nr = net.populations["P"].neuron
    n = net.populations["P"].n
    return np.round(rng.uniform(nr.v_reset, nr.v_th, (B, n)) / GRID) * GRID


@pytest.mark.parametrize("variant", ["fused", "one_port", "two_on_port0", "masked", "three_ports",
                                     "float32"])
def test_recurrent_cuba_network_matches_reference(variant):
    """Spike trains, counts, events sent and final potentials equal the reference's."""
    kw = dict(fused={}, one_port=dict(ports=1), two_on_port0=dict(extra_e=True), masked={},
              three_ports=dict(ports=3), float32=dict(dtype=np.float32))[variant]
    net = cuba_net(60, 0.15, seed=3, **kw)
    rng = np.random.default_rng(7)
    B = 2
    v_init = {"P": _v0(rng, net, B)}
    masks = {}
    if variant == "masked":
        masks = {"E": rng.choice([0.0, 2.0], (B, 60))}
    fwd = ns.run_forward(net, 120, batch=B, v_init=v_init, masks=masks, record=True)
    ref = reference.run_phase(net, 120, batch=B, v_init=v_init, masks=masks)
    if variant == "float32":     # the float64 reference rounds differently: counts only
        diff = np.abs(fwd.counts["P"].astype(np.int64) - ref["counts"]["P"]).sum()
        assert diff <= 0.02 * ref["counts"]["P"].sum() + 4
        return
    _assert_phase_equal(fwd, ref, variant)
    assert fwd.counts["P"].sum() > 50                  # the network is active
    assert fwd.neuron_updates["P"].tolist() == [60 * 120] * B


@pytest.mark.parametrize("seed", range(1000, 1012))
def test_v_init_on_random_cuba_networks(seed):
    case = random_case(seed, cuba=True)
    rng = np.random.default_rng(seed)
    v_init = {}
    for p in case.net.populations.values():
        if p.kind == "cuba_lif":
            nr = p.neuron
            v_init[p.name] = np.round(rng.uniform(nr.v_reset, nr.v_th + 0.1, p.n) / GRID) * GRID
    fwd = ns.run_forward(case.net, case.steps, record=True, v_init=v_init, **case.fwd_kwargs)
    ref = reference.run_phase(case.net, case.steps, inputs=case.inputs, spikes=case.spikes,
                              currents=case.currents, masks=case.masks, batch=case.batch,
                              v_init=v_init)
    _assert_phase_equal(fwd, ref, case)


def test_v_init_default_is_v_rest_and_lif_starts_at_zero():
    net = cuba_net(20, 0.0, seed=0)
    r0 = ns.run_forward(net, 5, batch=1)
    r1 = ns.run_forward(net, 5, batch=1, v_init={"P": np.full(20, 0.625)})
    np.testing.assert_array_equal(r0.v_final["P"], r1.v_final["P"])
    r2 = ns.run_forward(net, 5, batch=1, v_init={"P": np.full(20, 0.1)})
    assert not np.array_equal(r0.v_final["P"], r2.v_final["P"])


def test_v_init_bad_input():
    net = cuba_net(10, 0.1, seed=0)
    net.add_population("L", 4, ns.LIF())
    with pytest.raises(NeurosimError, match="not a CubaLIF population"):
        ns.run_forward(net, 3, v_init={"L": np.zeros(4)})
    with pytest.raises(NeurosimError, match="not a CubaLIF population"):
        ns.run_forward(net, 3, v_init={"nope": np.zeros(4)})
    with pytest.raises(NeurosimError, match="v_init"):
        ns.run_forward(net, 3, v_init={"P": np.zeros(9)})
    with pytest.raises(NeurosimError, match="v_init"):
        ns.run_forward(net, 3, v_init={"P": np.full(10, np.nan)})
    with pytest.raises(NeurosimError, match="batch"):
        ns.run_forward(net, 3, batch=2, v_init={"P": np.zeros((3, 10))})
