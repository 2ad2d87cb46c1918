"""The NIR bridge (neurosim/nir.py, docs/nir.md): import against an independent numpy
simulation of the NIR semantics at dt, export round trips, bad graphs and files, CLI."""
import math
import os
import warnings

import numpy as np
import pytest

nir = pytest.importorskip("nir")

import neurosim as ns                                      # noqa: E402
from neurosim.io import nir as nb                          # noqa: E402
from neurosim.io.model_file import list_models             # noqa: E402
from neurosim.models import load_model                     # noqa: E402

DT = 2.0 ** -10          # dyadic time step and time constants: dt/tau is exact
TAU = 2.0 ** -5


def dyadic(rng, shape, scale=8):
    return rng.integers(-scale, scale + 1, size=shape) / 16.0


def spikes_in(rng, B, T, shape, p=0.4):
    return (rng.random((B, T) + tuple(shape)) < p).astype(np.int8)


# --- the independent reference: NIR semantics at dt (docs/nir.md, "Semantics") -------
def conv2d(x, w, b, stride, pad):
    C, H, W = x.shape
    Co, Ci, kh, kw = w.shape
    py, px = (pad, pad) if np.ndim(pad) == 0 else pad
    xp = np.zeros((C, H + 2 * py, W + 2 * px))
    xp[:, py:py + H, px:px + W] = x
    Ho, Wo = (H + 2 * py - kh) // stride + 1, (W + 2 * px - kw) // stride + 1
    out = np.zeros((Co, Ho, Wo))
    for co in range(Co):
        for oy in range(Ho):
            for ox in range(Wo):
                patch = xp[:, oy * stride:oy * stride + kh, ox * stride:ox * stride + kw]
                out[co, oy, ox] = np.sum(patch * w[co]) + b[co]
    return out


def conv_transpose_dense(w, pre_shape, s, p, op):
    """[n_pre, n_post] matrix (C-order on both sides) of PyTorch's ConvTranspose2d:
    input (ci, y, x) sends w[ci, co, ky, kx] to (co, y*s - p + ky, x*s - p + kx)."""
    Ci, H, W = pre_shape
    _, Co, kh, kw = w.shape
    Ho, Wo = (H - 1) * s - 2 * p + kh + op, (W - 1) * s - 2 * p + kw + op
    M = np.zeros((Ci, H, W, Co, Ho, Wo))
    for y in range(H):
        for x in range(W):
            for ky in range(kh):
                for kx in range(kw):
                    oy, ox = y * s - p + ky, x * s - p + kx
                    if 0 <= oy < Ho and 0 <= ox < Wo:
                        M[:, y, x, :, oy, ox] += w[:, :, ky, kx]
    return M.reshape(Ci * H * W, Co * Ho * Wo), (Co, Ho, Wo)


def pool(x, k, s, avg):
    C, H, W = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    out = np.zeros((C, Ho, Wo))
    for oy in range(Ho):
        for ox in range(Wo):
            out[:, oy, ox] = x[:, oy * s:oy * s + k, ox * s:ox * s + k].sum(axis=(1, 2))
    return out / (k * k) if avg else out


def reference(graph, order, recurrent, x, T, dt):
    """Clock-driven NIR semantics: nodes evaluated in ``order`` each step; an edge in
    ``recurrent`` carries the previous step's value.  Returns spike trains per neuron node."""
    preds = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        preds[b].append(a)
    out = {n: None for n in graph.nodes}
    prev = dict(out)
    state = {}
    trains = {}
    for t in range(T):
        for n in order:
            node = graph.nodes[n]
            ins = [(prev if (a, n) in recurrent else out)[a] for a in preds[n]]
            ins = [v for v in ins if v is not None]
            I = sum(ins[1:], ins[0]) if ins else None
            k = type(node).__name__
            if k == "Input":
                y = x[t].astype(np.float64)
            elif k == "Affine":
                y = node.weight @ I.ravel() + node.bias
            elif k == "Linear" and node.weight.ndim > 2:     # batched over leading axes
                y = np.matmul(node.weight, I[..., None])[..., 0]
            elif k == "Linear":
                y = node.weight @ I.ravel()
            elif k == "Conv2d":
                y = conv2d(I, node.weight, node.bias, int(node.stride[0]),
                           tuple(int(v) for v in node.padding))
            elif k in ("SumPool2d", "AvgPool2d"):
                y = pool(I, int(node.kernel_size[0]), int(node.stride[0]), k == "AvgPool2d")
            elif k == "Flatten":
                y = I.ravel()
            elif k == "Scale":
                y = I * node.scale
            elif k == "Delay":
                d = int(round(float(node.delay.ravel()[0]) / dt))
                q = state.setdefault(n, [np.zeros_like(I)] * d)
                q.append(I)
                y = q.pop(0)
            elif k in ("IF", "LIF"):
                v = state.setdefault(n, np.zeros(node.v_threshold.shape))
                if k == "IF":
                    v += node.r * I.reshape(v.shape)
                else:
                    v += (node.r * dt / node.tau) * I.reshape(v.shape)
                z = v > node.v_threshold
                v[z] = node.v_reset[z]
                if k == "LIF":
                    lam = np.vectorize(lambda tau: math.exp(-dt / tau))(node.tau)
                    v *= lam
                trains.setdefault(n, []).append(z.astype(np.int8))
                y = z.astype(np.float64)
            elif k == "CubaLIF":
                v, i = state.setdefault(n, (node.v_leak.copy(), np.zeros(node.v_leak.shape)))
                i += node.r * node.w_in * I.reshape(i.shape)
                tm, ts = float(node.tau_mem.ravel()[0]), float(node.tau_syn.ravel()[0])
                am, a_s = math.exp(-dt / tm), math.exp(-dt / ts)
                p = ts / (ts - tm) * (a_s - am)
                v[:] = (node.v_leak + (v - node.v_leak) * am + 0.0) + i * p
                i *= a_s
                z = v > node.v_threshold
                v[z] = node.v_reset[z]
                trains.setdefault(n, []).append(z.astype(np.int8))
                y = z.astype(np.float64)
            elif k == "Output":
                y = I
            else:
                raise AssertionError(k)
            out[n] = y
        prev = dict(out)
    return {n: np.array(v) for n, v in trains.items()}


