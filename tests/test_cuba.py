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
from neurosim.kernels import threads as kth
from neurosim.kernels import neurons as kn
from test_engine_reference import _assert_phase_equal


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
                                     "float32", "currents", "tv_currents"])
def test_recurrent_cuba_network_matches_reference(variant):
    """Spike trains, counts, events sent and final potentials equal the reference's
    (uniform drive, per-neuron constant currents, time-varying currents)."""
    kw = dict(fused={}, one_port=dict(ports=1), two_on_port0=dict(extra_e=True), masked={},
              three_ports=dict(ports=3), float32=dict(dtype=np.float32), currents={},
              tv_currents={})[variant]
    net = cuba_net(60, 0.15, seed=3, **kw)
    rng = np.random.default_rng(7)
    B = 2
    v_init = {"P": _v0(rng, net, B)}
    masks, currents = {}, {}
    if variant == "masked":
        masks = {"E": rng.choice([0.0, 2.0], (B, 60))}
    if variant == "currents":
        currents = {"P": np.round(rng.normal(0, 0.1, (B, 60)) / GRID) * GRID}
    if variant == "tv_currents":
        currents = {"P": np.round(rng.normal(0, 0.1, (B, 120, 60)) / GRID) * GRID}
    fwd = ns.run_forward(net, 120, batch=B, v_init=v_init, masks=masks, currents=currents,
                         record=True)
    ref = reference.run_phase(net, 120, batch=B, v_init=v_init, masks=masks, currents=currents)
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
    with pytest.raises(NeurosimError, match="takes no initial potential"):
        ns.run_forward(net, 3, v_init={"L": np.zeros(4)})
    with pytest.raises(NeurosimError, match="takes no initial potential"):
        ns.run_forward(net, 3, v_init={"nope": np.zeros(4)})
    with pytest.raises(NeurosimError, match="v_init"):
        ns.run_forward(net, 3, v_init={"P": np.zeros(9)})
    with pytest.raises(NeurosimError, match="v_init"):
        ns.run_forward(net, 3, v_init={"P": np.full(10, np.nan)})
    with pytest.raises(NeurosimError, match="batch"):
        ns.run_forward(net, 3, batch=2, v_init={"P": np.zeros((3, 10))})


# ---------------------------------------------------------------------------------------
# the recurrent CubaLIF runner (kernels.cuba.run_split): one sample, a neuron range per
# thread; compared with the general engine (its plan switched off) and the reference
def _two_pop_net(seed):
    """E (200) and I (72) CubaLIF populations, CSR and dense projections with delays 1
    and 2, an analog input population feeding E through a dense map."""
    rng = np.random.default_rng(seed)
    ne, ni = 200, 72
    nr_e = ns.CubaLIF(v_rest=0.625, v_th=0.5, v_reset=0.0, tau_mem=10.0, tau_syn=(5.0, 10.0),
                      t_ref=2.0)
    nr_i = ns.CubaLIF(v_rest=0.5625, v_th=0.5, v_reset=0.0, tau_mem=8.0, tau_syn=(4.0,))
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 8, "input")
    net.add_population("E", ne, nr_e)
    net.add_population("I", ni, nr_i)
    net.add_projection("in", "x", "E", ns.Dense(_dyadic_weights(rng, 8 * ne, 0.05).reshape(8, ne)))

    def sparse(n_pre, n_post, sign, port, delay):
        pre, post = np.nonzero(rng.random((n_pre, n_post)) < 0.1)
        w = sign * np.abs(_dyadic_weights(rng, pre.size, 0.2))
        return ns.Sparse.from_edges(pre, post, w, pre_shape=n_pre, post_shape=n_post, delay=delay,
                                    port=port)
    net.add_projection("EE", "E", "E", sparse(ne, ne, 1.0, 0, 1))
    net.add_projection("EI", "E", "I", sparse(ne, ni, 1.0, 0, 2))
    net.add_projection("IE", "I", "E", ns.Dense(-np.abs(_dyadic_weights(rng, ni * ne, 0.05))
                                                .reshape(ni, ne), delay=1, port=1))
    v_init = {"E": np.round(rng.uniform(0, 0.5, ne) / GRID) * GRID,
              "I": np.round(rng.uniform(0, 0.5, ni) / GRID) * GRID}
    return net, v_init, {"x": np.round(rng.uniform(0, 1, (1, 8)) / GRID) * GRID}


