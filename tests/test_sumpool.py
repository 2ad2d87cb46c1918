"""SumPool2d (NIR's SumPool2d, weight 1): engine against a numpy twin written here,
hand-counted synapse ops, model-file and run-file round trips."""
import h5py
import numpy as np
import pytest

import neurosim as ns
from neurosim import counting as C
from neurosim import ops
from neurosim.connectivity import PROJECTION_KINDS, AvgPool2d, SumPool2d
from neurosim.io import read_run, write_run
from neurosim.io.model_file import ModelError
from neurosim.models import load_model, model_from_dict, model_info
from neurosim.simulate import rerun


# ---------------------------------------------------------------------------------------
# numpy twin: sum pooling + the LIF rule (u += I; s = u >= θ; u -= Θ s; u *= λ)
def _sum_pool(x, k, s):
    """x [..., C, H, W] -> [..., C, Ho, Wo]: sum over each k×k window, stride s, no padding."""
    H, W = x.shape[-2:]
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros(x.shape[:-2] + (Ho, Wo))
    for oy in range(Ho):
        for ox in range(Wo):
            out[..., oy, ox] = x[..., oy * s:oy * s + k, ox * s:ox * s + k].sum((-2, -1))
    return out


def _lif(current, v_th, subtract, leak):
    """current [B, T, ...] -> spike trains [B, T, ...] (0/1) and the final potential."""
    u = np.zeros(current.shape[:1] + current.shape[2:])
    trains = np.zeros(current.shape, np.int8)
    for t in range(current.shape[1]):
        u = u + current[:, t]
        s = u >= v_th
        trains[:, t] = s
        u = (u - subtract * s) * leak
    return trains, u


def _pool_net(kernel, stride, shape, lif, *, source=True, dtype=np.float64):
    net = ns.Network(dtype=dtype)
    net.add_population("x", shape, "source" if source else "input")
    pr = SumPool2d(kernel, pre_shape=shape, stride=stride)
    net.add_population("p", pr.post_shape, lif)
    net.add_projection("pool", "x", "p", pr)
    return net, pr


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 1), (2, 3)])
def test_engine_equals_numpy_sum_pool_lif(kernel, stride):
    """Spike trains, counts and final potentials equal the twin exactly (dyadic values)."""
    rng = np.random.default_rng(kernel * 10 + stride)
    shape, B, T = (3, 7, 8), 2, 9
    lif = ns.LIF(v_th=1.5, subtract=2.0, leak=0.5)
    net, pr = _pool_net(kernel, stride, shape, lif)
    trains = rng.random((B, T) + shape) < 0.35                       # PyTorch (C, H, W)
    res = ns.run_forward(net, T, spikes={"x": trains}, record=True)
    want, u = _lif(_sum_pool(trains.astype(np.float64), kernel, stride), 1.5, 2.0, 0.5)
    np.testing.assert_array_equal(res.spikes["p"], ns.chw_to_flat(want))
    np.testing.assert_array_equal(res.counts["p"], ns.chw_to_flat(want.sum(1)))
    np.testing.assert_array_equal(res.v_final["p"], ns.chw_to_flat(u))
    assert want.sum() > 0 and (want.sum(1) < T).any()                 # the test has teeth
    # every spike of x reaches each of its windows once, with weight 1
    np.testing.assert_array_equal(res.sent["pool"], ns.chw_to_flat(trains.sum(1)))


def test_input_map_sum_pool_equals_numpy():
    """An analog input through a sum-pooling input map: a constant current of window sums."""
    rng = np.random.default_rng(5)
    shape, B, T = (2, 6, 6), 3, 7
    lif = ns.LIF(v_th=1.0)
    net, pr = _pool_net(2, 2, shape, lif, source=False)
    x = rng.integers(-4, 5, (B,) + shape) / 8.0
    res = ns.run_forward(net, T, inputs={"x": x}, record=True)
    cur = np.repeat(_sum_pool(x, 2, 2)[:, None], T, axis=1)
    want, u = _lif(cur, 1.0, 2.0, 1.0)
    np.testing.assert_array_equal(res.spikes["p"], ns.chw_to_flat(want))
    np.testing.assert_array_equal(res.v_final["p"], ns.chw_to_flat(u))
    # the input encoding costs one MAC per nonzero input and window it falls in
    np.testing.assert_array_equal(res.input_ops["pool"], (x != 0).reshape(B, -1).sum(1))


# ---------------------------------------------------------------------------------------
# hand-counted synapse ops on a toy map: pre (1, 3, 3), k = 2, stride 1 -> post (1, 2, 2)
#   pre numbering y*3 + x; offsets ky*2 + kx; (y, x) reaches (y-ky, x-kx) when inside
_VALID = np.array([[1, 0, 0, 0],     # (0,0)
                   [1, 1, 0, 0],     # (0,1)
                   [0, 1, 0, 0],     # (0,2)
                   [1, 0, 1, 0],     # (1,0)
                   [1, 1, 1, 1],     # (1,1)
                   [0, 1, 0, 1],     # (1,2)
                   [0, 0, 1, 0],     # (2,0)
                   [0, 0, 1, 1],     # (2,1)
                   [0, 0, 0, 1]])    # (2,2)