def simulate(net, graph, x, T):
    m = net.metadata["nir"]["populations"]
    inp = [n for n, nd in graph.nodes.items() if isinstance(nd, nir.Input)][0]
    pop = net.populations[m[inp]]
    fwd = ns.run_forward(net, T, spikes={pop.name: ns.chw_to_flat(x) if x.ndim == 5 else x},
                         record=True)
    res = {}
    for n, p in m.items():
        P = net.populations[p]
        if P.spiking:
            res[n] = ns.flat_to_chw(fwd.spikes[p], P.shape)
    return res, fwd


def check(graph, order, recurrent, x_shape, T=40, B=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    x = spikes_in(rng, B, T, x_shape)
    net = nb.from_nir(graph, dt=DT, dtype=np.float64, **kw)
    got, fwd = simulate(net, graph, x, T)
    n_spikes = 0
    for b in range(B):
        want = reference(graph, order, recurrent, x[b], T, DT)
        for n, tr in want.items():
            np.testing.assert_array_equal(got[n][b], tr, err_msg=f"node {n}, sample {b}")
            n_spikes += int(tr.sum())
    assert n_spikes > 0, "the test network should spike"
    return net, fwd


def full(shape, v):
    return np.full(shape, float(v))


def lif(n, tau=TAU, th=1.0, r=None, vr=0.0):
    return nir.LIF(tau=full(n, tau), r=full(n, tau / DT if r is None else r), v_leak=full(n, 0),
                   v_threshold=full(n, th), v_reset=full(n, vr))


# --- import vs. the reference --------------------------------------------------------
def test_feedforward_lif_mlp():
    rng = np.random.default_rng(1)
    g = nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array([12])),
        fc1=nir.Affine(weight=dyadic(rng, (10, 12)), bias=dyadic(rng, 10, 2)),
        l1=lif(10, r=TAU / DT * 0.5, th=0.75),
        fc2=nir.Linear(weight=dyadic(rng, (6, 10))),
        l2=nir.IF(r=full(6, 1.0), v_threshold=full(6, 0.5), v_reset=full(6, -0.25)),
        y=nir.Output(output_type=np.array([6]))),
        edges=[("x", "fc1"), ("fc1", "l1"), ("l1", "fc2"), ("fc2", "l2"), ("l2", "y")])
    net, _ = check(g, ["x", "fc1", "l1", "fc2", "l2", "y"], set(), (12,))
    assert net.metadata["nir"]["outputs"] == {"y": "l2"}
    assert [p.kind for p in net.populations.values()] == ["source", "lif", "lif"]


def test_threshold_is_strict_by_default():
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([1])),
                               nir.Linear(weight=np.array([[0.5]])),
                               nir.IF(r=np.ones(1), v_threshold=np.ones(1), v_reset=np.zeros(1)))
    x = np.ones((1, 4, 1), np.int8)      # v = 0.5, 1.0 (not > 1: no spike), 1.5 -> spike
    for mode, want in (("strict", [0, 0, 1, 0]), ("inclusive", [0, 1, 0, 1])):
        net = nb.from_nir(g, dt=DT, dtype=np.float32, threshold=mode)
        fwd = ns.run_forward(net, 4, spikes={"input": x}, record=True)
        assert fwd.spikes["if"][0, :, 0].tolist() == want, mode


