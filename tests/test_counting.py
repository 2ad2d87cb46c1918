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


def _flat(c, y, x, shape):
    """Flat index of channel c at (y, x) of a (C, H, W) population: (y*W + x)*C + c."""
    C, H, W = shape
    return (y * W + x) * C + c


def _plain_synapses(kind, pre_shape, k, stride, padding=0, output_padding=0, c_out=None):
    """Every synapse (pre, post, ky, kx) of a conv / transposed conv / average pool, from
    the PyTorch definitions written out as loops (no neurosim code), and the post shape.

    Conv2d:          out[co, oy, ox] += w[co, ci, ky, kx] * in[ci, oy*s - p + ky, ox*s - p + kx]
    ConvTranspose2d: out[co, y*s - p + ky, x*s - p + kx] += w[ci, co, ky, kx] * in[ci, y, x]
    AvgPool2d:       out[c, oy, ox] = mean_{ky, kx} in[c, oy*s + ky, ox*s + kx]"""
    C, H, W = pre_shape
    syn = []
    if kind == "convT":
        Ho = (H - 1) * stride - 2 * padding + k + output_padding
        Wo = (W - 1) * stride - 2 * padding + k + output_padding
        post_shape = (c_out, Ho, Wo)
        for ci in range(C):
            for y in range(H):
                for x in range(W):
                    for ky in range(k):
                        for kx in range(k):
                            oy, ox = y * stride - padding + ky, x * stride - padding + kx
                            if 0 <= oy < Ho and 0 <= ox < Wo:
                                for co in range(c_out):
                                    syn.append((_flat(ci, y, x, pre_shape),
                                                _flat(co, oy, ox, post_shape), ky, kx))
        return syn, post_shape
    Ho = (H + 2 * padding - k) // stride + 1
    Wo = (W + 2 * padding - k) // stride + 1
    post_shape = (C if kind == "pool" else c_out, Ho, Wo)
    for oy in range(Ho):
        for ox in range(Wo):
            for ky in range(k):
                for kx in range(k):
                    y, x = oy * stride - padding + ky, ox * stride - padding + kx
                    if not (0 <= y < H and 0 <= x < W):
                        continue
                    for ci in range(C):
                        for co in ([ci] if kind == "pool" else range(c_out)):
                            syn.append((_flat(ci, y, x, pre_shape),
                                        _flat(co, oy, ox, post_shape), ky, kx))
    return syn, post_shape


_GEOMETRIES = [
    # (kind, pre_shape, kernel, stride, padding, output_padding, receiving channels)
    ("conv", (2, 7, 6), 3, 2, 1, 0, 3),
    ("conv", (1, 5, 5), 2, 1, 0, 0, 2),
    ("conv", (3, 4, 6), 3, 1, 2, 0, 1),
    ("convT", (2, 4, 5), 3, 2, 1, 1, 3),
    ("convT", (1, 3, 3), 2, 1, 0, 0, 2),
    ("convT", (2, 3, 4), 3, 2, 1, 0, 2),           # padding > output_padding: clipped bottom/right
    ("pool", (2, 6, 4), 2, 2, 0, 0, None),
    ("pool", (1, 5, 5), 2, 1, 0, 0, None),
]


def _build(kind, pre_shape, k, stride, padding, output_padding, c_out, rng):
    C = pre_shape[0]
    if kind == "conv":
        return ns.Conv2d(rng.normal(size=(c_out, C, k, k)), pre_shape=pre_shape, stride=stride,
                         padding=padding)
    if kind == "convT":
        return ns.ConvTranspose2d(rng.normal(size=(C, c_out, k, k)), pre_shape=pre_shape,
                                  stride=stride, padding=padding, output_padding=output_padding)
    return ns.AvgPool2d(k, pre_shape=pre_shape, stride=stride)


@pytest.mark.parametrize("geo", _GEOMETRIES, ids=lambda g: f"{g[0]}{g[1]}k{g[2]}s{g[3]}p{g[4]}")
def test_degrees_and_events_equal_a_recount_over_a_plain_synapse_list(geo):
    """In/out degrees and forward event counts of conv-type projections against a synapse
    list enumerated from the PyTorch definitions, and per-synapse counts recounted from
    random spike trains by a loop over that list (exact integers)."""
    kind, pre_shape, k, stride, padding, output_padding, c_out = geo
    rng = np.random.default_rng(sum(map(ord, repr(geo))))
    pr = _build(kind, pre_shape, k, stride, padding, output_padding, c_out, rng)
    syn, post_shape = _plain_synapses(kind, pre_shape, k, stride, padding, output_padding, c_out)
    assert tuple(pr.post_shape) == post_shape
    n_pre, n_post = int(np.prod(pre_shape)), int(np.prod(post_shape))
    out_deg, in_deg = np.zeros(n_pre, np.int64), np.zeros(n_post, np.int64)
    for j, i, _, _ in syn:
        out_deg[j] += 1
        in_deg[i] += 1
    np.testing.assert_array_equal(C.out_degree(pr), out_deg)
    np.testing.assert_array_equal(C.in_degree(pr), in_deg)
    # forward: every spike of pre j crosses each of j's synapses once
    T, B = 5, 2
    spikes = rng.random((B, T, n_pre)) < 0.3
    net = _source_net(pr, pre_shape, post_shape)
    r = ns.run_forward(net, T, spikes={"s": spikes}, batch=B)
    n_spk = spikes.sum(1)                                           # [B, n_pre]
    events = np.zeros(B, np.int64)
    per = np.zeros((n_pre, k * k), np.int64)                        # summed over the batch
    for j, _, ky, kx in syn:
        events += n_spk[:, j]
        per[j, ky * k + kx] += n_spk[:, j].sum()
    np.testing.assert_array_equal(C.synaptic_events(r, "p"), events)
    np.testing.assert_array_equal(C.per_synapse(r, "p")["count"], per)


def test_record_subset_equals_full_record():
    net = _source_net(ns.Dense(np.ones((2, 3))), 2, 3)
    net.populations["o"].neuron = ns.LIF(v_th=1.0)
    sp = _spikes(5, 2, [(0, 0), (1, 1), (3, 0)])
    full = ns.run_forward(net, 5, spikes={"s": sp}, record=True)
    part = ns.run_forward(net, 5, spikes={"s": sp}, record=["o"])
    assert set(part.spikes) == {"o"}
    np.testing.assert_array_equal(part.spikes["o"], full.spikes["o"])
    assert full.spikes["o"].sum() > 0
