"""The event-driven engine against the dense clock-driven reference (SPIDE oracle 1).

On random networks whose numbers all lie on a dyadic grid (float64), every sum is exact
whatever the order of additions, so spike trains, counts, events sent and final
potentials must agree **exactly**, in the forward and in the backward phase.  The
reference follows the documented arithmetic (docs/hdf5-schema.md: currents in float64
rounded once, events summed in event order in the dtype, neuron updates in the dtype),
so the same holds on random non-dyadic networks in float32 and in float64.
"""
import numpy as np
import pytest

import neurosim as ns
import reference
from conftest import random_case

N_EXACT = 80            # random LIF networks, both phases
N_CUBA = 25             # random networks with CubaLIF layers, forward only
N_NONDYADIC = 40        # random non-dyadic networks, float32 and float64, both phases

def _assert_phase_equal(res, ref, case, *, potentials=True):
    phase = res.phase
    where = f"{phase} phase, {case}"
    assert set(res.counts) == set(ref["counts"]), where
    for name in ref["counts"]:
        np.testing.assert_array_equal(res.spikes[name], ref["spikes"][name],
                                      err_msg=f"spike train of {name!r}, {where}")
        np.testing.assert_array_equal(res.counts[name], ref["counts"][name],
                                      err_msg=f"counts of {name!r}, {where}")
        np.testing.assert_array_equal(res.counts_neg[name], ref["counts_neg"][name],
                                      err_msg=f"counts_neg of {name!r}, {where}")
        if potentials:
            np.testing.assert_array_equal(res.v_final[name], ref["v_final"][name],
                                          err_msg=f"final potential of {name!r}, {where}")
    assert set(res.sent) == set(ref["sent"]), where
    for q in ref["sent"]:
        np.testing.assert_array_equal(res.sent[q], ref["sent"][q], err_msg=f"sent of {q!r}, {where}")
        np.testing.assert_array_equal(res.sent_neg[q], ref["sent_neg"][q],
                                      err_msg=f"sent_neg of {q!r}, {where}")


def _leaky_pops(net, backward):
    out = []
    for name, p in net.populations.items():
        if not p.spiking:
            continue
        lam = p.ternary.leak if backward else getattr(p.neuron, "leak", 1.0)
        if lam != 1.0:
            out.append(name)
    return out


def _run_ref(case):
    return reference.run_phase(case.net, case.steps, inputs=case.inputs, spikes=case.spikes,
                               currents=case.currents, masks=case.masks, batch=case.batch)


@pytest.mark.parametrize("seed", range(N_EXACT))
def test_both_phases_match_reference_exactly(seed):
    case = random_case(seed)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    ref = _run_ref(case)
    _assert_phase_equal(fwd, ref, case)
    for name in _leaky_pops(case.net, False):
        np.testing.assert_array_equal(fwd.weighted_counts[name], ref["weighted_counts"][name],
                                      err_msg=f"weighted counts of {name!r}, {case}")
    # the unrecorded run takes the same path for everything but the spike record
    plain = ns.run_forward(case.net, case.steps, **case.fwd_kwargs)
    assert plain.spikes is None
    for name in ref["counts"]:
        np.testing.assert_array_equal(plain.counts[name], ref["counts"][name])
        np.testing.assert_array_equal(plain.v_final[name], ref["v_final"][name])
    for name in ref["sent"]:
        np.testing.assert_array_equal(plain.sent[name], ref["sent"][name])

    bwd = ns.run_backward(case.net, fwd, case.grad, case.steps_b, record=True)
    # the reference takes its gate (1 <= count <= T-1) and masks from its own forward run
    refb = reference.run_phase(case.net, case.steps_b, backward=True, grad=case.grad, forward=ref)
    _assert_phase_equal(bwd, refb, case)
    plain_b = ns.run_backward(case.net, fwd, case.grad, case.steps_b)
    for name in refb["counts"]:
        np.testing.assert_array_equal(plain_b.counts[name], refb["counts"][name])
        np.testing.assert_array_equal(plain_b.counts_neg[name], refb["counts_neg"][name])
    for name in refb["sent"]:
        np.testing.assert_array_equal(plain_b.sent[name], refb["sent"][name])
        np.testing.assert_array_equal(plain_b.sent_neg[name], refb["sent_neg"][name])
    for name in _leaky_pops(case.net, True):
        np.testing.assert_array_equal(bwd.weighted_counts[name], refb["weighted_counts"][name],
                                      err_msg=f"backward weighted counts of {name!r}, {case}")