def test_cuba_lif():
    rng = np.random.default_rng(2)
    n = 8
    g = nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array([5])),
        fc=nir.Linear(weight=dyadic(rng, (n, 5), 16)),
        c=nir.CubaLIF(tau_syn=full(n, 2 ** -7), tau_mem=full(n, TAU), r=full(n, 2.0),
                      v_leak=full(n, 0.25), v_threshold=full(n, 0.5), v_reset=full(n, 0.0),
                      w_in=full(n, 0.5)),
        y=nir.Output(output_type=np.array([n]))),
        edges=[("x", "fc"), ("fc", "c"), ("c", "y")])
    net, _ = check(g, ["x", "fc", "c", "y"], set(), (5,), T=60)
    assert net.populations["c"].kind == "cuba_lif"


def test_conv_pool_flatten_affine():
    rng = np.random.default_rng(3)
    C0, H = 2, 8
    g = nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array([C0, H, H])),
        conv=nir.Conv2d(input_shape=(H, H), weight=dyadic(rng, (3, C0, 3, 3)), stride=1,
                        padding=1, dilation=1, groups=1, bias=dyadic(rng, 3, 1)),
        c1=nir.IF(r=full((3, H, H), 1.0), v_threshold=full((3, H, H), 0.5),
                  v_reset=full((3, H, H), 0.0)),
        pool=nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                           padding=np.array([0, 0])),
        p1=lif((3, 4, 4), th=1.0),                      # r = tau/dt: input gain 1
        flat=nir.Flatten(input_type={"input": np.array([3, 4, 4])}, start_dim=0),
        fc=nir.Affine(weight=dyadic(rng, (5, 48)), bias=np.zeros(5)),
        o=nir.IF(r=full(5, 1.0), v_threshold=full(5, 0.25), v_reset=full(5, 0.0)),
        y=nir.Output(output_type=np.array([5]))),
        edges=[("x", "conv"), ("conv", "c1"), ("c1", "pool"), ("pool", "p1"), ("p1", "flat"),
               ("flat", "fc"), ("fc", "o"), ("o", "y")])
    net, _ = check(g, ["x", "conv", "c1", "pool", "p1", "flat", "fc", "o", "y"], set(),
                   (C0, H, H), T=30)
    kinds = [q.kind for q in net.projections.values()]
    assert kinds == ["conv2d", "sumpool2d", "dense"]
    assert net.projections["fc"].bias is None        # an all-zero bias is dropped


def test_recurrent_graph_and_delay():
    rng = np.random.default_rng(4)
    n = 9
    g = nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array([6])),
        fc=nir.Linear(weight=dyadic(rng, (n, 6))),
        h=lif(n, th=0.5),
        rec=nir.Linear(weight=dyadic(rng, (n, n))),
        fc2=nir.Linear(weight=dyadic(rng, (4, n))),
        d=nir.Delay(delay=full(4, 3 * DT)),
        o=nir.IF(r=full(4, 1.0), v_threshold=full(4, 0.5), v_reset=full(4, 0.0)),
        y=nir.Output(output_type=np.array([4]))),
        edges=[("x", "fc"), ("fc", "h"), ("h", "rec"), ("rec", "h"), ("h", "fc2"),
               ("fc2", "d"), ("d", "o"), ("o", "y")])
    net, _ = check(g, ["x", "fc", "h", "rec", "fc2", "d", "o", "y"], {("rec", "h")}, (6,), T=50)
    assert net.projections["rec"].delay == 1 and net.projections["fc2"].delay == 3


def test_subgraph_is_flattened_and_scale_folded():
    rng = np.random.default_rng(5)
    inner = nir.NIRGraph(nodes=dict(
        i=nir.Input(input_type=np.array([4])),
        s=nir.Scale(scale=np.array([1.0, 0.5, 2.0, 1.0])),
        fc=nir.Linear(weight=dyadic(rng, (3, 4))),
        l=nir.IF(r=full(3, 1.0), v_threshold=full(3, 0.25), v_reset=full(3, 0.0)),
        o=nir.Output(output_type=np.array([3]))),
        edges=[("i", "s"), ("s", "fc"), ("fc", "l"), ("l", "o")], type_check=False)
    g = nir.NIRGraph(nodes=dict(x=nir.Input(input_type=np.array([4])), sub=inner,
                                y=nir.Output(output_type=np.array([3]))),
                     edges=[("x", "sub"), ("sub", "y")], type_check=False)
    net = nb.from_nir(g, dt=DT, dtype=np.float64)
    assert list(net.populations) == ["x", "sub.l"]
    w = inner.nodes["fc"].weight.T * np.array([1.0, 0.5, 2.0, 1.0])[:, None]
    np.testing.assert_array_equal(net.projections["sub.fc"].weight, w)