def _unsorted_net():
    """cuba_net with every row of the excitatory CSR reversed (targets in falling order)."""
    src = cuba_net(150, 0.1, seed=5)
    net = ns.Network(dtype=np.float64)
    net.add_population("P", 150, src.populations["P"].neuron)
    pr = src.projections["E"]
    indices, weights = pr.indices.copy(), pr.weight.copy()
    for j in range(pr.n_pre):
        a, b = pr.indptr[j], pr.indptr[j + 1]
        indices[a:b] = indices[a:b][::-1]
        weights[a:b] = weights[a:b][::-1]
    net.add_projection("E", "P", "P", ns.Sparse(pr.indptr, indices, weights, pre_shape=150,
                                                post_shape=150, delay=1, port=0))
    net.add_projection("I", "P", "P", src.projections["I"])
    return net


class SplitSpy(list):
    """Ranges per call of run_split (split also for small networks); ``general()`` runs
    the general engine instead."""

    def __init__(self, monkeypatch):
        from neurosim import engine
        super().__init__()
        self.engine, self.monkeypatch = engine, monkeypatch
        self.plan = engine._split_plan
        monkeypatch.setattr(engine, "SPLIT_MIN_NEURONS", 0)
        real = engine.run_split

        def spy(*a):
            self.append(a[1])
            return real(*a)
        monkeypatch.setattr(engine, "run_split", spy)

    def general(self, *args, **kw):
        self.monkeypatch.setattr(self.engine, "_split_plan", lambda *a: None)
        try:
            return ns.run_forward(*args, **kw)
        finally:
            self.monkeypatch.setattr(self.engine, "_split_plan", self.plan)


@pytest.fixture
def split_spy(monkeypatch):
    if kth.max_threads() < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    return SplitSpy(monkeypatch)


def _run_both(spy, net, T, **kw):
    """The general engine's run, the runner's on one and on two threads, the latter
    repeated (a race between the threads would show as a run that differs)."""
    general = spy.general(net, T, batch=1, n_threads=1, record=True, **kw)
    one = ns.run_forward(net, T, batch=1, n_threads=1, record=True, **kw)
    _assert_same_run(general, one)
    split = ns.run_forward(net, T, batch=1, n_threads=2, record=True, **kw)
    for _ in range(4):
        _assert_same_run(split, ns.run_forward(net, T, batch=1, n_threads=2, record=True, **kw))
    return general, split


def _assert_same_run(a, b):
    for name in a.counts:
        np.testing.assert_array_equal(a.spikes[name], b.spikes[name], err_msg=name)
        np.testing.assert_array_equal(a.counts[name], b.counts[name], err_msg=name)
        np.testing.assert_array_equal(a.v_final[name], b.v_final[name], err_msg=name)
        np.testing.assert_array_equal(a.neuron_updates[name], b.neuron_updates[name])
    for q in a.sent:
        np.testing.assert_array_equal(a.sent[q], b.sent[q], err_msg=q)


@pytest.mark.parametrize("variant", ["fused", "one_port", "two_on_port0", "unsorted_rows",
                                     "two_populations"])
