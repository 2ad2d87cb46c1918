"""Operation accounting (neurosim.ops): hand-counted tables, identities on random runs,
dense-equivalent MACs of every model, an independent recount of the stored per-synapse
counts from spike trains and connectivity, bad input, and the `neurosim ops` command."""
import csv
import io
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
from neurosim.local_rule import post_errors
import reference
from conftest import random_case
from neurosim import ops
from neurosim.cli import main
from neurosim.io import RunFileError, read_run, write_run
from neurosim.io.model_file import list_models
from neurosim.models import load_model


def _source_net(proj, pre_shape, post_shape):
    net = ns.Network(dtype=np.float64)
    net.add_population("s", pre_shape, "source")
    net.add_population("o", post_shape, ns.LIF(v_th=100.0))
    net.add_projection("p", "s", "o", proj)
    return net


def _spikes(T, n, events, B=1):
    s = np.zeros((B, T, n), bool)
    for t, j in events:
        s[:, t, j] = True
    return s


def _row(table, layer, phase):
    rows = [r for r in table.projection_rows() + table.population_rows()
            if r["layer"] == layer and r["phase"] == phase]
    assert len(rows) == 1, (layer, phase, rows)
    return rows[0]


# ---------------------------------------------------------------------------------------
# hand-counted toy networks, one per projection kind and phase
def test_dense_forward_row_by_hand():
    W = np.array([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])       # pre 0 has 2 nonzero weights
    net = _source_net(ns.Dense(W), 2, 3)
    T, B = 3, 2
    fwd = ns.run_forward(net, T, spikes={"s": _spikes(T, 2, [(0, 0), (1, 0), (0, 1)], B)})
    tab = ops.table_from_phases(fwd)
    r = _row(tab, "p", "forward")
    # per sample: 3 events x 3 synapses = 9; on nonzero weights 2 x 2 + 1 x 3 = 7
    assert (r["synaptic_operations"], r["synaptic_operations_nonzero"]) == (9, 7)
    assert (r["synaptic_operations_total"], r["synaptic_operations_nonzero_total"]) == (18, 14)
    assert r["dense_macs"] == 2 * 3 * T and r["dense_macs_total"] == 2 * 3 * T * B
    assert r["op"] == "AC" and r["event_fraction"] == 9 / 18
    s = _row(tab, "s", "forward")
    assert s["spikes"] == 3 and s["firing_rate"] == 3 / (2 * T)
    assert s["activation_sparsity"] == 1 - 3 / (2 * T)
    assert _row(tab, "o", "forward")["spikes"] == 0


def test_sparse_forward_row_by_hand():
    # synapses (pre, post, w): (0,1,1) (0,2,0) (1,0,1); pre 0 spikes twice, pre 1 once
    pr = ns.Sparse.from_edges([0, 0, 1], [1, 2, 0], [1.0, 0.0, 1.0], pre_shape=2, post_shape=3)
    net = _source_net(pr, 2, 3)
    fwd = ns.run_forward(net, 3, spikes={"s": _spikes(3, 2, [(0, 0), (2, 0), (1, 1)])})
    r = _row(ops.table_from_phases(fwd), "p", "forward")
    assert (r["synaptic_operations"], r["synaptic_operations_nonzero"]) == (5, 3)
    assert r["dense_macs"] == 2 * 3 * 3


def test_conv_forward_row_by_hand():
    # 1 channel 3x3 -> 2 channels 2x2, kernel 2x2 with weight[1, 0, 0, 0] = 0: the centre
    # reaches 4 positions x 2 channels = 8 synapses, 7 of them nonzero; the top-left corner
    # only offset (0, 0): 2 synapses, 1 nonzero.
    w = np.ones((2, 1, 2, 2))
    w[1, 0, 0, 0] = 0.0
    pr = ns.Conv2d(w, pre_shape=(1, 3, 3))
    net = _source_net(pr, (1, 3, 3), (2, 2, 2))
    fwd = ns.run_forward(net, 2, spikes={"s": _spikes(2, 9, [(0, 4), (1, 0)])})
    r = _row(ops.table_from_phases(fwd), "p", "forward")
    assert (r["synaptic_operations"], r["synaptic_operations_nonzero"]) == (10, 8)
    assert r["dense_macs"] == 2 * 2 * 2 * 1 * 2 * 2 * 2          # C_out Ho Wo C_in kh kw x T


def test_conv_transpose_and_pool_rows_by_hand():
    pr = ns.ConvTranspose2d(np.ones((1, 2, 2, 2)), pre_shape=(1, 2, 2), stride=2)
    net = _source_net(pr, (1, 2, 2), (2, 4, 4))
    fwd = ns.run_forward(net, 2, spikes={"s": _spikes(2, 4, [(0, 0), (0, 3), (1, 3)])})
    r = _row(ops.table_from_phases(fwd), "p", "forward")
    assert r["synaptic_operations"] == r["synaptic_operations_nonzero"] == 3 * 4 * 2
    pool = ns.AvgPool2d(2, pre_shape=(1, 4, 4))
    net = _source_net(pool, (1, 4, 4), (1, 2, 2))
    fwd = ns.run_forward(net, 1, spikes={"s": _spikes(1, 16, [(0, j) for j in range(16)])})
    r = _row(ops.table_from_phases(fwd), "p", "forward")
    assert r["synaptic_operations"] == r["synaptic_operations_nonzero"] == 16
    assert r["dense_macs"] == 16