def test_li_readout_is_a_silent_population():
    g = nir.NIRGraph.from_list(nir.Input(input_type=np.array([3])),
                               nir.Linear(weight=np.ones((2, 3))),
                               nir.LI(tau=full(2, TAU), r=full(2, TAU / DT), v_leak=full(2, 0)))
    net = nb.from_nir(g, dt=DT)
    fwd = ns.run_forward(net, 10, spikes={"input": np.ones((1, 10, 3), np.int8)})
    assert fwd.counts["li"].sum() == 0 and fwd.v_final["li"][0, 0] > 0
    assert net.metadata["nir"]["readouts"] == ["li"]


# --- export and round trips ------------------------------------------------------------
def _drive(net, rng, B=2, T=12):
    kw = dict(inputs={}, spikes={})
    for p in net.populations.values():
        if p.kind == "input":
            kw["inputs"][p.name] = rng.random((B,) + p.shape)
        elif p.kind == "source":
            kw["spikes"][p.name] = (rng.random((B, T, p.n)) < 0.3).astype(np.int8)
    return kw, T


@pytest.mark.parametrize("model", list_models())
def test_round_trip_model_files(model, tmp_path):
    """Every shipped model exports to a file that passes nir's own type check and reads
    back to the same network; the two whose conv-transpose feedback is too large for NIR
    are refused with the reason (and leave no file)."""
    net = load_model(model, seed=0)
    path = tmp_path / f"{model}.nir"
    if model in ("alexnetf_cifar10", "cifarnetf_cifar100"):
        with pytest.raises(nb.NIRError, match=r"conv_transpose2d .* weights in NIR \(more than"):
            nb.write_nir(path, net)
        assert not path.exists()
        return
    with pytest.warns(nb.NIRApproximationWarning, match="subtractive reset"):
        nb.write_nir(path, net)
    g = nir.read(path, type_check=True)
    assert any(type(n).__name__ == "Output" for n in g.nodes.values())
    back = nb.from_nir(path)
    assert list(back.populations) == list(net.populations)
    assert [(q.name, q.kind, q.pre, q.post, q.delay) for q in back.projections.values()] == \
        [(q.name, q.kind, q.pre, q.post, q.delay) for q in net.projections.values()]
    for a, b in zip(net.populations.values(), back.populations.values()):
        assert (a.kind, a.shape) == (b.kind, b.shape)
        if a.spiking:
            assert a.neuron == b.neuron
    if model in ("convnetf_mnist", "lenet_mnist", "fsnn_mlp_fmnist", "convnet_dvs"):
        return     # large: structure and parameters only (the forward run is the slow part)
    rng = np.random.default_rng(0)
    kw, T = _drive(net, rng)
    f1 = ns.run_forward(net, T, record=True, **kw)
    f2 = ns.run_forward(back, T, record=True, **kw)
    for p in net.spiking_populations:
        np.testing.assert_array_equal(f1.spikes[p.name], f2.spikes[p.name])
    for q in net.projections:
        if q in f1.sent:
            np.testing.assert_array_equal(f1.sent[q], f2.sent[q])