@pytest.mark.parametrize("seed", range(1000, 1000 + N_CUBA))
def test_cuba_forward_matches_reference(seed):
    """CubaLIF layers: the propagator constants are not dyadic, but the reference applies
    the documented update formula operation by operation to exact event sums, so the
    results are bit-identical (the phase cannot run backward)."""
    case = random_case(seed, cuba=True)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    _assert_phase_equal(fwd, _run_ref(case), case)
    if "cuba" in case.features:
        with pytest.raises(ValueError, match="CubaLIF"):
            ns.run_backward(case.net, fwd, case.grad, case.steps_b)


@pytest.mark.parametrize("seed", range(200, 206))
def test_backward_with_explicit_gate(seed):
    """A user gate replaces m; both implementations honour it sender by sender."""
    case = random_case(seed)
    fwd = ns.run_forward(case.net, case.steps, **case.fwd_kwargs)
    rng = np.random.default_rng(seed)
    gate = {p.name: rng.random((case.batch, p.n)) < 0.7 for p in case.net.spiking_populations}
    bwd = ns.run_backward(case.net, fwd, case.grad, case.steps_b, gate=gate, record=True)
    refb = reference.run_phase(case.net, case.steps_b, backward=True, grad=case.grad,
                               forward=fwd, gate=gate)
    _assert_phase_equal(bwd, refb, case)


@pytest.mark.parametrize("steps,steps_b", [(1, 1), (2, 3)])
@pytest.mark.parametrize("seed", range(700, 710))
def test_very_short_runs_match_reference(seed, steps, steps_b):
    """T = 1 (m = 0 everywhere: nothing is sent backward) and runs shorter than a delay."""
    case = random_case(seed, steps=steps, steps_b=steps_b)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    ref = _run_ref(case)
    _assert_phase_equal(fwd, ref, case)
    bwd = ns.run_backward(case.net, fwd, case.grad, case.steps_b, record=True)
    _assert_phase_equal(bwd, reference.run_phase(case.net, case.steps_b, backward=True,
                                                 grad=case.grad, forward=ref), case)
    if steps == 1:
        assert all(not s.any() for s in bwd.sent.values())


@pytest.mark.parametrize("seed", range(800, 810))
def test_float32_exact_on_dyadic_if_networks(seed):
    """Without leak, the dyadic values and their sums fit float32's 24-bit mantissa: the
    float32 engine must match the float64 reference exactly too."""
    case = random_case(seed, dtype=np.float32, leak=False)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    ref = _run_ref(case)
    _assert_phase_equal(fwd, ref, case)
    bwd = ns.run_backward(case.net, fwd, case.grad, case.steps_b, record=True)
    _assert_phase_equal(bwd, reference.run_phase(case.net, case.steps_b, backward=True,
                                                 grad=case.grad, forward=ref), case)


def test_single_thread_matches_reference():
    from neurosim.kernels import threads
    n0 = threads.get_threads()
    try:
        for seed in (3, 4, 5):
            case = random_case(seed)
            fwd = ns.run_forward(case.net, case.steps, record=True, n_threads=1, **case.fwd_kwargs)
            _assert_phase_equal(fwd, _run_ref(case), case)
    finally:
        threads.set_threads(n0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(300, 300 + N_NONDYADIC))
def test_nondyadic_networks_match_reference_exactly(seed, dtype):
    """Random weights, biases, inputs, leaks and currents (no grid): bit-identical in
    both phases, in float32 as in float64 (spike trains, counts, final potentials)."""
    case = random_case(seed, dtype=dtype, dyadic_values=False)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    ref = _run_ref(case)
    _assert_phase_equal(fwd, ref, case)
    bwd = ns.run_backward(case.net, fwd, case.grad, case.steps_b, record=True)
    refb = reference.run_phase(case.net, case.steps_b, backward=True, grad=case.grad, forward=ref)
    _assert_phase_equal(bwd, refb, case)


@pytest.mark.parametrize("seed", range(1100, 1110))
def test_float32_cuba_matches_reference_exactly(seed):
    case = random_case(seed, cuba=True, dtype=np.float32, dyadic_values=False)
    fwd = ns.run_forward(case.net, case.steps, record=True, **case.fwd_kwargs)
    _assert_phase_equal(fwd, _run_ref(case), case)