_SENT = np.array([1, 0, 2, 0, 3, 0, 0, 1, 0])


def _toy_run():
    lif = ns.LIF(v_th=100.0)                        # never fires: only counting matters
    net, pr = _pool_net(2, 1, (1, 3, 3), lif)
    trains = np.zeros((1, 4, 1, 3, 3), bool)
    for j, n in enumerate(_SENT):
        trains[0, :n, 0, j // 3, j % 3] = True
    return net, pr, ns.run_forward(net, 4, spikes={"x": trains})


def test_hand_counted_synapse_ops():
    net, pr, res = _toy_run()
    assert pr.post_shape == (1, 2, 2) and pr.weight_value == 1.0
    np.testing.assert_array_equal(pr.out_degree(), [1, 2, 1, 2, 4, 2, 1, 2, 1])
    np.testing.assert_array_equal(pr.in_degree(), [4, 4, 4, 4])
    assert pr.n_synapses == 16 and pr.dense_macs == 16
    np.testing.assert_array_equal(ops.nonzero_out_degree(pr), pr.out_degree())
    np.testing.assert_array_equal(ops.nonzero_in_degree(pr), pr.in_degree())
    np.testing.assert_array_equal(C.conv_targets(pr) >= 0, _VALID.astype(bool))
    # forward: 1*1 + 2*1 + 3*4 + 1*2 = 17 events
    np.testing.assert_array_equal(res.sent["pool"][0], _SENT)
    np.testing.assert_array_equal(C.synaptic_events(res, "pool"), [17])
    np.testing.assert_array_equal(C.per_synapse(res, "pool")["count"], _VALID * _SENT[:, None])
    # offset (0,0): pres (0,0),(0,1),(1,0),(1,1) -> 1+0+0+3; (0,1): 0+2+3+0; (1,0): 0+3+0+1;
    # (1,1): 3+0+1+0
    np.testing.assert_array_equal(C.per_kernel_weight(res, "pool")["count"], [[4, 5], [4, 4]])
    assert C.totals(res)["projections"]["pool"]["synaptic_operations"].tolist() == [17]
    assert C.totals(res)["projections"]["pool"]["dense_macs"] == 16 * 4


def test_hand_counted_backward_layout():
    """Backward (post -> pre): every (pre, offset) synapse carries its post neuron's events."""
    _, pr, _ = _toy_run()
    sent_post = np.array([1, 2, 0, 5])              # posts (0,0), (0,1), (1,0), (1,1)
    post_of = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0],
                        [2, 0, 0, 0], [3, 2, 1, 0], [0, 3, 0, 1],
                        [0, 0, 2, 0], [0, 0, 3, 2], [0, 0, 0, 3]])
    want = np.where(_VALID == 1, sent_post[post_of], 0)
    np.testing.assert_array_equal(pr.synapse_counts(sent_post, backward=True), want)
    # each post neuron sends through its 4 synapses: (1+2+0+5)*4 = 32, spread over offsets
    np.testing.assert_array_equal(pr.kernel_weight_counts(sent_post, backward=True),
                                  [[8, 8], [8, 8]])
    assert int(sent_post @ pr.in_degree()) == 32 == int(want.sum())


def test_sum_and_avg_pool_share_layout_and_counts():
    """Same geometry, same counts; only the shared kernel weight differs (1 versus 1/k²)."""
    s = SumPool2d(3, pre_shape=(2, 7, 7), stride=2)
    a = AvgPool2d(3, pre_shape=(2, 7, 7), stride=2)
    for bk in (False, True):
        ls, la = s.kernel_layout(bk), a.kernel_layout(bk)
        assert ls.kind == la.kind
        np.testing.assert_array_equal(ls.geo, la.geo)
        np.testing.assert_array_equal(ls.table, la.table)
        assert ls.weights.tolist() == [1.0] and la.weights.tolist() == [1.0 / 9]
    sent = np.arange(s.n_pre)
    np.testing.assert_array_equal(s.synapse_counts(sent), a.synapse_counts(sent))
    np.testing.assert_array_equal(s.kernel_weight_counts(sent), a.kernel_weight_counts(sent))
    assert s.params() == dict(a.params(), kind="sumpool2d")
    assert s.to_stored()[0]["weight_value"] == 1.0 and s.grad_to_user(np.zeros(0)) == {}


# ---------------------------------------------------------------------------------------
# model file and run file
_MODEL = """
format = "neurosim-model/1"
name = "sumpool_test"
dtype = "float64"
[[populations]]
name = "x"
shape = [2, 6, 6]
kind = "source"
[[populations]]
name = "c"
shape = [2, 6, 6]
kind = "lif"
v_th = 0.5
[[populations]]
name = "p"
shape = [2, 3, 3]
kind = "lif"
v_th = 2.5
[[populations]]
name = "o"
shape = [4]
kind = "lif"
v_th = 4.0
[[projections]]
name = "k"
pre = "x"
post = "c"
kind = "conv2d"
kernel = 1
init = "constant"
[[projections]]
name = "pool"
pre = "c"
post = "p"
kind = "sumpool2d"
kernel = 2
[[projections]]
name = "W"
pre = "p"
post = "o"
kind = "dense"
init = "constant"
init_scale = 0.25
"""