def test_export_reads_in_other_tools_semantics():
    """Without neurosim's metadata, an exported IF / value-reset network still gives the
    same spikes (the NIR parameters alone are exact for it)."""
    rng = np.random.default_rng(7)
    net = ns.Network(dtype=np.float32)
    net.add_population("x", 6, "source")
    net.add_population("h", 5, ns.LIF(v_th=0.5, reset="value", v_reset=-0.25))
    net.add_population("o", 3, ns.LIF(v_th=0.75, reset="value", leak=0.5))
    net.add_projection("A", "x", "h", ns.Dense(dyadic(rng, (6, 5)), bias=dyadic(rng, 5, 2)))
    net.add_projection("B", "h", "o", ns.Dense(dyadic(rng, (5, 3))))
    net.add_projection("R", "o", "h", ns.Dense(dyadic(rng, (3, 5)), delay=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = nb.to_nir(net, dt=DT)
    for node in g.nodes.values():
        node.metadata = {}
    back = nb.from_nir(g, dt=DT, dtype=np.float32)
    kw, T = _drive(net, rng, T=30)
    f1 = ns.run_forward(net, T, record=True, **kw)
    f2 = ns.run_forward(back, T, record=True, **kw)
    for p in ("h", "o"):
        np.testing.assert_array_equal(f1.spikes[p], f2.spikes[p])
        assert f1.spikes[p].sum() > 0


@pytest.mark.parametrize("Ci, Co, H, W, kh, kw, s, p, op", [
    (2, 3, 4, 4, 2, 2, 2, 0, 0), (3, 2, 5, 4, 3, 3, 2, 1, 1), (2, 2, 3, 5, 3, 2, 1, 0, 0),
    (2, 3, 4, 3, 3, 3, 3, 2, 2), (2, 2, 4, 4, 3, 3, 2, 3, 0)])
def test_conv_transpose_is_exported_with_nodes_nir_has(Ci, Co, H, W, kh, kw, s, p, op,
                                                       tmp_path):
    """NIR has no transposed convolution and no reshape: a ConvTranspose2d is written as
    upsampling nodes and a Conv2d.  Evaluated with the reference's NIR semantics, one unit
    input at a time, the nodes compute PyTorch's ConvTranspose2d; the file passes nir's
    type check and reads back to the same projection; an edited upsampling node is
    refused."""
    rng = np.random.default_rng(Ci + 7 * H + s)
    w = dyadic(rng, (Ci, Co, kh, kw))
    M, post = conv_transpose_dense(w, (Ci, H, W), s, p, op)
    net = ns.Network(dtype=np.float64)
    net.add_population("a", (Ci, H, W), "source")
    net.add_population("b", post, ns.LIF(v_th=1.0, reset="value"))
    net.add_projection("up", "a", "b", ns.ConvTranspose2d(
        w, pre_shape=(Ci, H, W), stride=s, padding=p, output_padding=op, delay=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = nb.to_nir(net, dt=DT)
    chain = ["up.rows", "up.upsample_h", "up.upsample_w", "up"]
    assert [e for e in g.edges if e[0] in chain + ["a"]] == \
        [("a", chain[0])] + list(zip(chain, chain[1:] + ["up.delay"]))
    for i in range(Ci * H * W):
        y = np.zeros(Ci * H * W)
        y[i] = 1.0
        y = y.reshape(Ci, H, W)
        for n in chain:
            node = g.nodes[n]
            if isinstance(node, nir.Linear):
                y = np.matmul(node.weight, y[..., None])[..., 0]
            else:
                assert tuple(node.stride) == (1, 1)
                y = conv2d(y, node.weight, node.bias, 1, tuple(int(v) for v in node.padding))
        assert y.shape == post
        np.testing.assert_array_equal(y.ravel(), M[i])
    path = tmp_path / "ct.nir"
    nir.write(path, g)
    nir.read(path, type_check=True)
    back = nb.from_nir(path, dt=DT).projections["up"]
    assert (back.kind, back.stride, back.padding, back.output_padding, back.delay) == \
        ("conv_transpose2d", s, p, op, 1)
    np.testing.assert_array_equal(back.weight, w)
    g.nodes["up.upsample_h"].weight[0, 0, -1, :] += 1.0
    with pytest.raises(nb.NIRError, match="'up.upsample_h' .* is not the upsample_h part"):
        nb.from_nir(g, dt=DT)


def test_a_matrix_into_a_chw_population_is_refused():
    """NIR 1.0 cannot turn a vector into (C, H, W): no export of it could type-check."""
    net = ns.Network(dtype=np.float32)
    net.add_population("x", 4, "source")
    net.add_population("c", (1, 2, 2), ns.LIF(v_th=1.0, reset="value"))
    net.add_projection("fc", "x", "c", ns.Dense(np.eye(4)))
    with pytest.raises(nb.NIRError, match=r"'fc' \(dense\) into the \(C, H, W\) population "
                                          "'c'.*no node that reshapes"):
        nb.to_nir(net)


def test_every_run_kind_exports_and_type_checks(tmp_path):
    """``export-nir --run`` on each kind of run file: a simulate run with both phases (a
    conv-transpose feedback), training runs (an MLP with feedback, a conv net with a
    conv-transpose feedback) and a run of an imported snnTorch conv net (a composed
    pool -> dense projection); every file passes ``nir.read(type_check=True)`` and reads
    back to the run's network."""
    from click.testing import CliRunner
    from pathlib import Path
    from neurosim.cli import main
    from neurosim.io import load_network
    from neurosim.training.trainer import train
    r = CliRunner()
    runs = {}
    runs["simulate"] = tmp_path / "sim.h5"
    res = r.invoke(main, ["simulate", "--model", "test_conv", "--input", "digits",
                          "--n-samples", "2", "--steps", "4", "--backward-steps", "5",
                          "--grad", "random", "--out", str(runs["simulate"])])
    assert res.exit_code == 0, res.output
    for model in ("fsnn_mlp", "test_conv"):
        runs[model] = tmp_path / f"train-{model}.h5"
        train(model, "digits", out=runs[model], overrides={"epochs": 1, "T": 2, "T_b": 3},
              max_train=4, max_test=4, handle_signals=False)
    golden = Path(__file__).parent / "data" / "nir_golden"
    np.save(tmp_path / "x.npy", np.load(golden / "snntorch_conv.npz")["input"][None, :3])
    runs["imported"] = tmp_path / "imported.h5"
    res = r.invoke(main, ["simulate", "--model", str(golden / "snntorch_conv.nir"), "--dt", "1e-4",
                          "--leak-integration", "euler", "--input", str(tmp_path / "x.npy"),
                          "--steps", "3", "--out", str(runs["imported"])])
    assert res.exit_code == 0, res.output
    for kind, run in runs.items():
        out = tmp_path / f"{kind}.nir"
        res = r.invoke(main, ["export-nir", "--run", str(run), "--out", str(out)])
        assert res.exit_code == 0, (kind, res.output)
        g = nir.read(out, type_check=True)
        assert any(isinstance(n, nir.Output) for n in g.nodes.values()), kind
        net, back = load_network(run), nb.from_nir(out)
        assert [(q.name, q.kind, q.delay) for q in back.projections.values()] == \
            [(q.name, q.kind, q.delay) for q in net.projections.values()], kind
    assert load_network(runs["imported"]).metadata["nir"]["composed"]


# --- bad graphs and files -------------------------------------------------------------
def _mlp(**over):
    nodes = dict(x=nir.Input(input_type=np.array([3])), fc=nir.Linear(weight=np.ones((2, 3))),
                 l=nir.IF(r=np.ones(2), v_threshold=np.ones(2), v_reset=np.zeros(2)),
                 y=nir.Output(output_type=np.array([2])))
    nodes.update(over)
    return nir.NIRGraph(nodes=nodes, edges=[("x", "fc"), ("fc", "l"), ("l", "y")],
                        type_check=False)


@pytest.mark.parametrize("graph, match", [
    (lambda: _mlp(fc=nir.Conv1d(input_shape=3, weight=np.ones((1, 1, 1)), stride=1, padding=0,
                                dilation=1, groups=1, bias=np.zeros(1))),
     "type Conv1d, which neurosim cannot import"),
    (lambda: _mlp(fc=nir.Linear(weight=np.ones((2, 4)))), "shape mismatch"),
    (lambda: _mlp(l=nir.IF(r=np.ones(2), v_threshold=np.array([1.0, np.nan]),
                           v_reset=np.zeros(2))), "NaN"),
    (lambda: _mlp(l=nir.IF(r=np.ones(2), v_threshold=np.array([1.0, 2.0]),
                           v_reset=np.zeros(2))), "differs between neurons"),
    (lambda: nir.NIRGraph(nodes=dict(x=nir.Input(input_type=np.array([2])),
                                     a=nir.Linear(weight=np.eye(2)), b=nir.Linear(weight=np.eye(2)),
                                     l=nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
                                     y=nir.Output(output_type=np.array([2]))),
                          edges=[("x", "a"), ("a", "b"), ("b", "a"), ("b", "l"), ("l", "y")],
                          type_check=False), "cycle through stateless nodes"),
    (lambda: _mlp(fc=nir.Conv2d(input_shape=(1, 3), weight=np.ones((2, 1, 1, 1)), stride=1,
                                padding=0, dilation=2, groups=1, bias=np.zeros(2))),
     "dilation"),
])
def test_bad_graphs(graph, match):
    with pytest.raises(nb.NIRError, match=match):
        nb.from_nir(graph())


def test_bad_files(tmp_path):
    good = tmp_path / "g.nir"
    nir.write(good, _mlp())
    data = good.read_bytes()
    bad = tmp_path / "trunc.nir"
    bad.write_bytes(data[:len(data) // 2])
    with pytest.raises(nb.NIRError, match="cannot read NIR file"):
        nb.from_nir(bad)
    with pytest.raises(FileNotFoundError):
        nb.from_nir(tmp_path / "missing.nir")
    assert list(nb.from_nir(good).populations) == ["x", "l"]


# --- CLI --------------------------------------------------------------------------------
def test_cli(tmp_path):
    from click.testing import CliRunner
    from neurosim.cli import main
    r = CliRunner()
    g = tmp_path / "g.nir"
    nir.write(g, _mlp())
    res = r.invoke(main, ["info", "--model", str(g)])
    assert res.exit_code == 0, res.output
    assert "l" in res.output
    np.save(tmp_path / "x.npy", np.ones((2, 5, 3), np.int8))
    out = tmp_path / "run.h5"
    res = r.invoke(main, ["simulate", "--model", str(g), "--dt", "0.001", "--input",
                          str(tmp_path / "x.npy"), "--steps", "5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists()
    # export: model file and run file
    res = r.invoke(main, ["export-nir", "--model", "fsnn_mlp", "--out", str(tmp_path / "m.nir")])
    assert res.exit_code == 0, res.output
    assert "approximate" in res.output
    res = r.invoke(main, ["export-nir", "--run", str(out), "--out", str(tmp_path / "r.nir")])
    assert res.exit_code == 0, res.output
    assert list(nb.from_nir(tmp_path / "r.nir").populations) == ["x", "l"]
    # bad input: exit 2, one clear line, no partial output
    bad = tmp_path / "bad.nir"
    bad.write_bytes(g.read_bytes()[:100])
    for args in (["info", "--model", str(bad)],
                 ["simulate", "--model", str(bad), "--input", str(tmp_path / "x.npy"),
                  "--steps", "5", "--out", str(tmp_path / "bad.h5")],
                 ["export-nir", "--model", "alexnetf_cifar10", "--out", str(tmp_path / "a.nir")],
                 ["export-nir", "--out", str(tmp_path / "n.nir")]):
        res = r.invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert "Error:" in res.output
    assert not (tmp_path / "bad.h5").exists() and not (tmp_path / "a.nir").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_neurosim_imports_without_nir():
    import subprocess
    import sys
    code = ("import sys; sys.modules['nir'] = None; import neurosim, neurosim.io.nir as nb\n"
            "try:\n    nb.from_nir('x.nir')\nexcept nb.NIRError as e:\n    print('ok', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.startswith("ok") and "pip install" in out.stdout, out.stderr


# --- what the frameworks' exporters write (issue 31; the golden files: test_nir_golden) --
def _exporter_mlp(input_shape, params_shape=(), w=None):
    """An snnTorch-like graph: Input with a leading 1, 0-d neuron parameters."""
    w = np.eye(3)[:2] if w is None else w
    p = lambda v: np.full(params_shape, v, np.float32)
    return nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array(input_shape)), fc=nir.Linear(weight=w),
        l=nir.IF(r=p(1.0), v_threshold=p(0.5), v_reset=p(0.0)),
        y=nir.Output(output_type=np.array([2]))),
        edges=[("x", "fc"), ("fc", "l"), ("l", "y")], type_check=False)


def test_leading_ones_squeezed_and_scalars_broadcast():
    net = nb.from_nir(_exporter_mlp([1, 3]))
    assert net.populations["x"].shape == (3,) and net.populations["l"].shape == (2,)
    net = nb.from_nir(_exporter_mlp([1, 3], params_shape=(1, 2)))
    assert net.populations["l"].shape == (2,)


def test_an_input_with_a_time_dimension_is_refused_with_a_hint():
    with pytest.raises(nb.NIRError, match=r"Input node 'x' has shape \(4, 3\).*receiver "
                                          r"takes 3 values"):
        nb.from_nir(_exporter_mlp([4, 3]))


def _pool_graph(r):
    """conv -> IF -> AvgPool -> LIF with r = tau/dt * r (gain r)."""
    shp = (2, 4, 4)
    tau = np.float32(9.999997e-4)
    return nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array([1, 4, 4])),
        conv=nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 1, 1, 1)), stride=1, padding=0,
                        dilation=1, groups=1, bias=np.zeros(2)),
        a=nir.IF(r=np.ones(shp), v_threshold=np.full(shp, 0.5), v_reset=np.zeros(shp)),
        pool=nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                           padding=np.array([0, 0])),
        b=nir.LIF(tau=np.full((2, 2, 2), tau), r=np.full((2, 2, 2), np.float32(tau / 1e-4 * r)),
                  v_leak=np.zeros((2, 2, 2)), v_threshold=np.full((2, 2, 2), 0.2),
                  v_reset=np.zeros((2, 2, 2))),
        y=nir.Output(output_type=np.array([2, 2, 2]))),
        edges=[("x", "conv"), ("conv", "a"), ("a", "pool"), ("pool", "b"), ("b", "y")],
        type_check=False)