def test_neuron_parallel_runner_is_bit_identical(split_spy, variant):
    rng = np.random.default_rng(11)
    inputs = None
    if variant == "unsorted_rows":
        net = _unsorted_net()
        v_init = {"P": _v0(rng, net, 1)}
    elif variant == "two_populations":
        net, v_init, inputs = _two_pop_net(2)
    else:
        kw = dict(fused={}, one_port=dict(ports=1), two_on_port0=dict(extra_e=True))[variant]
        net = cuba_net(300, 0.05, seed=4, **kw)
        v_init = {"P": _v0(rng, net, 1)}
    general, split = _run_both(split_spy, net, 150, v_init=v_init, inputs=inputs)
    assert split_spy == [1] + [2] * 5
    _assert_same_run(general, split)
    assert sum(int(c.sum()) for c in split.counts.values()) > 100
    ref = reference.run_phase(net, 150, batch=1, v_init=v_init, inputs=inputs)
    _assert_phase_equal(split, ref, variant)


def test_neuron_parallel_runner_without_concurrent_threads(split_spy, monkeypatch):
    """If the threading layer runs the iterations one after another, one thread runs every
    piece (no deadlock) and the results do not change."""
    from neurosim import engine
    net = cuba_net(300, 0.05, seed=4)
    v_init = {"P": _v0(np.random.default_rng(1), net, 1)}
    serial = split_spy.general(net, 60, batch=1, n_threads=1, v_init=v_init, record=True)
    monkeypatch.setattr(engine, "_threads", lambda n: 2)   # plan for 2, run Numba with 1
    kth.set_threads(1)
    try:
        split = ns.run_forward(net, 60, batch=1, v_init=v_init, record=True)
    finally:
        kth.set_threads(kth.max_threads())
    assert split_spy == [2]
    _assert_same_run(serial, split)


def test_neuron_parallel_runner_only_when_it_applies(split_spy, monkeypatch):
    from neurosim import engine
    net = cuba_net(100, 0.1, seed=1)
    ns.run_forward(net, 5, batch=1, n_threads=1)                       # one range
    monkeypatch.setattr(engine, "SPLIT_MIN_NEURONS", 101)
    ns.run_forward(net, 5, batch=1, n_threads=2)                       # too small to split
    assert split_spy == [1, 1]
    ns.run_forward(net, 5, batch=2, n_threads=2)                       # two samples
    ns.run_forward(net, 5, batch=1, n_threads=2, masks={"E": np.ones((1, 100))})
    ns.run_forward(net, 5, batch=1, currents={"P": np.ones((1, 5, 100))})  # time-varying
    net.add_population("L", 3, ns.LIF())                               # a LIF population
    ns.run_forward(net, 5, batch=1, n_threads=2)
    assert split_spy == [1, 1]


def test_engine_specialisation_without_cuba(monkeypatch):
    """The phase kernel is called with cuba=None (the specialisation compiled without the
    CubaLIF kernels) exactly when the network has no CubaLIF population, and both
    specialisations give the reference's results."""
    import neurosim.engine as eng
    seen = []
    real = eng.run_phase

    def spy(*args):
        seen.append(args[-1])
        return real(*args)
    monkeypatch.setattr(eng, "run_phase", spy)
    cnet = cuba_net(20, 0.2, seed=1)
    lnet = ns.Network(dtype=np.float64)
    lnet.add_population("in", 6, "input")
    lnet.add_population("h", 5, ns.LIF(v_th=1.0, leak=0.5))
    w = _dyadic_weights(np.random.default_rng(2), 30, 0.5).reshape(6, 5)
    lnet.add_projection("w", "in", "h", ns.Dense(w))
    x = np.round(np.random.default_rng(3).uniform(0, 1, (2, 6)) / GRID) * GRID
    for net, inputs, want in ((cnet, None, True), (lnet, {"in": x}, None)):
        seen.clear()
        fwd = ns.run_forward(net, 6, inputs=inputs, batch=2)
        ref = reference.run_phase(net, 6, inputs=inputs, batch=2)
        assert seen and all(s is want for s in seen), (seen, want)
        assert set(fwd.counts) == set(ref["counts"])
        for k in ref["counts"]:
            np.testing.assert_array_equal(fwd.counts[k], ref["counts"][k], err_msg=k)
            np.testing.assert_array_equal(fwd.v_final[k], ref["v_final"][k], err_msg=k)