def test_model_file_round_trip(tmp_path):
    path = tmp_path / "sumpool_test.toml"
    path.write_text(_MODEL)
    net = load_model(path, seed=3)
    pr = net.projections["pool"]
    assert type(pr) is SumPool2d and PROJECTION_KINDS["sumpool2d"] is SumPool2d
    assert (pr.kernel, pr.stride, pr.weight_value, pr.post_shape) == (2, 2, 1.0, (2, 3, 3))
    info = model_info(net)
    row = next(q for q in info["projections"] if q["name"] == "pool")
    assert (row["kind"], row["synapses"], row["parameters"]) == ("sumpool2d", 72, 0)
    assert row["geometry"] == {"kernel": 2, "stride": 2}


def test_model_file_rejects_weight_keys_on_sumpool(tmp_path):
    d = {"format": "neurosim-model/1", "name": "m",
         "populations": [{"name": "x", "shape": [1, 4, 4], "kind": "source"},
                         {"name": "p", "shape": [1, 2, 2], "kind": "lif"}],
         "projections": [{"name": "pool", "pre": "x", "post": "p", "kind": "sumpool2d",
                          "kernel": 2, "bias": True}]}
    with pytest.raises(ModelError, match="bias"):
        model_from_dict(d)
    d["projections"][0].pop("bias")
    d["projections"][0]["stride"] = 1
    with pytest.raises(ModelError, match=r"produces shape \[1, 3, 3\]"):
        model_from_dict(d)


def _sumpool_run(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(_MODEL)
    net = load_model(path, seed=3)
    rng = np.random.default_rng(9)
    B, T = 2, 8
    spikes = {"x": rng.random((B, T, 72)) < 0.4}
    fwd = ns.run_forward(net, T, spikes=spikes, record=True)
    grad = {"o": rng.normal(0, 4.0, (B, 4)), "p": rng.normal(0, 4.0, (B, 18))}
    bwd = ns.run_backward(net, fwd, grad, 6, record=True)
    assert fwd.sent["pool"].any() and (bwd.sent["pool"].any() or bwd.sent_neg["pool"].any())
    out = write_run(tmp_path / "run.h5", net, fwd, bwd, spikes=spikes, grad=grad, seed=3)
    return net, fwd, bwd, out


def test_run_file_round_trip(tmp_path):
    net, fwd, bwd, out = _sumpool_run(tmp_path)
    with h5py.File(out) as f:
        h = f["network/projections/pool"]
        assert h.attrs["kind"] == "sumpool2d" and "weight" not in h
        assert '"weight_value": 1.0' in h.attrs["geometry"]
        np.testing.assert_array_equal(f["forward/projections/pool/count"][()],
                                      C.per_synapse(fwd, "pool")["count"])
        np.testing.assert_array_equal(f["backward/projections/pool/count_per_kernel_weight_pos"][()],
                                      C.per_kernel_weight(bwd, "pool")["count_pos"])
    run = read_run(out)
    q = run.network.projections["pool"]
    assert type(q) is SumPool2d and q.params() == net.projections["pool"].params()
    f2, b2 = rerun(run)
    for a, b in ((fwd, f2), (bwd, b2)):
        for k in a.counts:
            np.testing.assert_array_equal(a.counts[k], b.counts[k])
            np.testing.assert_array_equal(a.counts_neg[k], b.counts_neg[k])
            np.testing.assert_array_equal(a.v_final[k], b.v_final[k])
        for k in a.sent:
            np.testing.assert_array_equal(a.sent[k], b.sent[k])
            np.testing.assert_array_equal(a.sent_neg[k], b.sent_neg[k])
    sc = ops.synapse_counts(out, "pool", "backward")
    assert sc.kind == "sumpool2d" and sc.weight is None and sc.indptr is None
    assert "count_per_kernel_weight_neg" in sc.counts


def test_ops_table_and_plots_of_a_sumpool_run(tmp_path):
    net, fwd, bwd, out = _sumpool_run(tmp_path)
    tab = ops.read_ops(out)
    rows = {(r["layer"], r["phase"]): r for r in tab.projection_rows()}
    assert rows[("pool", "forward")]["synaptic_operations_total"] == \
        int(C.synaptic_events(fwd, "pool").sum())
    pos, neg = C.synaptic_events(bwd, "pool")
    assert rows[("pool", "backward")]["synaptic_operations_total"] == int(pos.sum() + neg.sum())
    pytest.importorskip("matplotlib")
    from neurosim.ops.plots import plot_run
    written, _ = plot_run(out, tmp_path / "figs")
    assert (tmp_path / "figs" / "kernel_counts_pool.png") in written
