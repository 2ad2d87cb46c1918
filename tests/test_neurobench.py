"""NeuroBench-compatible metrics (neurosim.ops.neurobench, ``neurosim ops --neurobench``).

The expected values are NeuroBench's definitions (``neurobench.metrics``: each Linear /
Conv layer called once per step on its binarised input with binarised weights for the
effective counts, on all-ones input with all-ones weights for ``Dense``; spiking-neuron
layer outputs for the activation sparsity), computed here with plain numpy loops from the
spike trains the engine recorded and the weights, never from neurosim's counters."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import neurosim as ns
from neurosim import ops
from neurosim.cli import main
from neurosim.connectivity import chw_to_flat, flat_to_chw
from neurosim.io import write_run

T, B = 8, 3


# ---------------------------------------------------------------------------------------
# NeuroBench's counting, written out
def _bin(a):
    """NeuroBench's binarize: nonzero -> 1, zero stays 0."""
    return (np.asarray(a) != 0).astype(np.float64)


def _conv_call(x, w, stride, pad):
    """Sum of the outputs of a Conv2d call (bias suppressed) on x [C_in, H, W], loops."""
    Cout, Cin, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))        # zero padding stays zero
    Ho = (xp.shape[1] - kh) // stride + 1
    Wo = (xp.shape[2] - kw) // stride + 1
    total = 0.0
    for co in range(Cout):
        for oy in range(Ho):
            for ox in range(Wo):
                for ci in range(Cin):
                    for ky in range(kh):
                        for kx in range(kw):
                            total += w[co, ci, ky, kx] * xp[ci, oy * stride + ky, ox * stride + kx]
    return int(total)