def _backward_toy():
    # l0 fires at rate 1/2 (gate open); l1 neuron 0 fires at rate 1/2, 1 and 2 are silent.
    # W[:, 0] = (0.5, 0): backward events of l1 couple 0 cross 2 synapses, 1 nonzero.
    net = ns.Network(dtype=np.float64)
    net.add_population("l0", 2, ns.LIF())
    net.add_population("l1", 3, ns.LIF())
    W = np.zeros((2, 3))
    W[0, 0] = 0.5
    net.add_projection("W", "l0", "l1", ns.Dense(W, bias=np.zeros(3)))
    cur = {"l0": [[1.0, 1.0]], "l1": [[1.0, 0.0, 0.0]]}
    fwd = ns.run_forward(net, 4, currents=cur)
    return net, fwd


def test_backward_and_weight_update_rows_by_hand():
    net, fwd = _backward_toy()
    # forward: l0 spikes at t = 0, 2 (2 spikes each), delivering 2 x 3 synapses each
    bwd = ns.run_backward(net, fwd, {"l1": [[0.5, 0.5, 0.0]]}, 4)
    tab = ops.table_from_phases(fwd, bwd)
    f = _row(tab, "W", "forward")
    assert (f["synaptic_operations"], f["synaptic_operations_nonzero"]) == (12, 2)
    # backward: couple 0 of l1 (gate open) sends +1 at t = 0 and 2; couple 1 is gated
    b = _row(tab, "W", "backward")
    assert (b["synaptic_operations"], b["synaptic_operations_nonzero"]) == (4, 2)
    assert _row(tab, "W", "backward_pos")["synaptic_operations"] == 4
    assert _row(tab, "W", "backward_neg")["synaptic_operations"] == 0
    assert b["dense_macs"] == 6 * 4 and _row(tab, "W", "backward_pos")["dense_macs"] is None
    # update: both pre rates nonzero x one nonzero post error (l1 neuron 0) = 2 weight
    # terms + 1 bias term; dense: 6 weights + 3 biases
    u = _row(tab, "W", "weight_update")
    assert (u["synaptic_operations"], u["dense_macs"], u["op"]) == (3, 9, "MAC")
    assert u["synaptic_operations_nonzero"] is None
    pb = _row(tab, "l1", "backward")
    assert (pb["spikes_pos"], pb["spikes_neg"], pb["spikes"]) == (4, 0, 4)
    assert pb["firing_rate"] == 4 / (3 * 4)


def test_input_encoding_row_by_hand():
    net = ns.Network(dtype=np.float64)
    net.add_population("x", 3, "input")
    net.add_population("h", 2, ns.LIF(v_th=100.0))
    F = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    net.add_projection("F", "x", "h", ns.Dense(F))
    x = np.array([[0.5, 0.25, 0.0], [0.0, 0.0, 0.75]])
    fwd = ns.run_forward(net, 5, inputs={"x": x})
    r = _row(ops.table_from_phases(fwd, inputs={"x": x}), "F", "input_encoding")
    # sample 0: inputs 0, 1 nonzero (fan-out 2 each, 1 + 2 nonzero); sample 1: input 2 (0 nonzero)
    assert r["synaptic_operations_total"] == 6 and r["synaptic_operations_nonzero_total"] == 3
    assert r["dense_macs_total"] == 2 * 6 and r["op"] == "MAC"     # once per sample (constant input)
    xt = np.repeat(x[:, None, :], 5, axis=1)                      # the same, given per step
    fwd = ns.run_forward(net, 5, inputs={"x": xt})
    r = _row(ops.table_from_phases(fwd, inputs={"x": xt}), "F", "input_encoding")
    assert r["synaptic_operations_total"] == 30 and r["dense_macs_total"] == 2 * 6 * 5
    # without the inputs the nonzero and dense columns are unknown, not guessed
    r = _row(ops.table_from_phases(fwd), "F", "input_encoding")
    assert r["synaptic_operations_nonzero"] is None and r["dense_macs"] is None


# ---------------------------------------------------------------------------------------
# identities on random runs
def _nonzero_per_pre(pr):
    """Nonzero-weight synapses per pre neuron, from the dense reference matrices."""
    if isinstance(pr, ns.Sparse):
        return np.bincount(np.repeat(np.arange(pr.n_pre), np.diff(pr.indptr))[pr.weight != 0],
                           minlength=pr.n_pre)
    return (reference.dense_matrix(pr) != 0).sum(1)


def _nonzero_per_post(pr):
    if isinstance(pr, ns.Sparse):
        return np.bincount(pr.indices[pr.weight != 0].astype(np.int64), minlength=pr.n_post)
    return (reference.dense_matrix(pr) != 0).sum(0)


@pytest.mark.parametrize("seed", list(range(700, 712)) + [767, 804, 822])
def test_per_synapse_sums_equal_sent_times_degree(seed):
    case = random_case(seed)
    net = case.net
    fwd = ns.run_forward(net, case.steps, **case.fwd_kwargs)
    bwd = ns.run_backward(net, fwd, case.grad, case.steps_b)
    tab = ops.table_from_phases(fwd, bwd, inputs=case.inputs, update=False)
    for name, sent in fwd.sent.items():
        pr = net.projections[name]
        S = reference.synapse_matrix(pr)
        r = _row(tab, name, "forward")
        want = int(sent.sum(0) @ S.sum(1))                       # Σ sent x out-degree
        assert r["synaptic_operations_total"] == want == ns.counting.per_synapse(fwd, name)["count"].sum()
        assert r["synaptic_operations_nonzero_total"] == int(sent.sum(0) @ _nonzero_per_pre(pr))
        assert r["dense_macs_total"] == pr.dense_macs * case.steps * case.batch
    for name, sp in bwd.sent.items():
        pr = net.projections[name]
        S = reference.synapse_matrix(pr)
        per = ns.counting.per_synapse(bwd, name)
        for phase, s, key in (("backward_pos", sp, "count_pos"),
                              ("backward_neg", bwd.sent_neg[name], "count_neg")):
            r = _row(tab, name, phase)
            want = int(s.sum(0) @ S.sum(0))                       # Σ sent x in-degree
            assert r["synaptic_operations_total"] == want == per[key].sum()
            assert r["synaptic_operations_nonzero_total"] == int(s.sum(0) @ _nonzero_per_post(pr))
    for name, c in fwd.counts.items():
        r = _row(tab, name, "forward")
        assert r["spikes_total"] == c.sum()
        assert r["firing_rate"] == c.sum() / (net.populations[name].n * case.steps * case.batch)