def test_pool_gain_is_one_up_to_float32_rounding():
    net = nb.from_nir(_pool_graph(1.0), dt=1e-4, leak_integration="euler")
    assert net.projections["pool"].kind == "avgpool2d"
    with pytest.raises(nb.NIRError, match="must have input gain 1"):
        nb.from_nir(_pool_graph(1.001), dt=1e-4, leak_integration="euler")


def test_pool_flatten_linear_is_composed_and_other_pairs_refused():
    rng = np.random.default_rng(9)
    shp = (2, 4, 4)
    W = dyadic(rng, (3, 8))
    nodes = dict(
        x=nir.Input(input_type=np.array(shp)),
        a=nir.IF(r=np.ones(shp), v_threshold=np.full(shp, 0.5), v_reset=np.zeros(shp)),
        pool=nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                           padding=np.array([0, 0])),
        flat=nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0),
        fc=nir.Linear(weight=W),
        o=nir.IF(r=np.ones(3), v_threshold=np.full(3, 0.5), v_reset=np.zeros(3)))
    edges = [("x", "a"), ("a", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", "o")]
    net = nb.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False),
                      dtype=np.float64)
    q = net.projections["fc"]
    assert q.kind == "dense" and net.metadata["nir"]["composed"] == {"fc": ["pool", "flat", "fc"]}
    # the composed matrix: a's neuron (c, y, x) feeds fc through pool window (c, y//2, x//2)
    _, c2n = nb._order(shp)
    M = q.to_dense()
    for c in range(2):
        for y in range(4):
            for x in range(4):
                k = c2n[(c * 4 + y) * 4 + x]
                np.testing.assert_array_equal(M[k], W[:, (c * 2 + y // 2) * 2 + x // 2])
    nodes["fc"] = nir.Linear(weight=dyadic(rng, (3, 32)))
    nodes["pool"] = nir.Conv2d(input_shape=(4, 4), weight=np.ones((2, 2, 1, 1)), stride=1,
                               padding=0, dilation=1, groups=1, bias=np.zeros(2))
    nodes["flat"] = nir.Flatten(input_type={"input": np.array([2, 4, 4])}, start_dim=0)
    with pytest.raises(nb.NIRError, match="only a pool followed by Affine/Linear"):
        nb.from_nir(nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def test_cuba_euler_is_forward_euler():
    """leak_integration='euler' on a CubaLIF: v and i follow Norse's Euler step exactly
    (to float64 rounding) on a single input spike."""
    dt, tm, ts = 1e-3, 4e-3, 2e-3
    g = nir.NIRGraph(nodes=dict(
        x=nir.Input(input_type=np.array([1])), fc=nir.Linear(weight=np.array([[1.0]])),
        c=nir.CubaLI(tau_syn=np.array([ts]), tau_mem=np.array([tm]), r=np.array([1.0]),
                     v_leak=np.array([0.0]), w_in=np.array([1.0])),
        y=nir.Output(output_type=np.array([1]))),
        edges=[("x", "fc"), ("fc", "c"), ("c", "y")], type_check=False)
    # CubaLI has no spikes: read the potential from a CubaLIF twin with a high threshold
    g.nodes["c"] = nir.CubaLIF(tau_syn=np.array([ts]), tau_mem=np.array([tm]), r=np.array([1.0]),
                               v_leak=np.array([0.0]), v_threshold=np.array([1e9]),
                               v_reset=np.array([0.0]), w_in=np.array([1.0]))
    net = nb.from_nir(g, dt=dt, dtype=np.float64, leak_integration="euler")
    n = net.populations["c"].neuron
    am, as_ = 1 - dt / tm, 1 - dt / ts
    assert n.alpha_mem == pytest.approx(am, rel=1e-12)
    assert n.alpha_syn[0] == pytest.approx(as_, rel=1e-12)
    gain = net.projections["fc"].to_dense()[0, 0]
    p = n.tau_syn[0] / (n.tau_syn[0] - n.tau_mem) * (as_ - am)
    assert gain * p == pytest.approx(dt / tm, rel=1e-12)


def test_exporter_conventions_of_hand_made_graphs():
    snn = _pool_graph(1.0)
    assert [c["exporter"] for c in nb.exporter_conventions(snn)] == ["snnTorch"]
    sj = _exporter_mlp([3], params_shape=(2,))
    sj.nodes["l"] = nir.IF(r=np.full(2, 1e4), v_threshold=np.ones(2), v_reset=np.zeros(2))
    (c,) = nb.exporter_conventions(sj)
    assert (c["exporter"], c["dt"], c["options"]) == ("SpikingJelly", 1e-4,
                                                      {"if_gain": "continuous"})
    assert nb.exporter_conventions(_exporter_mlp([3], params_shape=(2,))) == []


def test_cli_nir_options_and_analog_input(tmp_path):
    from click.testing import CliRunner
    from neurosim.cli import main
    r = CliRunner()
    g = tmp_path / "g.nir"
    nir.write(g, _mlp())
    x = tmp_path / "x.npy"
    np.save(x, np.full((1, 5, 3), 0.7))
    args = ["simulate", "--model", str(g), "--input", str(x), "--steps", "5",
            "--out", str(tmp_path / "r.h5")]
    res = r.invoke(main, args)
    assert res.exit_code == 2 and "--input-kind analog" in res.output
    res = r.invoke(main, args + ["--input-kind", "analog"])
    assert res.exit_code == 0, res.output
    assert "NIR: dt = 0.001 (the default" in res.output
    res = r.invoke(main, ["ops", str(g), "--input", str(x), "--input-kind", "analog"])
    assert res.exit_code == 0, res.output
    assert "simulated g.nir for 5 steps" in res.output
    res = r.invoke(main, ["ops", str(tmp_path / "r.h5"), "--dt", "1e-3"])
    assert res.exit_code == 2 and "GRAPH.nir argument only" in res.output
    res = r.invoke(main, ["info", "--model", "fsnn_mlp", "--leak-integration", "euler"])
    assert res.exit_code == 2 and ".nir models only" in res.output