def test_generator_covers_the_feature_grid():
    """The exact-comparison seeds exercise every projection kind and feature."""
    seen = set()
    for seed in range(N_EXACT):
        seen |= random_case(seed).features
    for seed in range(1000, 1000 + N_CUBA):
        seen |= random_case(seed, cuba=True).features
    want = {"dense", "sparse", "conv2d", "conv_transpose2d", "avgpool2d", "delay1", "delay2",
            "input", "input_tv", "source", "leak", "refractory", "reset_value", "masks",
            "currents", "recurrent", "skip", "cuba", "ports", "chw_arrays", "parallel"}
    assert want <= seen, want - seen


def test_convtranspose_spide_geometry_is_covered():
    """ConvTranspose2d with stride 2, padding 1, output_padding 1 (2H x 2W output) occurs."""
    found = 0
    for seed in range(N_EXACT):
        for pr in random_case(seed).net.projections.values():
            if isinstance(pr, ns.ConvTranspose2d) and (pr.stride, pr.padding, pr.output_padding) == (2, 1, 1):
                assert pr.post_shape[1:] == (2 * pr.pre_shape[1], 2 * pr.pre_shape[2])
                found += 1
    assert found >= 3


@pytest.mark.parametrize("record", [True, False])
@pytest.mark.parametrize("rate", [0.05, 0.6])
def test_lean_and_full_spike_emission_match_reference(rate, record):
    """Forward spikes of populations whose projections are all dense / CSR are emitted
    with the neuron index only (``kernels.engine._emit_lean``); a population with a conv
    or pool projection keeps value, site and channel.  Both kinds, with one- and
    multi-neuron sites, a source of each kind, few and many spikes (per-spike and
    vectorised counts; sites of 9 and 10 neurons, busy: the branch-free full record) and
    with / without recording agree exactly with the reference."""
    rng = np.random.default_rng(3)
    net = ns.Network(dtype=np.float64)
    net.add_population("s1", 20, "source")                       # lean (dense only)
    net.add_population("s3", (2, 4, 4), "source")                # full (conv out)
    net.add_population("h", (3, 4, 4), ns.LIF(v_th=1.0))         # lean, 3-neuron sites
    net.add_population("c", (4, 4, 4), ns.LIF(v_th=1.0))         # full (pool and dense out)
    net.add_population("o", 9, ns.LIF(v_th=0.5))
    net.add_population("q", (4, 2, 2), ns.LIF(v_th=0.5))
    net.add_population("s9", (9, 3, 3), "source")                # full, 9-neuron sites
    net.add_population("c10", (10, 3, 3), ns.LIF(v_th=0.5))      # full, 10-neuron sites
    net.add_population("r", (2, 3, 3), ns.LIF(v_th=0.5))
    g = lambda *s: rng.integers(-8, 9, s) / 8.0                  # dyadic: exact sums
    net.add_projection("a", "s1", "h", ns.Dense(g(20, 48)))
    net.add_projection("b", "s3", "c", ns.Conv2d(g(4, 2, 3, 3), pre_shape=(2, 4, 4), padding=1))
    net.add_projection("d", "h", "o", ns.Dense(g(48, 9)))
    net.add_projection("e", "c", "o", ns.Dense(g(64, 9)))
    net.add_projection("f", "c", "q", ns.AvgPool2d(2, pre_shape=(4, 4, 4)))
    net.add_projection("k", "h", "c", ns.Dense(g(48, 64), delay=1))
    net.add_projection("m", "s9", "c10", ns.Conv2d(g(10, 9, 3, 3), pre_shape=(9, 3, 3), padding=1))
    net.add_projection("n", "c10", "r", ns.Conv2d(g(2, 10, 3, 3), pre_shape=(10, 3, 3), padding=1))
    T, B = 12, 3
    sp = {"s1": rng.random((B, T, 20)) < rate, "s3": rng.random((B, T, 32)) < rate,
          "s9": rng.random((B, T, 81)) < rate}
    res = ns.run_forward(net, T, spikes=sp, record=record, n_threads=1)
    ref = reference.run_phase(net, T, spikes=sp)
    assert sum(int(c.sum()) for c in res.counts.values()) > 0
    if not record:
        res.spikes = ref["spikes"]      # nothing recorded: compare the rest
    _assert_phase_equal(res, ref, f"rate {rate}")