@pytest.mark.parametrize("seed", list(range(720, 726)) + [762, 804])
def test_nonzero_degrees_match_dense_reference(seed):
    case = random_case(seed)
    for pr in case.net.projections.values():
        np.testing.assert_array_equal(ops.nonzero_out_degree(pr), _nonzero_per_pre(pr))
        np.testing.assert_array_equal(ops.nonzero_in_degree(pr), _nonzero_per_post(pr))


@pytest.mark.parametrize("seed", range(730, 738))
def test_update_ops_equal_an_independent_count(seed):
    case = random_case(seed)
    net = case.net
    fwd = ns.run_forward(net, case.steps, **case.fwd_kwargs)
    bwd = ns.run_backward(net, fwd, case.grad, case.steps_b)
    got = ops.update_ops(fwd, bwd, inputs=case.inputs)
    delta = post_errors(net, fwd, bwd)
    for name, o in got.items():
        pr = net.projections[name]
        pre = net.populations[pr.pre]
        if pre.kind == "input":
            x = reference.to_flat(np.asarray(case.inputs[pr.pre], np.float64), pre.shape,
                                  2 if np.ndim(case.inputs[pr.pre]) in (3, 5) else 1)
            a = x.mean(1) if x.ndim == 3 else x
        else:
            a = fwd.counts[pr.pre]                 # nonzero exactly where the rate is
        d = delta[pr.post] * fwd.masks[name] if name in fwd.masks else delta[pr.post]
        S = reference.synapse_matrix(pr)
        want = [int((a[b] != 0).astype(np.int64) @ S @ (d[b] != 0).astype(np.int64))
                + (int((d[b] != 0).sum()) if pr.bias is not None else 0) for b in range(case.batch)]
        np.testing.assert_array_equal(o, want, err_msg=name)


def test_sums_add_up():
    net, fwd = _backward_toy()
    bwd = ns.run_backward(net, fwd, {"l1": [[0.5, 0.5, 0.0]]}, 4)
    s = ops.phase_sums(fwd, bwd)
    two = ops.add_sums(s, s)
    assert two["samples"] == 2
    assert two["projections"]["W"]["forward"]["synaptic_operations"] == 24
    with pytest.raises(ops.OpsError, match="steps"):
        ops.add_sums(s, ops.phase_sums(ns.run_forward(net, 5, currents={"l0": [[1.0, 1.0]]})))


# ---------------------------------------------------------------------------------------
# dense-equivalent MACs of every shipped model, from the layer shapes alone
def _out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def _independent_dense_macs(spec_proj, shapes):
    """Dense MACs per step of one model-file projection, from its table and the shapes."""
    kind = spec_proj["kind"]
    pre, post = shapes[spec_proj["pre"]], shapes[spec_proj["post"]]
    n = lambda s: int(np.prod(s))
    if kind in ("dense", "sparse"):
        return n(pre) * n(post)
    C, H, W = pre
    if kind == "avgpool2d":
        k = spec_proj["kernel"]
        s = spec_proj.get("stride", k)
        return C * _out(H, k, s, 0) * _out(W, k, s, 0) * k * k
    k = spec_proj["kernel"]
    kh, kw = (k, k) if isinstance(k, int) else k
    if kind == "conv2d":
        s, p = spec_proj.get("stride", 1), spec_proj.get("padding", 0)
        Co = post[0]
        return Co * _out(H, kh, s, p) * _out(W, kw, s, p) * C * kh * kw
    if kind == "conv_transpose2d":
        return C * H * W * post[0] * kh * kw
    raise AssertionError(kind)


@pytest.mark.parametrize("name", list_models())
def test_dense_macs_of_every_model_equal_an_independent_count(name):
    net = load_model(name)
    spec = net.metadata["spec"]
    shapes = {p["name"]: tuple(p["shape"]) for p in spec["populations"]}
    want = {q["name"]: _independent_dense_macs(q, shapes) for q in spec["projections"]}
    T, Tb, B = 2, 3, 1
    inputs = {p.name: np.zeros((B,) + tuple(p.shape)) for p in net.populations.values()
              if p.kind == "input"}
    fwd = ns.run_forward(net, T, inputs=inputs, batch=B)
    bwd = ns.run_backward(net, fwd, {}, Tb)
    tab = ops.table_from_phases(fwd, bwd, inputs=inputs, update=False)
    for q in spec["projections"]:
        is_map = net.populations[q["pre"]].kind == "input"
        r = _row(tab, q["name"], "input_encoding" if is_map else "forward")
        assert r["dense_macs_total"] == want[q["name"]] * (1 if is_map else T) * B, q["name"]
        if net.populations[q["pre"]].spiking:          # transposed in the backward phase
            assert _row(tab, q["name"], "backward")["dense_macs_total"] == want[q["name"]] * Tb * B
    # the ANN baseline is one pass through the delay-0 projections
    ann = sum(want[q["name"]] for q in spec["projections"] if q.get("delay", 0) == 0)
    assert ops.baseline_ops(net, T)["ann"]["inference"]["macs"] == ann


