"""Hand-counted op counts on toy graphs, one per projection kind and phase."""
import numpy as np
import pytest

import neurosim as ns
from neurosim import counting as C


def _source_net(proj, pre_shape, post_shape, dtype=np.float64):
    net = ns.Network(dtype=dtype)
    net.add_population("s", pre_shape, "source")
    net.add_population("o", post_shape, ns.LIF(v_th=100.0))
    net.add_projection("p", "s", "o", proj)
    return net


def _spikes(T, n, events):
    s = np.zeros((1, T, n), bool)
    for t, j in events:
        s[0, t, j] = True
    return s


def test_dense_hand_count():
    net = _source_net(ns.Dense(np.ones((2, 3))), 2, 3)
    r = ns.run_forward(net, 3, spikes={"s": _spikes(3, 2, [(0, 0), (1, 0), (0, 1)])})
    assert C.synaptic_events(r, "p").tolist() == [9]
    np.testing.assert_array_equal(C.per_synapse(r, "p")["count"], [[2, 2, 2], [1, 1, 1]])
    np.testing.assert_array_equal(r.sent["p"], [[2, 1]])


def test_sparse_hand_count():
    pr = ns.Sparse.from_edges([0, 0, 1], [1, 2, 0], [1.0, 1.0, 1.0], pre_shape=2, post_shape=3)
    net = _source_net(pr, 2, 3)
    r = ns.run_forward(net, 3, spikes={"s": _spikes(3, 2, [(0, 0), (2, 0), (1, 1)])})
    assert C.synaptic_events(r, "p").tolist() == [5]
    np.testing.assert_array_equal(C.per_synapse(r, "p")["count"], [2, 2, 1])


def test_conv2d_hand_count():
    # 1 channel 3x3 -> 2x2 with a 2x2 kernel: the centre reaches 4 outputs, a corner 1
    pr = ns.Conv2d(np.ones((1, 1, 2, 2)), pre_shape=(1, 3, 3))
    net = _source_net(pr, (1, 3, 3), (1, 2, 2))
    centre, corner = 4, 0   # flat index (y*W + x)*C + c
    r = ns.run_forward(net, 2, spikes={"s": _spikes(2, 9, [(0, centre), (1, corner)])})
    assert C.synaptic_events(r, "p").tolist() == [5]
    per = C.per_synapse(r, "p")["count"]          # [n_pre, kh*kw]
    np.testing.assert_array_equal(per[centre], [1, 1, 1, 1])
    np.testing.assert_array_equal(per[corner], [1, 0, 0, 0])
    kw = C.per_kernel_weight(r, "p")["count"]
    np.testing.assert_array_equal(kw, [[[[2, 1], [1, 1]]]])


def test_conv_transpose_hand_count():
    # 2x2 -> 4x4, kernel 2, stride 2: every input spike reaches exactly 4 outputs (x 2 channels)
    pr = ns.ConvTranspose2d(np.ones((1, 2, 2, 2)), pre_shape=(1, 2, 2), stride=2)
    net = _source_net(pr, (1, 2, 2), (2, 4, 4))
    r = ns.run_forward(net, 2, spikes={"s": _spikes(2, 4, [(0, 0), (0, 3), (1, 3)])})
    assert C.synaptic_events(r, "p").tolist() == [3 * 4 * 2]
    assert C.per_kernel_weight(r, "p")["count"].sum() == 3 * 4 * 2


def test_avgpool_hand_count():
    pr = ns.AvgPool2d(2, pre_shape=(1, 4, 4))
    net = _source_net(pr, (1, 4, 4), (1, 2, 2))
    r = ns.run_forward(net, 1, spikes={"s": _spikes(1, 16, [(0, j) for j in range(16)])})
    assert C.synaptic_events(r, "p").tolist() == [16]
    np.testing.assert_array_equal(C.per_kernel_weight(r, "p")["count"], np.full((2, 2), 4))


def test_backward_hand_count():
    # l1 neuron 0 fires at rate 1/2 forward (gate open); grad 0.5 makes its couple fire
    # +1 at t = 0 and 2 of 4 backward steps; each event crosses its 2 incoming synapses.
    net = ns.Network(dtype=np.float64)
    net.add_population("l0", 2, ns.LIF())
    net.add_population("l1", 3, ns.LIF())
    net.add_projection("W", "l0", "l1", ns.Dense(np.zeros((2, 3))))
    fwd = ns.run_forward(net, 4, currents={"l0": [[1.0, 1.0]], "l1": [[1.0, 0.0, 0.0]]})
    np.testing.assert_array_equal(fwd.mask("l1"), [[True, False, False]])
    bwd = ns.run_backward(net, fwd, {"l1": [[0.5, 0.5, 0.0]]}, 4, record=True)
    np.testing.assert_array_equal(bwd.spikes["l1"][0, :, 0], [1, 0, 1, 0])
    np.testing.assert_array_equal(bwd.spikes["l1"][0, :, 1], [1, 0, 1, 0])   # spikes, but gated
    pos, neg = C.synaptic_events(bwd, "W")
    assert pos.tolist() == [4] and neg.tolist() == [0]
    np.testing.assert_array_equal(C.per_synapse(bwd, "W")["count_pos"], [[2, 0, 0], [2, 0, 0]])
    np.testing.assert_array_equal(bwd.sent["W"], [[2, 0, 0]])


def test_totals_and_rates():
    net = _source_net(ns.Dense(np.ones((2, 3))), 2, 3)
    r = ns.run_forward(net, 4, spikes={"s": _spikes(4, 2, [(0, 0), (1, 0)])})
    tot = C.totals(r)
    assert tot["projections"]["p"]["synaptic_operations"].tolist() == [6]
    assert tot["projections"]["p"]["dense_macs"] == 6 * 4
    assert tot["populations"]["s"]["spikes"].tolist() == [2]
    assert tot["populations"]["s"]["firing_rate"].tolist() == [2 / 8]


@pytest.mark.parametrize("seed", range(4))
def test_in_degree_matches_dense_structure(seed):
    rng = np.random.default_rng(seed)
    for pr in (ns.Conv2d(rng.normal(size=(3, 2, 3, 3)), pre_shape=(2, 7, 6), stride=2, padding=1),
               ns.ConvTranspose2d(rng.normal(size=(2, 3, 3, 3)), pre_shape=(2, 4, 5), stride=2,
                                  padding=1, output_padding=1),
               ns.AvgPool2d(2, pre_shape=(2, 6, 4))):
        tg = C.conv_targets(pr)
        # rebuild the synapse list from targets and compare degrees
        n_syn = (tg >= 0).sum() * (1 if isinstance(pr, ns.AvgPool2d) else pr.post_shape[0])
        assert C.in_degree(pr).sum() == n_syn == C.out_degree(pr).sum()


def test_record_subset_equals_full_record():
    net = _source_net(ns.Dense(np.ones((2, 3))), 2, 3)
    net.populations["o"].neuron = ns.LIF(v_th=1.0)
    sp = _spikes(5, 2, [(0, 0), (1, 1), (3, 0)])
    full = ns.run_forward(net, 5, spikes={"s": sp}, record=True)
    part = ns.run_forward(net, 5, spikes={"s": sp}, record=["o"])
    assert set(part.spikes) == {"o"}
    np.testing.assert_array_equal(part.spikes["o"], full.spikes["o"])
    assert full.spikes["o"].sum() > 0