def _pool_call(x, k):
    """Sum of a k x k pooling call's outputs with its weight set to one, loops."""
    C, H, W = x.shape
    total = 0.0
    for c in range(C):
        for oy in range(H // k):
            for ox in range(W // k):
                total += x[c, oy * k:(oy + 1) * k, ox * k:(ox + 1) * k].sum()
    return int(total)


def _linear_call(x, W):
    return int((x @ W).sum())


def _is_spiking(x):
    """NeuroBench's test of a layer input: every value in {-1, 0, 1}."""
    return bool(np.all((x == 0) | (x == 1) | (x == -1)))


# ---------------------------------------------------------------------------------------
# the network: conv2d -> LIF -> pool -> LIF -> dense -> LIF (+ a delay-1 feedback)
def _net(case, rng):
    net = ns.Network(dtype=np.float64, name=f"nb_{case}")
    if case == "spikes":
        net.add_population("x", (1, 6, 6), "source")
    else:
        net.add_population("x", (1, 6, 6), "input")
    net.add_population("l1", (2, 6, 6), ns.LIF(v_th=0.6))
    net.add_population("l2", (2, 3, 3), ns.LIF(v_th=0.4))
    net.add_population("l3", 4, ns.LIF(v_th=0.5))
    w = rng.uniform(-0.3, 1.2, (2, 1, 3, 3))
    w[0, 0, 1, 1] = w[1, 0, 0, 2] = 0.0
    net.add_projection("conv", "x", "l1", ns.Conv2d(w, pre_shape=(1, 6, 6), padding=1,
                                                    bias=np.array([0.1, 0.0])))
    pool = ns.SumPool2d(2, pre_shape=(2, 6, 6)) if case == "spikes" else \
        ns.AvgPool2d(2, pre_shape=(2, 6, 6))
    net.add_projection("pool", "l1", "l2", pool)
    W = rng.uniform(0.0, 0.9, (18, 4))
    W[rng.random(W.shape) < 0.3] = 0.0
    net.add_projection("fc", "l2", "l3", ns.Dense(W, bias=np.full(4, 0.05)))
    if case == "spikes":
        Wf = rng.uniform(-0.2, 0.3, (4, 18))
        Wf[:, :5] = 0.0
        net.add_projection("fb", "l3", "l2", ns.Dense(Wf, delay=1))
    return net


def _stimulus(case, rng):
    if case == "spikes":
        return dict(spikes={"x": rng.random((B, T, 36)) < 0.4})
    x = rng.uniform(0.0, 1.0, (B, 1, 6, 6))
    x[rng.random(x.shape) < 0.3] = 0.0
    if case == "analog":
        return dict(inputs={"x": x})
    xt = np.repeat(chw_to_flat(x)[:, None, :], T, axis=1)          # [B, T, 36]
    xt[:, 1::2] = rng.random((B, T // 2, 36)) < 0.5                  # odd frames binary
    return dict(inputs={"x": xt})


def _expected(net, fwd, stim):
    """NeuroBench's numbers for this run, from the recorded trains and the weights."""
    conv, pool, fc = (net.projections[k] for k in ("conv", "pool", "fc"))
    w = conv.weight
    tr = {k: v.astype(np.float64) for k, v in fwd.spikes.items()}    # [B, T, n]
    if "inputs" in stim:
        x = stim["inputs"]["x"]
        x = chw_to_flat(x) if x.ndim == 4 else x
        frames = np.repeat(x[:, None], T, axis=1) if x.ndim == 2 else x
    else:
        frames = tr["x"]
    macs = acs = dense = 0
    for b in range(B):
        for t in range(T):
            f = frames[b, t]
            ops_ = _conv_call(_bin(flat_to_chw(f, (1, 6, 6))), _bin(w), 1, 1)
            # NeuroBench's call is one batch per step: the spiking test covers the batch
            if _is_spiking(frames[:, t]):
                acs += ops_
            else:
                macs += ops_
            dense += _conv_call(np.ones((1, 6, 6)), np.ones_like(w), 1, 1)
            acs += _linear_call(_bin(tr["l2"][b, t]), _bin(fc.weight))
            dense += _linear_call(np.ones(18), np.ones((18, 4)))
            if "fb" in net.projections:
                Wf = net.projections["fb"].weight
                prev = tr["l3"][b, t - 1] if t >= 1 else np.zeros(4)   # delay 1
                acs += _linear_call(_bin(prev), _bin(Wf))
                dense += _linear_call(np.ones(4), np.ones((4, 18)))
    pool_acs = sum(_pool_call(_bin(flat_to_chw(tr["l1"][b, t], (2, 6, 6))), 2)
                   for b in range(B) for t in range(T))
    weights = [w, fc.weight] + ([net.projections["fb"].weight] if "fb" in net.projections else [])
    n_w = sum(a.size for a in weights)
    n_zero = sum(int((a == 0).sum()) for a in weights)
    params = [w, conv.bias, fc.weight, fc.bias] + weights[2:]
    act = np.concatenate([tr[k].reshape(-1) for k in ("l1", "l2", "l3")])
    return dict(macs=macs, acs=acs, dense=dense, pool_acs=pool_acs,
                pool_dense=2 * 3 * 3 * 4 * T * B, conn=n_zero / n_w,
                footprint=sum(a.size * a.itemsize for a in params),
                params=sum(a.size for a in params),
                act=(act.size - np.count_nonzero(act)) / act.size)


def _run(case, tmp_path, backward=False):
    rng = np.random.default_rng({"analog": 1, "frames": 2, "spikes": 3}[case])
    net = _net(case, rng)
    stim = _stimulus(case, rng)
    fwd = ns.run_forward(net, T, record=True, **stim)
    bwd = grad = None
    if backward:
        grad = {"l3": rng.uniform(-0.5, 0.5, (B, 4))}
        bwd = ns.run_backward(net, fwd, grad, 6)
    path = write_run(tmp_path / f"{case}.h5", net, fwd, bwd, grad=grad, **stim)
    return net, fwd, stim, path


@pytest.mark.parametrize("case", ["analog", "frames", "spikes"])
def test_metrics_equal_neurobench_definitions_computed_from_the_spike_trains(case, tmp_path):
    net, fwd, stim, path = _run(case, tmp_path)
    for k in ("l1", "l2", "l3"):
        assert fwd.counts[k].sum() > 0, f"{k} silent: the test would prove little"
    want = _expected(net, fwd, stim)
    d = ops.neurobench_metrics(ops.load_run_data(path))
    tot = d["totals"]
    assert (tot["Effective_MACs"], tot["Effective_ACs"], tot["Dense"]) == \
        (want["macs"], want["acs"], want["dense"])
    so = d["workload"]["SynapticOperations"]
    assert so == {"Effective_MACs": want["macs"] / B, "Effective_ACs": want["acs"] / B,
                  "Dense": want["dense"] / B}
    assert d["workload"]["ActivationSparsity"] == want["act"]
    assert d["workload"]["MembraneUpdates"] is None
    assert d["static"]["ConnectionSparsity"] == want["conn"]
    assert d["static"]["ConnectionSparsity_rounded"] == round(want["conn"], 4)
    assert d["static"]["Footprint"] == want["footprint"]
    assert d["static"]["ParameterCount"] == want["params"]
    assert (d["samples"], d["steps"]) == (B, T)
    # pooling is no NeuroBench connection layer: listed with its would-be counts, not summed
    row = {r["layer"]: r for r in d["layers"]}
    assert row["pool"]["counted"] is False and row["pool"]["weights"] is None
    assert (row["pool"]["Effective_ACs"], row["pool"]["Dense"]) == \
        (want["pool_acs"], want["pool_dense"])
    assert row["conv"]["op"] == {"analog": "MAC", "frames": "MAC+AC", "spikes": "AC"}[case]
    if case == "spikes":
        assert want["macs"] == 0 and row["fb"]["Effective_ACs"] > 0
    if case == "frames":
        assert want["macs"] > 0 and row["conv"]["Effective_ACs"] > 0


def test_a_delayed_projection_counts_delivered_spikes(tmp_path):
    # the spikes of l3 in the last step are never delivered through fb (delay 1)
    net, fwd, stim, path = _run("spikes", tmp_path)
    d = ops.neurobench_metrics(path)
    nz = (net.projections["fb"].weight != 0).sum(1)
    s = fwd.spikes["l3"].astype(np.int64)
    fb = {r["layer"]: r for r in d["layers"]}["fb"]
    assert fb["Effective_ACs"] == int((s[:, :-1].sum((0, 1))) @ nz)
    assert fb["Dense"] == 4 * 18 * T * B


def test_neurosim_counts_and_backward_are_reported_separately(tmp_path):
    net, fwd, stim, path = _run("analog", tmp_path, backward=True)
    data = ops.load_run_data(path)
    d = ops.neurobench_metrics(data)
    ph = ops.table_from_data(data).phase_totals()
    own = d["neurosim"]
    assert own["forward_synaptic_operations"] == ph["forward"]["synaptic_operations"]
    assert own["input_encoding_macs"] == ph["input_encoding"]["synaptic_operations"]
    # the constant input is encoded once by neurosim, counted every step by NeuroBench
    conv = {r["layer"]: r for r in d["layers"]}["conv"]
    rows = {(r["layer"], r["phase"]): r for r in ops.table_from_data(data).projection_rows()}
    assert conv["Effective_MACs"] == T * rows[("conv", "input_encoding")][
        "synaptic_operations_nonzero_total"]
    nb = own["not_in_neurobench"]
    assert nb["backward_synaptic_operations"] == ph["backward"]["synaptic_operations"]
    assert nb["weight_update_macs"] == ph["weight_update"]["synaptic_operations"]
    assert own["neuron_updates"] == ph["forward"]["neuron_updates"]
    assert own["dense_neuron_updates"] == (2 * 36 + 18 + 4) * T


def test_bad_input(tmp_path):
    with pytest.raises(TypeError, match="needs a RunData"):
        ops.neurobench_metrics({"forward": None})
    net, fwd, stim, path = _run("analog", tmp_path)
    data = ops.load_run_data(path)
    with pytest.raises(ops.OpsError, match="analog values of input population 'x'"):
        ops.neurobench_metrics(data._replace(inputs={}))


# ---------------------------------------------------------------------------------------
# the command
def test_cli_neurobench_text_and_json(tmp_path):
    net, fwd, stim, path = _run("analog", tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["ops", str(path), "--neurobench"])
    assert r.exit_code == 0, r.output
    for text in ("NeuroBench-compatible metrics", "Footprint", "ConnectionSparsity",
                 "ActivationSparsity", "MembraneUpdates", "Effective_MACs", "Effective_ACs",
                 "Dense", "Definitions", "never delivered"):
        assert text in r.output
    r = runner.invoke(main, ["ops", str(path), "--neurobench", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    want = json.loads(json.dumps(ops.neurobench_metrics(path)))
    assert got == want
    assert set(got["workload"]["SynapticOperations"]) == {"Effective_MACs", "Effective_ACs",
                                                          "Dense"}


def test_cli_neurobench_errors(tmp_path):
    net, fwd, stim, path = _run("analog", tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["ops", str(path), "--neurobench", "--csv"])
    assert r.exit_code == 2 and "--neurobench" in r.output and "--csv" in r.output
    r = runner.invoke(main, ["ops", str(tmp_path / "nope.h5"), "--neurobench"])
    assert r.exit_code == 2 and "does not exist" in r.output
    bad = tmp_path / "text.h5"
    bad.write_text("not hdf5")
    r = runner.invoke(main, ["ops", str(bad), "--neurobench", "--json"])
    assert r.exit_code == 2 and "not an HDF5 file" in r.output


def test_training_run_file(tmp_path):
    # a training run is recomputed on --samples samples; the NeuroBench counts follow
    # from that forward phase (identities with the ops table), the backward is separate
    from neurosim.training.trainer import train
    out = tmp_path / "t.h5"
    train("fsnn_mlp", "digits", out=out, overrides={"epochs": 1, "T": 4, "T_b": 6},
          max_train=16, max_test=8, handle_signals=False)
    data = ops.load_run_data(out, n_samples=8)
    d = ops.neurobench_metrics(data)
    tab = ops.table_from_data(data)
    rows = {(r["layer"], r["phase"]): r for r in tab.projection_rows()}
    net, Tf = data.network, data.forward.steps
    acs = macs = 0
    for name, pr in net.projections.items():
        if net.populations[pr.pre].kind == "input":
            macs += Tf * rows[(name, "input_encoding")]["synaptic_operations_nonzero_total"]
        elif pr.kind in ("dense", "sparse", "conv2d"):
            acs += rows[(name, "forward")]["synaptic_operations_nonzero_total"]
    assert (d["totals"]["Effective_MACs"], d["totals"]["Effective_ACs"]) == (macs, acs)
    assert d["samples"] == 8 and d["source"]["kind"] == "training"
    assert d["neurosim"]["not_in_neurobench"]["backward_synaptic_operations"] == \
        tab.phase_totals()["backward"]["synaptic_operations"]
    r = CliRunner().invoke(main, ["ops", str(out), "--neurobench", "--samples", "8"])
    assert r.exit_code == 0, r.output
    assert "no NeuroBench counterpart" in r.output