# ---------------------------------------------------------------------------------------
# stored per-synapse counts = an independent recount from spike trains and connectivity
def _trains(g, B, T, n):
    s = np.zeros((B, T, n), np.int64)
    h = g.get("spikes")
    if h is None:
        return None
    v = h["sign"][()] if "sign" in h else 1
    s[h["sample"][()], h["step"][()], h["neuron"][()]] = v
    return s


def _valid(kind, geo, y, x, ky, kx):
    """Does pre position (y, x) reach an output through kernel offset (ky, kx)?  From the
    PyTorch definitions in docs/hdf5-schema.md."""
    _, Ho, Wo = geo["post_shape"]
    if kind == "conv_transpose2d":
        oy, ox = y * geo["stride"] - geo["padding"] + ky, x * geo["stride"] - geo["padding"] + kx
        return (0 <= oy < Ho and 0 <= ox < Wo), (oy, ox)
    p = geo.get("padding", 0)
    ny, nx = y + p - ky, x + p - kx
    s = geo["stride"]
    ok = ny >= 0 and nx >= 0 and ny % s == 0 and nx % s == 0 and ny // s < Ho and nx // s < Wo
    return ok, (ny // s, nx // s)


def _recount(f, name, fwd_trains, bwd_trains, T, Tb, B):
    """Per-synapse counts of projection ``name`` from the file's spike trains and
    connectivity, written from the schema (no neurosim counting code)."""
    h = f["network/projections"][name]
    kind, pre, post, delay = (h.attrs[k] for k in ("kind", "pre", "post", "delay"))
    geo = json.loads(h.attrs["geometry"])
    pre_shape, post_shape = geo["pre_shape"], geo["post_shape"]
    n_pre, n_post = int(np.prod(pre_shape)), int(np.prod(post_shape))
    # forward: spikes of the pre neuron that were delivered (not in the last `delay` steps)
    sent_f = fwd_trains[pre][:, :T - delay, :].sum((0, 1)) if delay < T else np.zeros(n_pre)
    out = {"forward": {}, "backward": {}}
    # backward: ±1 events of the post couple, if its gate is open and its mask is nonzero
    gate = (f[f"backward/gate/{post}"][()] if f"backward/gate/{post}" in f else None)
    if gate is None:
        c = np.abs(fwd_trains[post]).sum(1)
        gate = (c >= 1) & (c <= T - 1)
    mask = f[f"forward/masks/{name}"][()] if f"forward/masks/{name}" in f else np.ones((B, n_post))
    q = bwd_trains[post][:, :Tb - delay, :] if delay < Tb else np.zeros((B, 0, n_post))
    ok = (gate & (mask != 0))[:, None, :]
    sent_p = ((q == 1) & ok).sum((0, 1))
    sent_n = ((q == -1) & ok).sum((0, 1))
    if kind == "dense":
        out["forward"]["count"] = np.repeat(sent_f[:, None], n_post, 1)
        out["backward"]["count_pos"] = np.repeat(sent_p[None, :], n_pre, 0)
        out["backward"]["count_neg"] = np.repeat(sent_n[None, :], n_pre, 0)
        return out
    if kind == "sparse":
        indptr, indices = h["indptr"][()], h["indices"][()]
        pre_of = np.repeat(np.arange(n_pre), np.diff(indptr))
        out["forward"]["count"] = sent_f[pre_of]
        out["backward"]["count_pos"] = sent_p[indices]
        out["backward"]["count_neg"] = sent_n[indices]
        return out
    C, H, W = pre_shape
    Cr, Ho, Wo = post_shape
    kh, kw = geo["kernel"] if kind != "avgpool2d" else (geo["kernel"], geo["kernel"])
    K = kh * kw
    per = {"count": np.zeros((n_pre, K), np.int64), "count_pos": np.zeros((n_pre, K), np.int64),
           "count_neg": np.zeros((n_pre, K), np.int64)}
    wshape = (kh, kw) if kind == "avgpool2d" else tuple(h["weight"].shape)
    kwt = {k: np.zeros(wshape, np.int64) for k in per}
    for y in range(H):
        for x in range(W):
            for c in range(C):
                j = (y * W + x) * C + c
                for ky in range(kh):
                    for kx in range(kw):
                        ok_, (oy, ox) = _valid(kind, geo, y, x, ky, kx)
                        if not ok_:
                            continue
                        o = ky * kw + kx
                        site = oy * Wo + ox
                        if kind == "avgpool2d":
                            i = site * C + c
                            per["count"][j, o] = sent_f[j]
                            kwt["count"][ky, kx] += sent_f[j]
                            for key, s in (("count_pos", sent_p), ("count_neg", sent_n)):
                                per[key][j, o] = s[i]
                                kwt[key][ky, kx] += s[i]
                            continue
                        per["count"][j, o] = sent_f[j] * Cr
                        for co in range(Cr):
                            i = site * Cr + co
                            idx = (co, c, ky, kx) if kind == "conv2d" else (c, co, ky, kx)
                            kwt["count"][idx] += sent_f[j]
                            for key, s in (("count_pos", sent_p), ("count_neg", sent_n)):
                                per[key][j, o] += s[i]
                                kwt[key][idx] += s[i]
    out["forward"] = {"count": per["count"], "count_per_kernel_weight": kwt["count"]}
    out["backward"] = {"count_pos": per["count_pos"], "count_neg": per["count_neg"],
                       "count_per_kernel_weight_pos": kwt["count_pos"],
                       "count_per_kernel_weight_neg": kwt["count_neg"]}
    return out


# seeds 767, 768, 804, 822 add pooling layers and dropout masks to the mix
@pytest.mark.parametrize("seed", list(range(740, 752)) + [767, 768, 804, 822])
def test_stored_per_synapse_counts_equal_a_recount_from_spike_trains(seed, tmp_path):
    case = random_case(seed)
    net = case.net
    fwd = ns.run_forward(net, case.steps, record=True, **case.fwd_kwargs)
    bwd = ns.run_backward(net, fwd, case.grad, case.steps_b, record=True)
    path = write_run(tmp_path / "r.h5", net, fwd, bwd, inputs=case.inputs, spikes=case.spikes,
                     currents=case.currents, grad=case.grad)
    T, Tb, B = case.steps, case.steps_b, case.batch
    checked = 0
    with h5py.File(path, "r") as f:
        ft = {}
        for name, p in net.populations.items():
            if p.kind == "input":
                continue
            ft[name] = _trains(f[f"forward/populations/{name}"], B, T, p.n)
        bt = {name: _trains(f[f"backward/populations/{name}"], B, Tb, p.n)
              for name, p in net.populations.items() if p.spiking}
        for name in f["forward/projections"]:
            g = f[f"forward/projections/{name}"]
            if g.attrs["input_map"]:
                continue
            want = _recount(f, name, ft, bt, T, Tb, B)
            for phase in ("forward", "backward"):
                if name not in f[phase]["projections"]:
                    continue
                stored = f[f"{phase}/projections/{name}"]
                for key, arr in want[phase].items():
                    np.testing.assert_array_equal(stored[key][()], arr,
                                                  err_msg=f"{phase} {name} {key} seed {seed}")
                    checked += 1
    assert checked >= 3
    # and the library's per-synapse view returns exactly the stored arrays
    name = next(n for n in fwd.sent)
    view = ops.synapse_counts(path, name, "forward")
    np.testing.assert_array_equal(view.counts["count"], read_run(path).synapse_counts["forward"][name]["count"])


def test_synapse_counts_layouts_and_errors(tmp_path):
    pr = ns.Sparse.from_edges([0, 0, 1], [1, 2, 0], [1.0, 0.5, 1.0], pre_shape=2, post_shape=3)
    net = _source_net(pr, 2, 3)
    sp = _spikes(3, 2, [(0, 0), (2, 0), (1, 1)])
    fwd = ns.run_forward(net, 3, spikes={"s": sp})
    path = write_run(tmp_path / "s.h5", net, fwd, spikes={"s": sp})
    v = ops.synapse_counts(path, "p")
    np.testing.assert_array_equal(v.counts["count"], [2, 2, 1])    # aligned with indices
    np.testing.assert_array_equal(v.indices, [1, 2, 0])
    np.testing.assert_array_equal(v.pre_index, [0, 0, 1])
    assert v.kind == "sparse" and "indices" in v.layout and v.samples == 1
    with pytest.raises(ops.OpsError, match="no projection 'q'.*known: \\['p'\\]"):
        ops.synapse_counts(path, "q")
    with pytest.raises(ops.OpsError, match="no backward phase"):
        ops.synapse_counts(path, "p", "backward")
    with pytest.raises(ops.OpsError, match="phase must be"):
        ops.synapse_counts(path, "p", "sideways")


# ---------------------------------------------------------------------------------------
# run files: both kinds, bad input
@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    r = CliRunner().invoke(main, ["simulate", "--model", "test_conv", "--input", "digits",
                                  "--n-samples", "3", "--steps", "12", "--backward-steps", "15",
                                  "--grad", "random", "--record", "--out", str(d / "conv.h5")])
    assert r.exit_code == 0, r.output
    return d / "conv.h5"


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    from neurosim.training.trainer import train
    out = tmp_path_factory.mktemp("train") / "t.h5"
    train("fsnn_mlp", "digits", out=out, overrides={"epochs": 1, "T": 8, "T_b": 12},
          max_train=64, max_test=32, handle_signals=False)
    return out


def _synapse_list(f, name):
    """(pre, post) int64 arrays, one entry per synapse of projection ``name``, enumerated
    from the run file's connectivity and the PyTorch definitions in docs/hdf5-schema.md
    (loops; no neurosim code)."""
    h = f["network/projections"][name]
    kind = h.attrs["kind"]
    geo = json.loads(h.attrs["geometry"])
    n_pre, n_post = int(np.prod(geo["pre_shape"])), int(np.prod(geo["post_shape"]))
    if kind == "dense":
        pre, post = np.meshgrid(np.arange(n_pre), np.arange(n_post), indexing="ij")
        return pre.ravel(), post.ravel()
    if kind == "sparse":
        indptr, indices = h["indptr"][()], h["indices"][()]
        return np.repeat(np.arange(n_pre), np.diff(indptr)), indices.astype(np.int64)
    C, H, W = geo["pre_shape"]
    Cr, Ho, Wo = geo["post_shape"]
    kh, kw = (geo["kernel"],) * 2 if kind == "avgpool2d" else geo["kernel"]
    pre, post = [], []
    for y in range(H):
        for x in range(W):
            for c in range(C):
                for ky in range(kh):
                    for kx in range(kw):
                        ok, (oy, ox) = _valid(kind, geo, y, x, ky, kx)
                        if not ok:
                            continue
                        for co in ([c] if kind == "avgpool2d" else range(Cr)):
                            pre.append((y * W + x) * C + c)
                            post.append((oy * Wo + ox) * Cr + co)
    return np.array(pre, np.int64), np.array(post, np.int64)


def test_simulate_run_table_equals_a_recount_from_the_files_spike_trains(sim_run):
    """Every synaptic-operation and weight-update count of the table, recounted from the
    run file's spike trains, inputs and connectivity by code written from the schema."""
    tab = ops.read_ops(sim_run)
    assert tab.source["kind"] == "simulate" and tab.samples == 3
    with h5py.File(sim_run, "r") as f:
        T, Tb = int(f["forward"].attrs["steps"]), int(f["backward"].attrs["steps"])
        B = int(f["forward"].attrs["batch"])
        assert (T, Tb, B) == (12, 15, 3)
        pops = {p: f[f"network/populations/{p}"].attrs for p in json.loads(f["network"].attrs["populations"])}
        ft = {p: _trains(f[f"forward/populations/{p}"], B, T, int(a["n"]))
              for p, a in pops.items() if a["kind"] != "input"}
        bt = {p: _trains(f[f"backward/populations/{p}"], B, Tb, int(a["n"]))
              for p, a in pops.items() if a["kind"] not in ("input", "source")}
        assert all(v is not None and np.abs(v).sum() > 0 for v in list(ft.values()) + list(bt.values()))
        # SPIDE's post error δ = m β / Θ is nonzero where the gate m is open and the
        # backward rate β ∝ Σ_t λ^(T_b-1-t) q(t) is nonzero (and, per projection, the mask)
        err_nz = {}
        for p, q in bt.items():
            lam = json.loads(pops[p]["ternary"])["leak"]
            beta = (q * lam ** np.arange(Tb - 1, -1, -1)[None, :, None]).sum(1)
            gate = f[f"backward/gate/{p}"][()] if f"backward/gate/{p}" in f else None
            if gate is None:
                c = ft[p].sum(1)
                gate = (c >= 1) & (c <= T - 1)
            err_nz[p] = gate & (beta != 0)
        want = {"input_encoding": 0, "forward": 0, "backward_pos": 0, "backward_neg": 0,
                "weight_update": 0}
        updated = set()
        for name in json.loads(f["network"].attrs["projections"]):
            h = f["network/projections"][name]
            pre_pop, post_pop = h.attrs["pre"], h.attrs["post"]
            pre, post = _synapse_list(f, name)
            assert pre.size == h.attrs["n_synapses"]
            if h.attrs["input_map"]:
                x = f[f"forward/inputs/{pre_pop}"][()]
                assert x.shape == (B, int(pops[pre_pop]["n"]))          # one frame per sample
                n = int(((x[:, pre]) != 0).sum())                      # nonzero input x fan-out
                assert _row(tab, name, "input_encoding")["synaptic_operations_total"] == n
                want["input_encoding"] += n
                pre_nz = x != 0
            else:
                rc = _recount(f, name, ft, bt, T, Tb, B)
                for phase, key, arr in (("forward", "forward", rc["forward"]["count"]),
                                        ("backward_pos", "backward", rc["backward"]["count_pos"]),
                                        ("backward_neg", "backward", rc["backward"]["count_neg"])):
                    n = int(arr.sum())
                    assert _row(tab, name, phase)["synaptic_operations_total"] == n, (name, phase)
                    want[phase] += n
                pre_nz = ft[pre_pop].sum(1) != 0                       # forward rate a != 0
            if "weight" not in h and "bias" not in h:
                continue
            mask = f[f"forward/masks/{name}"][()] if f"forward/masks/{name}" in f else 1.0
            d_nz = err_nz[post_pop] & (mask != 0)
            # one MAC per synapse and sample where both factors are nonzero, one per bias term
            n = int((pre_nz[:, pre] & d_nz[:, post]).sum()) if "weight" in h else 0
            n += int(d_nz.sum()) if "bias" in h else 0
            assert _row(tab, name, "weight_update")["synaptic_operations_total"] == n, name
            want["weight_update"] += n
            updated.add(name)
    assert updated == {"enc", "fb"}
    assert want["forward"] > 0 and want["backward_pos"] > 0 and want["weight_update"] > 0
    totals = tab.phase_totals()                                         # per sample
    for phase in ("input_encoding", "forward", "weight_update"):
        assert totals[phase]["synaptic_operations"] * B == want[phase], phase
    assert totals["backward"]["synaptic_operations"] * B == want["backward_pos"] + want["backward_neg"]


@pytest.fixture(scope="module")
def train_run_dropout(tmp_path_factory):
    """A training run with dropout masks and a spiking output (Spikemax, backward gate)."""
    from neurosim.training.trainer import train
    out = tmp_path_factory.mktemp("train") / "td.h5"
    train("fsnn_mlp_spiking", "digits", out=out, max_train=64, max_test=32,
          overrides={"epochs": 1, "T": 8, "T_b": 12, "dropout": {"W1": 0.3, "F": 0.2}},
          handle_signals=False)
    return out


def _first_digits(n):
    from neurosim import datasets as D
    xtr, ytr, _, _ = D.load("digits").normalised()
    return xtr[:n].reshape(n, -1), ytr[:n]


@pytest.mark.parametrize("run", ["train_run", "train_run_dropout"])
def test_training_run_table_recomputes_a_training_step(run, request):
    """The recomputed pass equals what spide_step counts on the same batch and masks."""
    from neurosim.training.checkpoint import restore
    from neurosim.training.spide import SGD, spide_step
    path = request.getfixturevalue(run)
    tab = ops.read_ops(path, n_samples=20)
    assert tab.source["kind"] == "training" and tab.samples == 20
    assert "recomputed" in tab.source["basis"] and tab.source["history"]["fwd_synops"] > 0
    net, model, cfg, st = restore(path)
    x, y = _first_digits(20)
    r = spide_step(model, x, y, cfg, np.random.default_rng(cfg.seed), 0.0,
                   SGD(cfg.momentum, cfg.weight_decay))
    t = tab.phase_totals()
    assert t["forward"]["synaptic_operations"] * 20 == r.fwd_synops.sum()
    assert t["backward_pos"]["synaptic_operations"] * 20 == r.bwd_synops_pos.sum()
    assert t["backward_neg"]["synaptic_operations"] * 20 == r.bwd_synops_neg.sum()
    assert t["input_encoding"]["synaptic_operations"] * 20 == r.encoding_macs.sum()
    assert t["weight_update"]["synaptic_operations"] * 20 == r.update_macs.sum()
    assert t["forward"]["neuron_updates"] * 20 == r.fwd_updates.sum()
    # the energy estimate prices the stored last-epoch history, not the 20 samples
    c = tab.energy_counts()
    assert c["training"]["forward"]["synaptic_operations"] == st["history"]["fwd_synops"][-1]
    assert c["inference"]["forward"]["synaptic_operations"] == st["history"]["test_fwd_synops"][-1]


@pytest.mark.parametrize("run", ["train_run", "train_run_dropout"])
def test_training_run_data_equal_a_direct_simulation(run, request):
    """Independent oracle of the recomputed step: run_forward / run_backward called directly
    on the restored network with the dropout masks of the stored seed, the loss's gradient
    and gate, and update_ops from the spiking post errors."""
    from neurosim.ops.runfile import load_run_data
    from neurosim.training.checkpoint import restore
    from neurosim.training.spide import dropout_masks, output_loss
    path = request.getfixturevalue(run)
    data = load_run_data(path, n_samples=20, record=True)
    net, model, cfg, st = restore(path)
    x, y = _first_digits(20)
    masks = dropout_masks(model, cfg, 20, np.random.default_rng(cfg.seed))
    assert bool(masks) == (run == "train_run_dropout")
    fwd = ns.run_forward(net, cfg.T, inputs={model.input: x}, masks=masks, record=True)
    _, dlda, _ = output_loss(model, cfg, fwd, y)
    n_out = net.populations[model.output].n
    gate = None
    if not model.readout:       # the output gate rule, written out (docs/losses.md)
        c, g, T = fwd.counts[model.output], cfg.kappa * dlda, cfg.T
        gate = {model.output: np.ones((20, n_out), bool) if cfg.output_gate == "all" else
                ((c >= 1) & (c <= T - 1)) | ((c == 0) & (g < 0)) | ((c == T) & (g > 0))}
    bwd = ns.run_backward(net, fwd, {model.output: cfg.kappa * dlda}, cfg.T_b, gate=gate,
                          record=True)
    assert set(data.gate) == set(gate or {})
    for name in fwd.counts:
        np.testing.assert_array_equal(data.forward.counts[name], fwd.counts[name], err_msg=name)
        np.testing.assert_array_equal(data.forward.spikes[name], fwd.spikes[name], err_msg=name)
        np.testing.assert_array_equal(data.backward.counts[name], bwd.counts[name], err_msg=name)
        np.testing.assert_array_equal(data.backward.counts_neg[name], bwd.counts_neg[name],
                                      err_msg=name)
    for name in masks:
        np.testing.assert_array_equal(data.forward.masks[name], masks[name], err_msg=name)
    want = ops.update_ops(fwd, bwd, inputs={model.input: x},
                          delta=post_errors(net, fwd, bwd, gate), masked=not cfg.spide_quirks)
    assert set(data.update_ops) == set(want)
    for name, v in want.items():
        np.testing.assert_array_equal(data.update_ops[name], v, err_msg=name)


def test_restore_rebuilds_the_trained_weights_and_readout(train_run):
    """One checkpoint restore: the network's weights and readout as stored, a path and
    a load_checkpoint pair give the same model."""
    from neurosim.training.checkpoint import load_checkpoint, restore
    net, model, cfg, st = restore(train_run)
    net2, st2 = load_checkpoint(train_run)
    _, model2, cfg2, _ = restore((net2, st2))
    assert cfg.to_dict() == cfg2.to_dict() == st["config"]
    np.testing.assert_array_equal(model.C, st["readout"][0])
    np.testing.assert_array_equal(model.c, st["readout"][1])
    for name, pr in net.projections.items():
        if pr.has_weights:
            np.testing.assert_array_equal(pr.weight, net2.projections[name].weight)
            np.testing.assert_array_equal(model2.net.projections[name].weight, pr.weight)


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_other_schema_version_and_missing_groups(sim_run, train_run, tmp_path):
    p = _copy(sim_run, tmp_path / "v2.h5")
    with h5py.File(p, "r+") as f:
        f.attrs["schema_version"] = 2
    with pytest.raises(RunFileError, match="schema_version 2 is not supported"):
        ops.read_ops(p)
    p = _copy(sim_run, tmp_path / "nofwd.h5")
    with h5py.File(p, "r+") as f:
        del f["forward/projections"]
    with pytest.raises(RunFileError, match="missing group /forward/projections"):
        ops.read_ops(p)
    p = _copy(sim_run, tmp_path / "nophase.h5")
    with h5py.File(p, "r+") as f:
        del f["forward"]
        del f["backward"]
    with pytest.raises(RunFileError, match="neither a /forward group"):
        ops.read_ops(p)
    p = _copy(train_run, tmp_path / "nohist.h5")
    with h5py.File(p, "r+") as f:
        del f["training/history/fwd_synops"]
    with pytest.raises(RunFileError, match="/training/history/fwd_synops"):
        ops.read_ops(p)
    p = tmp_path / "text.h5"
    p.write_text("not hdf5")
    with pytest.raises(RunFileError, match="not an HDF5 file"):
        ops.read_ops(p)
    with pytest.raises(RunFileError, match="does not exist"):
        ops.read_ops(tmp_path / "missing.h5")


# ---------------------------------------------------------------------------------------
# the command
def test_cli_ops_table_json_csv(sim_run):
    runner = CliRunner()
    r = runner.invoke(main, ["ops", str(sim_run)])
    assert r.exit_code == 0, r.output
    for text in ("Synaptic operations", "input_encoding", "backward +1", "weight_update",
                 "activation_sparsity", "ENERGY ESTIMATE", "cmos45-fp32", "assumptions"):
        assert text in r.output
    r = runner.invoke(main, ["ops", str(sim_run), "--json", "--profile", "loihi"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["energy"]["profile"]["name"] == "loihi" and d["energy"]["estimate"] is True
    fwd = [x for x in d["projections"] if x["phase"] == "forward"]
    want = {r["layer"]: r["synaptic_operations_total"]
            for r in ops.read_ops(sim_run).projection_rows() if r["phase"] == "forward"}
    assert {x["layer"]: x["synaptic_operations_total"] for x in fwd} == want
    assert set(want) == {"pool", "fb"} and min(want.values()) > 0
    r = runner.invoke(main, ["ops", str(sim_run), "--csv", "--no-energy"])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {x["section"] for x in rows} == {"projection", "population", "phase_total"}
    tab = ops.read_ops(sim_run)
    got = {(x["layer"], x["phase"]): x for x in rows if x["section"] == "projection"}
    for want in tab.projection_rows():
        assert int(got[(want["layer"], want["phase"])]["synaptic_operations_total"]) == \
            want["synaptic_operations_total"]


def test_cli_ops_plot_renders_files(sim_run, tmp_path):
    pytest.importorskip("matplotlib")
    r = CliRunner().invoke(main, ["ops", str(sim_run), "--plot", str(tmp_path / "figs")])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "figs").iterdir()}
    assert {"ops_by_phase.png", "firing_rates.png", "rate_convergence.png",
            "kernel_counts_pool.png", "kernel_counts_fb.png"} <= names
    for p in (tmp_path / "figs").iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_cli_ops_errors(sim_run, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["ops", str(sim_run), "--profile", "tpu-v9"])
    assert r.exit_code == 2
    assert "unknown energy profile 'tpu-v9'" in r.output and "cmos45-fp32, loihi" in r.output
    r = runner.invoke(main, ["ops", str(tmp_path / "nope.h5")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(main, ["ops", str(sim_run), "--json", "--csv"])
    assert r.exit_code == 2


# ---------------------------------------------------------------------------------------
# speed: `neurosim ops` on a digits training run must print in under 2 s
def test_bundled_digits_read_directly_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits
    from neurosim.datasets.digits import _bundled_digits
    data, target = _bundled_digits()
    d = load_digits()
    np.testing.assert_array_equal(data, d.data)
    np.testing.assert_array_equal(target, d.target)


def test_ops_on_a_training_run_imports_neither_sklearn_nor_matplotlib(train_run):
    import subprocess
    import sys
    code = ("import sys; from neurosim import ops; t = ops.read_ops(sys.argv[1]); "
            "ops.estimate_table(t); t.format(); "
            "print(sorted(m for m in ('sklearn', 'matplotlib', 'scipy.stats') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(train_run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.slow
def test_ops_on_a_digits_training_run_takes_under_two_seconds(train_run):
    import subprocess
    import sys
    import time
    cmd = [sys.executable, "-m", "neurosim.cli", "ops", str(train_run)]
    subprocess.run(cmd, capture_output=True, check=True)          # warm Numba's disk cache
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    assert time.perf_counter() - t0 < 2.0


def _imports(path):
    """(module imported, enclosing function or None) of every import in a source file,
    relative imports resolved against the neurosim package."""
    import ast
    import pathlib
    p = pathlib.Path(path)
    pkg = p.relative_to(pathlib.Path(ns.__file__).parent.parent).with_suffix("").parts[:-1]
    out = []

    def visit(node, fn):
        for ch in ast.iter_child_nodes(node):
            f = ch.name if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            if isinstance(ch, ast.ImportFrom):
                base = list(pkg[:len(pkg) - ch.level + 1]) if ch.level else []
                mod = ".".join(base + ([ch.module] if ch.module else []))
                out.extend((f"{mod}.{a.name}" if not ch.module else mod, f) for a in ch.names)
            elif isinstance(ch, ast.Import):
                out.extend((a.name, f) for a in ch.names)
            visit(ch, f)
    visit(ast.parse(p.read_text()), None)
    return out


def test_layering_of_the_local_rule_ops_and_experiments():
    """The local rule sits below training/ and ops/; ops/ does not import training/ (the one
    exception: a training run file's ops are recomputed with the training step,
    ops/runfile._training_data); nothing below experiments/ imports it (decisions 51, 54)."""
    import pathlib
    root = pathlib.Path(ns.__file__).parent
    for mod, fn in _imports(root / "local_rule.py"):
        assert not mod.startswith(("neurosim.training", "neurosim.ops")), mod
    for f in sorted((root / "ops").glob("*.py")):
        for mod, fn in _imports(f):
            if mod.startswith("neurosim.training"):
                assert (f.name, fn) == ("runfile.py", "_training_data"), (f.name, fn, mod)
    for f in sorted(root.rglob("*.py")):
        if f.parent.name == "experiments" or f.name in ("cli.py", "cli_ops.py"):
            continue
        assert not any(m.startswith("neurosim.experiments") for m, _ in _imports(f)), f
