"""Golden NIR files from the real frameworks (issue 31, item 4), and a checker.

Two modes, two interpreters:

* ``make`` (default) runs in the frameworks' own virtualenv (README.md beside this file:
  torch CPU, snnTorch, Norse, sinabs, SpikingJelly, nir, nirtorch, neurobench; never a
  dependency of neurosim).  Per framework it builds, with fixed seeds, an MLP, a small conv
  net with pooling and, where the exporter allows, a recurrent net; exports each with THAT
  framework's own NIR exporter; runs the framework itself on a fixed input and records
  every spiking layer's spike train; runs the real ``neurobench`` package on the snnTorch
  nets.  It writes ``tests/data/nir_golden/<framework>_<net>.nir``, ``<...>.npz`` (input,
  spike trains per layer) and ``manifest.json`` (versions, conventions, what each
  exporter wrote, NeuroBench numbers).

* ``--check`` runs with neurosim's interpreter (``/work/venv/bin/python`` and
  ``PYTHONPATH=<worktree>``; imports no torch): for every golden file it imports the NIR
  file with :func:`neurosim.io.nir.from_nir` under a sweep of import options (and the hand
  edits listed in ``EDITS``), simulates the recorded input and compares every layer's
  spikes with the framework's; ``--json FILE`` writes the whole table.

npz layout: ``input`` [T, *input_shape] float32 (0/1 for spike input, analog values
otherwise); ``spikes.<node>`` [T, n] uint8 for the NIR node ``<node>`` (a neuron node,
subgraph nodes as ``g.n``), neurons in NIR's C-order (``C, H, W`` flattened); ``dt``: the
time step the exporter assumed when writing time constants (NaN where it wrote none).
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "nir_golden"
SEED = 31
T_MLP, T_CONV = 40, 30
N_IN, N_HID, N_OUT = 20, 30, 10


# =======================================================================================
# fixed inputs (numpy only: the same bits in both modes)
# =======================================================================================
def fixed_inputs():
    rng = np.random.default_rng(SEED)
    return {
        "mlp_spikes": (rng.random((T_MLP, N_IN)) < 0.3).astype(np.float32),
        "mlp_analog": rng.uniform(0.0, 1.0, (T_MLP, N_IN)).astype(np.float32),
        "conv_spikes": (rng.random((T_CONV, 1, 8, 8)) < 0.3).astype(np.float32),
    }


# =======================================================================================
# make mode (framework venv)
# =======================================================================================
def _scale_(net, factor):
    """Multiply every Linear / Conv weight (and bias) by ``factor``: torch's default init
    drives threshold-1 neurons too weakly to spike on a few steps."""
    import torch
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(factor)
                if m.bias is not None:
                    m.bias.mul_(factor)


def _describe(graph):
    """What the exporter wrote: node -> type and its scalar-ish parameters."""
    import nir
    out = {}
    for name, node in graph.nodes.items():
        d = {"type": type(node).__name__}
        if isinstance(node, nir.NIRGraph):
            d["nodes"] = _describe(node)
            d["edges"] = [list(e) for e in node.edges]
        for f in ("tau", "tau_mem", "tau_syn", "r", "w_in", "v_leak", "v_threshold",
                  "v_reset", "kernel_size", "stride", "padding", "start_dim", "end_dim",
                  "input_shape"):
            v = getattr(node, f, None)
            if v is None:
                continue
            a = np.asarray(v, dtype=np.float64) if not isinstance(v, str) else v
            if isinstance(a, str):
                d[f] = a
            elif a.size and np.all(a == a.ravel()[0]):
                d[f] = {"shape": list(a.shape), "value": float(a.ravel()[0])}
            else:
                d[f] = {"shape": list(a.shape), "min": float(a.min()), "max": float(a.max())}
        for f in ("weight", "bias"):
            v = getattr(node, f, None)
            if v is not None:
                d[f + "_shape"] = list(np.shape(v))
        for port in ("input_type", "output_type"):
            v = getattr(node, port, None)
            if isinstance(v, dict):
                d[port] = {k: (None if s is None else [int(x) for x in np.ravel(s)])
                           for k, s in v.items()}
        out[name] = d
    return out


def _neuron_nodes(graph, prefix=""):
    import nir
    names = []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            names += _neuron_nodes(node, prefix + name + ".")
        elif type(node).__name__ in ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "I", "Threshold"):
            names.append(prefix + name)
    return names


def _to_numpy_graph(graph):
    """Torch tensors left in a graph by an exporter -> numpy (``nir.write`` needs arrays)."""
    import nir
    import torch
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            _to_numpy_graph(node)
            continue
        for k, v in list(vars(node).items()):
            if isinstance(v, torch.Tensor):
                setattr(node, k, v.detach().cpu().numpy())
    return graph


def _sorted_edges(graph):
    """Edges in sorted order: nirtorch collects them in a set, so their order (and the
    file's bytes) would change with Python's string hash seed; the graph is the same."""
    import nir
    graph.edges = sorted(tuple(e) for e in graph.edges)
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            _sorted_edges(node)
    return graph


def _make_writable(graph, runs):
    """The least hand edit that lets ``nir.write`` store an exporter's graph: 0-d
    parameters (arrays and numpy scalars) -> shape (1,); a Conv2d without ``input_shape`` gets the (H, W) of the
    recorded input (only the first layer's conv is fed by the input in these nets)."""
    import nir
    done = []
    hw = next(iter(runs.values()))[0].shape[-2:]
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            done += _make_writable(node, runs)
            continue
        for k, v in list(vars(node).items()):
            if isinstance(v, (np.ndarray, np.generic)) and np.ndim(v) == 0:
                setattr(node, k, np.asarray(v).reshape(1))
                done.append(f"{name}.{k}: 0-d -> (1,)")
        for port in ("input_type", "output_type"):
            tp = getattr(node, port, None)
            if isinstance(tp, dict) and any(v is None for v in tp.values()):
                setattr(node, port, {k: (np.array([]) if v is None else v) for k, v in tp.items()})
                done.append(f"{name}.{port}: None -> [] (as the exporter left its neurons)")
        if isinstance(node, nir.Conv2d) and node.input_shape is None:
            node.input_shape = np.asarray(hw)
            done.append(f"{name}.input_shape: None -> {tuple(int(x) for x in hw)}")
    return done


def _record(steps, fn):
    """fn(t) -> {node: spikes tensor [1, ...]} per step -> {node: uint8 [T, n]}."""
    rec = {}
    for t in range(steps):
        for k, s in fn(t).items():
            rec.setdefault(k, []).append(np.asarray(s.detach().cpu().numpy()).reshape(-1))
    return {k: np.stack(v).astype(np.uint8) for k, v in rec.items()}


def _run_seq(net, x, neuron_types, call):
    """Run a Sequential step by step over x [T, ...]; spikes of every neuron module,
    keyed by its index (nirtorch names Sequential children '0', '1', ...)."""
    import torch
    x = torch.as_tensor(x)

    def step(t):
        h, out = x[t][None], {}
        for i, m in enumerate(net):
            h = call(i, m, h)
            if isinstance(m, neuron_types):
                out[str(i)] = h
        return out
    with torch.no_grad():
        return _record(x.shape[0], step)


class Recorder:
    def __init__(self):
        self.files, self.errors = {}, {}

    def save(self, fw, net_name, graph, runs, info, dt):
        """Write <fw>_<net>.nir and one npz per input kind (``runs``: kind -> (input,
        spikes)), and the manifest entry."""
        import nir
        stem = f"{fw}_{net_name}"
        graph = _sorted_edges(_to_numpy_graph(graph))
        info = dict(info)
        tmp = OUT / f".{stem}.nir.tmp"
        # uncompressed: gzip chunks make these tiny graphs 2-3x larger
        try:
            nir.write(tmp, graph, compression=None)
        except Exception as e:
            info["nir_write_error"] = f"{type(e).__name__}: {e}"
            info["written_with"] = _make_writable(graph, runs)
            nir.write(tmp, graph, compression=None)
        os.replace(tmp, OUT / f"{stem}.nir")
        neurons = _neuron_nodes(graph)
        for kind, (inp, spikes) in runs.items():
            name = stem if kind == "spikes" else f"{stem}_{kind}"
            keys = {}
            for k, v in spikes.items():
                # Sequential index k; nirtorch.torch_to_nir (SpikingJelly) names it "_k",
                # a flattened subgraph "k.<node>"
                node = next((n for n in (k, "_" + k) if n in neurons), None) or next(
                    (n for n in neurons if n.startswith(k + ".")), k)
                keys[node] = v
            missing = sorted(set(keys) - set(neurons))
            np.savez_compressed(OUT / f"{name}.npz", input=inp.astype(np.float32),
                                dt=np.float64(dt if dt is not None else np.nan),
                                **{f"spikes.{k}": v for k, v in keys.items()})
            self.files[name] = dict(
                info, framework=fw, net=net_name, nir=f"{stem}.nir", npz=f"{name}.npz",
                input_kind=kind, input_shape=list(inp.shape[1:]), steps=int(inp.shape[0]),
                dt_assumed=dt, spike_counts={k: int(v.sum()) for k, v in keys.items()},
                recorded_nodes_not_in_graph=missing,
                exported=_describe(graph))
            print(f"  {name}: " + ", ".join(f"{k}:{int(v.sum())}" for k, v in keys.items()))

    def fail(self, fw, net_name, exc):
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        self.errors[f"{fw}_{net_name}"] = msg
        print(f"  {fw}_{net_name}: FAILED {msg}")


def export_lenient(fn, note):
    """Call an exporter; when it fails in NIR's own ``NIRGraph.infer_types`` (which the
    exporter calls on its result), note the error and export again with type inference
    switched off: the graph the exporter built, as it built it."""
    import nir
    try:
        return fn()
    except Exception as e:
        first = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    orig = nir.NIRGraph.infer_types
    nir.NIRGraph.infer_types = lambda self, *a, **k: None
    try:
        g = fn()
    finally:
        nir.NIRGraph.infer_types = orig
    note["exporter_error"] = first
    note["exported_with"] = "NIRGraph.infer_types disabled (the exporter's own graph, untyped)"
    return g


def _attempt(rec, fw, net_name, fn):
    try:
        fn()
    except Exception as e:                        # recorded in the manifest, not hidden
        rec.fail(fw, net_name, e)


# ----------------------------------------------------------------------------- snnTorch
def make_snntorch(rec, X):
    import torch
    import snntorch as snn
    from snntorch.export_nir import export_to_nir
    beta = 0.9
    conv = dict(neuron="snntorch.Leaky(beta=0.9, threshold=1, reset_mechanism='zero')",
                equations="mem[t] = beta*mem[t-1]*(1-reset[t-1]) + I[t]; spk = mem > threshold "
                          "(strict); reset[t] = spk[t] applied at the next step (zero reset)",
                exporter="snntorch.export_nir.export_to_nir (hard-codes dt = 1e-4: "
                         "tau = dt/(1-beta), r = tau/dt, v_reset = 0 for every reset_mechanism)",
                threshold_convention="strict (mem - threshold > 0)")

    def leaky(**kw):
        return snn.Leaky(beta=beta, init_hidden=True, reset_mechanism=kw.pop("reset", "zero"), **kw)

    def call(i, m, h):
        return m(h)

    def mlp(reset="zero", out=False):
        torch.manual_seed(SEED)
        net = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HID), leaky(reset=reset),
                                  torch.nn.Linear(N_HID, N_OUT), leaky(reset=reset, output=out))
        _scale_(net, 3.0)
        return net

    def do_mlp():
        runs = {}
        for kind in ("spikes", "analog"):
            net = mlp()
            runs[kind] = (X[f"mlp_{kind}"], _run_seq(net, X[f"mlp_{kind}"], snn.SpikingNeuron, call))
        note = dict(conv)
        g = export_lenient(lambda: export_to_nir(mlp(), torch.zeros(1, N_IN)), note)
        rec.save("snntorch", "mlp", g, runs, note, 1e-4)
        # snnTorch's default reset is subtractive: same exporter output, other spikes
        net = mlp(reset="subtract")
        sub = _run_seq(net, X["mlp_spikes"], snn.SpikingNeuron, call)
        note = dict(conv)
        g = export_lenient(lambda: export_to_nir(mlp(reset="subtract"), torch.zeros(1, N_IN)), note)
        rec.save("snntorch", "mlp_subtract", g, {"spikes": (X["mlp_spikes"], sub)},
                 dict(note, neuron="snntorch.Leaky(beta=0.9, threshold=1) default "
                      "reset_mechanism='subtract'",
                      equations="mem[t] = beta*mem[t-1] + I[t] - threshold*reset[t-1]; "
                                "spk = mem > threshold (strict)"), 1e-4)

    def cnet(out=False):
        torch.manual_seed(SEED)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), leaky(),
                                  torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                  torch.nn.Linear(64, N_OUT), leaky(output=out))
        _scale_(net, 3.0)
        return net

    def do_conv():
        sp = _run_seq(cnet(), X["conv_spikes"], snn.SpikingNeuron, call)
        note = dict(conv)
        g = export_lenient(lambda: export_to_nir(cnet(), torch.zeros(1, 1, 8, 8)), note)
        rec.save("snntorch", "conv", g, {"spikes": (X["conv_spikes"], sp)}, note, 1e-4)

    def rnet(out=False):
        torch.manual_seed(SEED)
        net = torch.nn.Sequential(
            torch.nn.Linear(N_IN, N_HID),
            snn.RLeaky(beta=beta, linear_features=N_HID, all_to_all=True, init_hidden=True,
                       reset_mechanism="zero"),
            torch.nn.Linear(N_HID, N_OUT), leaky(output=out))
        _scale_(net, 3.0)
        with torch.no_grad():
            net[1].recurrent.weight.mul_(0.5 / 3.0)
        return net

    def do_rnn():
        sp = _run_seq(rnet(), X["mlp_spikes"], snn.SpikingNeuron, call)
        note = dict(conv)
        g = export_lenient(lambda: export_to_nir(rnet(), torch.zeros(1, N_IN)), note)
        rec.save("snntorch", "rnn", g, {"spikes": (X["mlp_spikes"], sp)},
                 dict(note, neuron="snntorch.RLeaky(beta=0.9, all_to_all=True, "
                      "reset_mechanism='zero') + Leaky",
                      equations="mem[t] = beta*mem[t-1]*(1-reset[t-1]) + I[t] + "
                                "W_rec spk[t-1]; spk = mem > threshold"), 1e-4)

    _attempt(rec, "snntorch", "mlp", do_mlp)
    _attempt(rec, "snntorch", "conv", do_conv)
    _attempt(rec, "snntorch", "rnn", do_rnn)
    _attempt(rec, "snntorch", "neurobench", lambda: neurobench_snntorch(
        rec, X, {"mlp": lambda: mlp(out=True), "conv": lambda: cnet(out=True),
                 "rnn": lambda: rnet(out=True)}))


def neurobench_snntorch(rec, X, builders):
    """The real neurobench package on the snnTorch nets, on the golden input (batch 1)."""
    import torch
    from neurobench.benchmarks import Benchmark
    from neurobench.models import SNNTorchModel
    from neurobench.metrics.static import ParameterCount, Footprint, ConnectionSparsity
    from neurobench.metrics.workload import (ActivationSparsity, SynapticOperations,
                                             MembraneUpdates)
    inputs = {"mlp": X["mlp_spikes"], "conv": X["conv_spikes"], "rnn": X["mlp_spikes"]}
    for name, build in builders.items():
        data = torch.as_tensor(inputs[name])[None]              # [1, T, ...]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data, torch.zeros(1)), batch_size=1)
        model = SNNTorchModel(build())
        bench = Benchmark(model, loader, [], [],
                          [[ParameterCount, Footprint, ConnectionSparsity],
                           [ActivationSparsity, SynapticOperations, MembraneUpdates]])
        res = bench.run(quiet=True)
        res = json.loads(json.dumps(res, default=float))
        entry = rec.files.get(f"snntorch_{name}")
        if entry is not None:
            entry["neurobench"] = res
        print(f"  neurobench snntorch_{name}: {res}")


# -------------------------------------------------------------------------------- Norse
def make_norse(rec, X):
    import torch
    import norse.torch as norse
    from norse.torch.utils.export_nir import to_nir
    base = dict(exporter="norse.torch.to_nir (dt argument, default 1e-3: tau = dt / "
                         "tau_inv, i.e. dt*tau, not 1/tau_inv; v_reset not written)")

    def state_call(states):
        def call(i, m, h):
            if isinstance(m, torch.nn.Module) and hasattr(m, "p"):
                z, states[i] = m(h, states.get(i))
                return z
            return m(h)
        return call

    cells = (norse.LIFCell, norse.LIFBoxCell)

    def mlp(cell, bias=True):
        torch.manual_seed(SEED)
        net = norse.SequentialState(torch.nn.Linear(N_IN, N_HID, bias=bias), cell(),
                                    torch.nn.Linear(N_HID, N_OUT, bias=bias), cell())
        _scale_(net, 30.0 if cell is norse.LIFBoxCell else 12.0)
        return net

    def do_mlp(cell, name, info, bias=True):
        runs = {}
        for kind in ("spikes", "analog"):
            runs[kind] = (X[f"mlp_{kind}"], _run_seq(mlp(cell, bias), X[f"mlp_{kind}"], cells,
                                                     state_call({})))
        g = to_nir(mlp(cell, bias), torch.zeros(1, N_IN))
        rec.save("norse", name, g, runs, dict(base, **info), 1e-3)

    lif = dict(neuron="norse LIFCell (tau_syn_inv=200, tau_mem_inv=100, v_th=1, v_reset=0, "
                      "dt=1e-3): Norse's default, current-based",
               equations="i = i + input; v' = v + dt*tau_mem_inv*((v_leak - v) + i); "
                         "i = i - dt*tau_syn_inv*i; z = v' > v_th; v = v_reset where z "
                         "(forward Euler, norse.torch.functional.lif_feed_forward_step)",
               threshold_convention="strict (heaviside(v - v_th), 0 at 0)")
    box = dict(neuron="norse LIFBoxCell (tau_mem_inv=100, v_th=1, v_reset=0, dt=1e-3)",
               equations="v' = v + dt*tau_mem_inv*((v_leak - v) + input); z = v' > v_th; "
                         "v = v_reset where z",
               threshold_convention="strict")
    _attempt(rec, "norse", "mlp", lambda: do_mlp(norse.LIFCell, "mlp", lif))
    _attempt(rec, "norse", "mlp_nobias", lambda: do_mlp(
        norse.LIFCell, "mlp_nobias", dict(lif, net="Linear(bias=False): the exporter writes "
                                          "Affine with a zero bias"), bias=False))
    _attempt(rec, "norse", "mlp_box", lambda: do_mlp(norse.LIFBoxCell, "mlp_box", box))

    def cnet():
        torch.manual_seed(SEED)
        net = norse.SequentialState(torch.nn.Conv2d(1, 4, 3, padding=1), norse.LIFBoxCell(),
                                  torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                  torch.nn.Linear(64, N_OUT), norse.LIFBoxCell())
        _scale_(net, 30.0)
        return net

    def do_conv():
        import nir
        sp = _run_seq(cnet(), X["conv_spikes"], cells, state_call({}))
        net = cnet()
        g = to_nir(net, torch.zeros(1, 1, 8, 8))
        note = dict(base, **box)
        # Norse's exporter has no AvgPool2d / Flatten: it leaves None nodes in the graph,
        # which nir.write cannot store.  Filled here by hand from the torch modules.
        filled = []
        for name, node in list(g.nodes.items()):
            if node is None:
                m = net[int(name)]
                if isinstance(m, torch.nn.AvgPool2d):
                    k = int(m.kernel_size)
                    g.nodes[name] = nir.AvgPool2d(kernel_size=np.array([k, k]),
                                                  stride=np.array([k, k]), padding=np.array([0, 0]))
                elif isinstance(m, torch.nn.Flatten):
                    g.nodes[name] = nir.Flatten(input_type={"input": np.array([4, 4, 4])},
                                                start_dim=0, end_dim=-1)
                filled.append(f"{name}: None ({type(m).__name__}) -> nir.{type(g.nodes[name]).__name__}")
        note["exporter_error"] = "norse.torch.to_nir returned None nodes: " + "; ".join(filled)
        note["hand_completed"] = filled
        rec.save("norse", "conv", g, {"spikes": (X["conv_spikes"], sp)}, note, 1e-3)

    def do_rnn():
        torch.manual_seed(SEED)
        net = norse.SequentialState(norse.LIFRecurrentCell(N_IN, N_HID),
                                    torch.nn.Linear(N_HID, N_OUT), norse.LIFCell())
        g = to_nir(net, torch.zeros(1, N_IN))
        none = [f"{n} ({type(net[int(n)]).__name__})" for n, v in g.nodes.items() if v is None]
        raise RuntimeError("norse.torch.to_nir returns the graph with None for the "
                           f"unsupported node(s) {none}: nir.write cannot store it")
    _attempt(rec, "norse", "conv", do_conv)
    _attempt(rec, "norse", "rnn", do_rnn)


# ------------------------------------------------------------------------------- sinabs
def make_sinabs(rec, X):
    import torch
    import sinabs
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike, MembraneReset
    base = dict(exporter="sinabs.to_nir (IAF -> IF(r=1, v_threshold), LIF -> LIF(tau in "
                         "steps, r=1, v_leak=0); no v_reset written (NIR default 0), no dt)",
                threshold_convention="inclusive (v - threshold >= 0)")
    iaf = dict(neuron="sinabs IAF(spike_threshold=1, spike_fn=SingleSpike, "
                      "reset_fn=MembraneReset()) (sinabs' default is MultiSpike + "
                      "MembraneSubtract, which NIR cannot express)",
               equations="v = v + I; s = v >= threshold; v = 0 where s (time in steps)")

    def call(i, m, h):
        return m(h)

    def mlp(kind=sl.IAF, scale=3.0, **kw):
        torch.manual_seed(SEED)
        make = (lambda: kind(spike_fn=SingleSpike, reset_fn=MembraneReset(), **kw))
        net = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HID), make(),
                                  torch.nn.Linear(N_HID, N_OUT), make())
        _scale_(net, scale)
        return net

    def run_time_major(net, x):
        """sinabs layers take [B, T, ...]: run the whole train at once, split per layer."""
        with torch.no_grad():
            h, out = torch.as_tensor(x)[None], {}
            for i, m in enumerate(net):
                h = m(h)
                if isinstance(m, sinabs.layers.StatefulLayer):
                    out[str(i)] = h[0].reshape(h.shape[1], -1).numpy().astype(np.uint8)
        return out

    def do_mlp():
        net = mlp()
        sp = run_time_major(net, X["mlp_spikes"])
        g = sinabs.to_nir(net, torch.zeros(1, 1, N_IN))
        rec.save("sinabs", "mlp", g, {"spikes": (X["mlp_spikes"], sp)}, dict(
            base, **iaf, sample_data="torch.zeros(1, 1, 20) ([B, T, n], one step; a sample "
            "of T steps gives Input shape (T, 20))"), 1.0)

    def do_mlp_lif():
        net = mlp(sl.LIF, scale=30.0, tau_mem=torch.tensor(10.0))
        sp = run_time_major(net, X["mlp_spikes"])
        g = sinabs.to_nir(net, torch.zeros(1, 1, N_IN))
        rec.save("sinabs", "mlp_lif", g, {"spikes": (X["mlp_spikes"], sp)}, dict(
            base, sample_data="torch.zeros(1, 1, 20)", neuron="sinabs LIF(tau_mem=10 steps, SingleSpike, MembraneReset, "
            "norm_input=True default)", equations="v = alpha*v + (1-alpha)*I with alpha = "
            "exp(-1/tau_mem); s = v >= threshold; v = 0 where s"), 1.0)

    def do_conv():
        torch.manual_seed(SEED)
        mk = (lambda: sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike, reset_fn=MembraneReset()))
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), mk(),
                                  sl.SumPool2d(2), torch.nn.Flatten(),
                                  torch.nn.Linear(64, N_OUT, bias=False), mk())
        _scale_(net, 3.0)
        x = torch.as_tensor(X["conv_spikes"])                     # [T, 1, 8, 8] = B*T
        with torch.no_grad():
            h, sp = x, {}
            for i, m in enumerate(net):
                h = m(h)
                if isinstance(m, sinabs.layers.StatefulLayer):
                    sp[str(i)] = h.reshape(h.shape[0], -1).numpy().astype(np.uint8)
        g = sinabs.to_nir(net, torch.zeros(1, 1, 8, 8))
        rec.save("sinabs", "conv", g, {"spikes": (X["conv_spikes"], sp)},
                 dict(base, **iaf, net="Conv2d(bias=False) -> IAFSqueeze -> SumPool2d -> "
                      "Flatten -> Linear(bias=False) -> IAFSqueeze (the Speck style)"), 1.0)

    _attempt(rec, "sinabs", "mlp", do_mlp)
    _attempt(rec, "sinabs", "mlp_lif", do_mlp_lif)
    _attempt(rec, "sinabs", "conv", do_conv)
    rec.errors["sinabs_rnn"] = ("not attempted: sinabs.to_nir maps IAF/LIF/ExpLeak, Linear, "
                                "Conv1d/2d, SumPool2d, Flatten only (no recurrent layer)")


# ------------------------------------------------------------------------- SpikingJelly
def make_spikingjelly(rec, X):
    import torch
    from spikingjelly.activation_based import neuron, layer
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    base = dict(exporter="spikingjelly nir_exchange.export_to_nir(dt=1e-4 default): IF -> "
                         "IF(r=1/dt), LIF(tau) -> LIF(tau*dt, r=1 (decay_input), "
                         "v_leak=v_reset)",
                threshold_convention="inclusive (heaviside(v - v_th) with 1 at 0)")
    ifn = dict(neuron="spikingjelly IFNode(v_threshold=1, v_reset=0) single-step",
               equations="v = v + x; s = v >= v_th; v = v_reset where s")

    def call(i, m, h):
        return m(h)

    def mlp(kind=neuron.IFNode, scale=3.0, **kw):
        torch.manual_seed(SEED)
        net = torch.nn.Sequential(layer.Linear(N_IN, N_HID), kind(**kw),
                                  layer.Linear(N_HID, N_OUT), kind(**kw))
        _scale_(net, scale)
        return net

    def do_mlp(name, build, info):
        runs = {}
        for kind in ("spikes", "analog"):
            net = build()
            runs[kind] = (X[f"mlp_{kind}"], _run_seq(net, X[f"mlp_{kind}"], neuron.BaseNode, call))
        net = build()
        g = export_to_nir(net, torch.zeros(1, N_IN))
        rec.save("spikingjelly", name, g, runs, dict(base, **info), 1e-4)

    _attempt(rec, "spikingjelly", "mlp", lambda: do_mlp("mlp", mlp, ifn))
    _attempt(rec, "spikingjelly", "mlp_lif", lambda: do_mlp(
        "mlp_lif", lambda: mlp(neuron.LIFNode, scale=6.0, tau=2.0),
        dict(neuron="spikingjelly LIFNode(tau=2, decay_input=True, v_reset=0)",
             equations="v = v + (x - (v - v_reset))/tau; s = v >= v_th; v = v_reset where s")))

    def cnet():
        torch.manual_seed(SEED)
        net = torch.nn.Sequential(layer.Conv2d(1, 4, 3, padding=1), neuron.IFNode(),
                                  layer.AvgPool2d(2), layer.Flatten(),
                                  layer.Linear(64, N_OUT), neuron.IFNode())
        _scale_(net, 3.0)
        return net

    def do_conv():
        sp = _run_seq(cnet(), X["conv_spikes"], neuron.BaseNode, call)
        g = export_to_nir(cnet(), torch.zeros(1, 1, 8, 8))
        rec.save("spikingjelly", "conv", g, {"spikes": (X["conv_spikes"], sp)},
                 dict(base, **ifn), 1e-4)

    _attempt(rec, "spikingjelly", "conv", do_conv)
    rec.errors["spikingjelly_rnn"] = ("not attempted: nir_exchange.export_to_nir maps "
                                      "Linear, Conv1d/2d, AvgPool2d, Flatten, IF/LIF/PLIF/"
                                      "CUBALIF nodes only (no recurrent container)")


def make(only=None):
    import importlib.metadata as md
    import torch
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    X = fixed_inputs()
    rec = Recorder()
    makers = dict(snntorch=make_snntorch, norse=make_norse, sinabs=make_sinabs,
                  spikingjelly=make_spikingjelly)
    for fw, fn in makers.items():
        if only and fw not in only:
            continue
        print(fw)
        try:
            fn(rec, X)
        except Exception as e:                         # import failure etc.
            rec.fail(fw, "all", e)
    versions = {}
    for p in ("torch", "nir", "nirtorch", "snntorch", "norse", "sinabs", "spikingjelly",
              "neurobench", "numpy"):
        try:
            versions[p] = md.version(p)
        except md.PackageNotFoundError:
            versions[p] = None
    manifest = dict(
        issue=31, seed=SEED, python=sys.version.split()[0], versions=versions,
        inputs=dict(mlp_spikes="T=40 x 20, Bernoulli(0.3) 0/1 (numpy default_rng(31))",
                    mlp_analog="T=40 x 20, uniform [0, 1) (same rng, drawn next)",
                    conv_spikes="T=30 x 1x8x8, Bernoulli(0.3)"),
        weights="torch.manual_seed(31) before each net, torch's default init, every Linear/"
                "Conv weight and bias x 3 (x 12 Norse LIFCell MLP, x 30 Norse LIFBoxCell nets and sinabs LIF MLP, x 6 "
                "SpikingJelly LIF MLP: enough input to spike)",
        npz="input [T, *shape] float32; spikes.<NIR neuron node> [T, n] uint8 in NIR C-order; "
            "dt = the dt the exporter assumed (NaN: none)",
        files=rec.files, not_made=rec.errors)
    old = OUT / "manifest.json"
    if only and old.exists():              # keep the other frameworks' entries
        prev = json.loads(old.read_text())
        for key in ("files", "not_made"):
            for k, v in prev.get(key, {}).items():
                if k.split("_")[0] not in only:
                    manifest[key].setdefault(k, v)
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({sum(f.stat().st_size for f in OUT.iterdir()) / 1024:.0f} KiB)")


# =======================================================================================
# check mode (neurosim's interpreter)
# =======================================================================================
def _nodes_of(graph, prefix=""):
    import nir
    for name, node in list(graph.nodes.items()):
        if isinstance(node, nir.NIRGraph):
            yield from _nodes_of(node, prefix + name + ".")
        else:
            yield prefix + name, graph, name, node


def edit_squeeze_leading_ones(graph):
    """Drop leading size-1 dims of Input/Output shapes and of neuron parameters."""
    import nir
    for _, g, name, node in _nodes_of(graph):
        if isinstance(node, (nir.Input, nir.Output)):
            for tp in (node.input_type, node.output_type):
                for k, s in list(tp.items()):
                    s = np.asarray(s).ravel()
                    while s.size > 1 and s[0] == 1:
                        s = s[1:]
                    tp[k] = s
        else:
            for f in ("tau", "tau_mem", "tau_syn", "r", "w_in", "v_leak", "v_threshold", "v_reset"):
                v = getattr(node, f, None)
                if isinstance(v, np.ndarray) and v.ndim > 1 and v.shape[0] == 1:
                    setattr(node, f, v.reshape(v.shape[1:]))
    return graph


def _conv_out_shape(g, c):
    import nir
    hw = c.input_shape
    if hw is None or np.size(hw) < 2:
        hw = [v for v in g.nodes.values() if isinstance(v, nir.Input)][0].input_type["input"]
    H, W = (int(x) for x in np.ravel(hw)[-2:])
    k = np.shape(c.weight)[-1]
    p = int(np.ravel(c.padding)[0]) if not isinstance(c.padding, str) else (k - 1) // 2
    st = int(np.ravel(c.stride)[0])
    return (int(np.shape(c.weight)[0]), (H + 2 * p - k) // st + 1, (W + 2 * p - k) // st + 1)


def edit_broadcast_scalars(graph):
    """Neuron parameters of size 1 -> the node's shape: (n,) after an Affine / Linear,
    (C, H, W) after a Conv2d."""
    import nir
    shapes = {}
    for full, g, name, node in _nodes_of(graph):
        if isinstance(node, (nir.Affine, nir.Linear)):
            shp = (int(np.shape(node.weight)[0]),)
        elif isinstance(node, nir.Conv2d):
            shp = _conv_out_shape(g, node)
        else:
            continue
        for a, b in g.edges:
            if a == name:
                shapes[(id(g), b)] = shp
    for full, g, name, node in _nodes_of(graph):
        shp = shapes.get((id(g), name))
        if shp is None:
            continue
        for f in ("tau", "tau_mem", "tau_syn", "r", "w_in", "v_leak", "v_threshold", "v_reset"):
            v = getattr(node, f, None)
            if v is not None and np.size(v) == 1:
                setattr(node, f, np.full(shp, float(np.ravel(v)[0]), np.asarray(v).dtype))
    return graph


def edit_if_r_times_dt(dt):
    """SpikingJelly's IF r = 1/dt (continuous time) -> neurosim's per-step gain r*dt."""
    def edit(graph):
        import nir
        for _, g, name, node in _nodes_of(graph):
            if isinstance(node, nir.IF):
                node.r = np.asarray(node.r, np.float64) * dt
        return graph
    edit.__name__ = "if_r_times_dt"
    return edit


def edit_lif_gain_one_minus_alpha(dt):
    """sinabs' LIF with norm_input multiplies its input by 1 - exp(-dt/tau), NIR's exact
    impulse solution (neurosim's "exact") by dt/tau: r := tau/dt * (1 - exp(-dt/tau))."""
    def edit(graph):
        import nir
        for _, g, name, node in _nodes_of(graph):
            if isinstance(node, nir.LIF):
                tau = np.asarray(node.tau, np.float64)
                node.r = np.asarray(node.r, np.float64) * tau / dt * (-np.expm1(-dt / tau))
        return graph
    edit.__name__ = "lif_gain_one_minus_alpha"
    return edit


def edit_cuba_euler(dt):
    """Norse's CubaLIF is forward Euler (alpha = 1 - dt/tau, v += dt/tau_mem * i);
    neurosim's is exact (alpha = exp(-dt/tau'), v += p' i with NEST's propagator p').
    Choose tau' = -dt / ln(1 - dt/tau) (same decays) and scale w_in by (dt/tau_mem) / p'
    (same increment of v per unit current)."""
    def edit(graph):
        import nir
        for _, g, name, node in _nodes_of(graph):
            if isinstance(node, nir.CubaLIF):
                tm = np.asarray(node.tau_mem, np.float64)
                ts = np.asarray(node.tau_syn, np.float64)
                tm2 = -dt / np.log1p(-dt / tm)
                ts2 = -dt / np.log1p(-dt / ts)
                am, as_ = 1 - dt / tm, 1 - dt / ts
                p = ts2 / (ts2 - tm2) * (as_ - am)
                node.tau_mem, node.tau_syn = tm2, ts2
                node.w_in = np.asarray(node.w_in, np.float64) * (dt / tm) / p
        return graph
    edit.__name__ = "cuba_euler"
    return edit


def net_refractory_one(node):
    """After import: the population of ``node`` gets t_ref = 1 (snnTorch's RLeaky with
    reset_mechanism='zero' zeroes the whole next step, input included)."""
    def edit(net):
        import dataclasses
        p = net.populations[net.metadata["nir"]["populations"][node]]
        p.neuron = dataclasses.replace(p.neuron, t_ref=1)
        return net
    edit.__name__ = f"net_t_ref_1({node})"
    return edit


def net_subtract_over_leak(net):
    """After import: every LIF population resets by subtracting theta/leak (snnTorch's
    'subtract': mem = beta*mem + I - theta*spk[t-1], i.e. theta removed after the leak)."""
    import dataclasses
    for p in net.populations.values():
        if p.kind == "lif":
            n = p.neuron
            p.neuron = dataclasses.replace(n, reset="subtract", subtract=n.v_th / n.leak)
    return net


def _pool_matrix(kind, shape, k, s):
    C, H, W = shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    M = np.zeros((C * Ho * Wo, C * H * W))
    val = 1.0 / (k * k) if kind == "AvgPool2d" else 1.0
    for c in range(C):
        for i in range(Ho):
            for j in range(Wo):
                for di in range(k):
                    for dj in range(k):
                        M[(c * Ho + i) * Wo + j, (c * H + i * s + di) * W + j * s + dj] = val
    return M, (C, Ho, Wo)


def _pool_input_shape(g, name, node):
    """(C, H, W) into a pool: its input type if written, else from the conv two nodes up
    (conv -> neuron -> pool) and the conv's input_shape (or the graph input's H, W)."""
    import nir
    shp = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    if shp is not None and np.size(shp) >= 3:
        return tuple(int(x) for x in np.ravel(shp)[-3:])
    prev = [a for a, b in g.edges if b == name]
    conv = [a for p in prev for a, b in g.edges if b == p and isinstance(g.nodes[a], nir.Conv2d)]
    if not conv:
        raise ValueError(f"edit: cannot find the (C, H, W) into pool {name!r}")
    return _conv_out_shape(g, g.nodes[conv[0]])


def edit_compose_pool_linear(graph):
    """Pool -> Flatten -> Linear/Affine => one Affine (the pool's fixed weights composed
    into the dense matrix, in float64 then the weight's dtype)."""
    import nir
    g = graph
    for name, node in list(g.nodes.items()):
        if type(node).__name__ not in ("AvgPool2d", "SumPool2d"):
            continue
        nxt = [b for a, b in g.edges if a == name]
        if len(nxt) != 1 or type(g.nodes[nxt[0]]).__name__ != "Flatten":
            continue
        fl = nxt[0]
        nxt2 = [b for a, b in g.edges if a == fl]
        if len(nxt2) != 1 or type(g.nodes[nxt2[0]]).__name__ not in ("Linear", "Affine"):
            continue
        lin = g.nodes[nxt2[0]]
        shp = _pool_input_shape(g, name, node)
        k = int(np.ravel(node.kernel_size)[0])
        s = int(np.ravel(node.stride)[0])
        P, _ = _pool_matrix(type(node).__name__, shp, k, s)
        w = np.asarray(lin.weight, np.float64) @ P
        wdt = np.asarray(lin.weight).dtype
        b = getattr(lin, "bias", None)
        new = nir.Affine(weight=w.astype(wdt), bias=(np.zeros(w.shape[0], wdt) if b is None
                                                     else np.asarray(b)))
        prev = [a for a, b2 in g.edges if b2 == name]
        after = [b2 for a, b2 in g.edges if a == nxt2[0]]
        for x in (name, fl, nxt2[0]):
            del g.nodes[x]
        cname = f"{name}+{nxt2[0]}"
        g.nodes[cname] = new
        g.edges = [e for e in g.edges if name not in e and fl not in e and nxt2[0] not in e]
        g.edges += [(p, cname) for p in prev] + [(cname, a) for a in after]
    return graph


def _load_graph(path, edits):
    import nir
    g = nir.read(path, type_check=False)
    for e in edits:
        g = e(g)
    return g


def _chw_flat(net, pop, s):
    """neurosim spikes [T, n] (channel-last for C,H,W) -> NIR C-order."""
    from neurosim.io.nir import _order
    shape = net.populations[pop].shape
    ns2chw, _ = _order(shape)
    out = np.zeros_like(s)
    out[:, ns2chw] = s
    return out


def check_one(entry, options, edits=()):
    """Import, simulate, compare.  Returns a dict: loaded / error / per-node counts /
    exact / first mismatch.  ``edits``: graph edits, then (names starting with ``net_``)
    edits of the imported network."""
    from neurosim.io.nir import from_nir
    from neurosim.engine import run_forward
    res = dict(options={k: v for k, v in options.items()}, edits=[e.__name__ for e in edits])
    z = np.load(OUT / entry["npz"])
    gedits = [e for e in edits if not e.__name__.startswith("net_")]
    nedits = [e for e in edits if e.__name__.startswith("net_")]
    try:
        g = _load_graph(OUT / entry["nir"], gedits)
        net = from_nir(g, **options)
        for e in nedits:
            net = e(net)
    except Exception as e:
        res["error"] = f"{type(e).__name__}: {e}"
        return res
    inp = z["input"]
    T = inp.shape[0]
    pops = net.metadata["nir"]["populations"]
    srcs = [p for p in net.populations.values() if p.kind in ("source", "input")]
    if len(srcs) != 1:
        res["error"] = f"expected one input population, got {[p.name for p in srcs]}"
        return res
    src = srcs[0]
    x = inp.reshape(T, -1)
    if len(src.shape) == 3:           # C-order -> neurosim order
        from neurosim.io.nir import _order
        _, chw2ns = _order(src.shape)
        xx = np.zeros_like(x)
        xx[:, chw2ns] = x
        x = xx
    try:
        if src.kind == "source":
            if not np.all((x == 0) | (x == 1)):
                res["error"] = "analog input into a spike source (use input_kind='analog')"
                return res
            fwd = run_forward(net, T, spikes={src.name: x[None].astype(np.uint8)}, record=True)
        else:
            fwd = run_forward(net, T, inputs={src.name: x[None]}, record=True)
    except Exception as e:
        res["error"] = f"simulate: {type(e).__name__}: {e}"
        return res
    res["layers"], exact = {}, True
    for key in z.files:
        if not key.startswith("spikes."):
            continue
        node = key[len("spikes."):]
        want = z[key].reshape(T, -1).astype(np.int64)
        pop = pops.get(node)
        if pop is None:
            res["layers"][node] = dict(want=int(want.sum()), got=None, note="no population")
            exact = False
            continue
        got = _chw_flat(net, pop, fwd.spikes[pop][0].astype(np.int64))
        diff = np.argwhere(got != want)
        d = dict(want=int(want.sum()), got=int(got.sum()), differ=int(len(diff)))
        if len(diff):
            d["first"] = dict(step=int(diff[0][0]), neuron=int(diff[0][1]),
                              want=int(want[tuple(diff[0])]), got=int(got[tuple(diff[0])]))
            exact = False
        res["layers"][node] = d
    res["exact"] = exact
    return res


def _options_for(entry):
    """The import options tried: the full grid at the dt the exporter assumed (and, for
    Norse, at dt**2, which undoes its tau = dt/tau_inv), plus neurosim's defaults."""
    kind = entry["input_kind"]
    out = [dict(input_kind=kind)]                               # neurosim's defaults
    dts = [entry["dt_assumed"]] if entry["dt_assumed"] is not None else []
    if entry["framework"] == "norse":
        dts.append(entry["dt_assumed"] ** 2)
    for dt in dts:
        for li in ("exact", "euler"):
            for th in ("strict", "inclusive"):
                out.append(dict(dt=dt, leak_integration=li, threshold=th, input_kind=kind))
    return out


def check(json_out=None, only=None, verbose=False):
    manifest = json.loads((OUT / "manifest.json").read_text())
    table = {}
    for name, entry in sorted(manifest["files"].items()):
        if only and not any(o in name for o in only):
            continue
        dt = entry["dt_assumed"] or 1.0
        edit_sets = [(), (edit_squeeze_leading_ones,),
                     (edit_squeeze_leading_ones, edit_broadcast_scalars)]
        if entry["net"] == "conv":
            edit_sets += [(edit_compose_pool_linear,),
                          (edit_squeeze_leading_ones, edit_broadcast_scalars,
                           edit_compose_pool_linear)]
        sq = (edit_squeeze_leading_ones, edit_broadcast_scalars)
        if entry["framework"] == "sinabs" and "lif" in entry["net"]:
            edit_sets += [sq + (edit_lif_gain_one_minus_alpha(dt),)]
        if entry["framework"] == "norse" and entry["net"] in ("mlp", "mlp_nobias"):
            edit_sets += [sq + (edit_cuba_euler(entry["dt_assumed"] ** 2),)]
        if entry["net"] == "rnn":
            edit_sets += [sq + (net_refractory_one("1.lif"),)]
        if entry["net"] == "mlp_subtract":
            edit_sets += [sq + (net_subtract_over_leak,)]
        if entry["framework"] == "spikingjelly" and "lif" not in entry["net"]:
            edit_sets += [(edit_if_r_times_dt(dt),)]
            if entry["net"] == "conv":
                edit_sets += [(edit_if_r_times_dt(dt), edit_compose_pool_linear)]
        rows = []
        for edits in edit_sets:
            for opt in _options_for(entry):
                rows.append(check_one(entry, opt, edits))
        table[name] = rows
        best = [r for r in rows if r.get("exact")]
        print(f"{name}: {len(best)} of {len(rows)} option/edit sets exact")
        for r in (rows if verbose else best[:3]):
            lay = r.get("layers") or {}
            print("   ", r["edits"], r["options"], r.get("error") or
                  {k: (v["want"], v["got"], v.get("first")) for k, v in lay.items()})
        if not best:
            # the closest: fewest differing spikes among those that ran
            ran = [r for r in rows if "layers" in r]
            if ran:
                r = min(ran, key=lambda r: sum(v.get("differ", 10**9) for v in r["layers"].values()))
                print("    closest:", r["edits"], r["options"],
                      {k: (v["want"], v["got"], v.get("differ"), v.get("first"))
                       for k, v in r["layers"].items()})
            errs = sorted({r["error"] for r in rows if "error" in r})
            for e in errs:
                print("    refused:", e)
    if json_out:
        Path(json_out).write_text(json.dumps(table, indent=1, default=str) + "\n")
    print(summary(table))
    return table


def summary(table):
    """Markdown rows from a --check table: neurosim's defaults, the fewest edits that
    reproduce the recording exactly (and which options do), else the closest."""
    def fmt(r):
        if "error" in r:
            return "refused: `" + r["error"].split(" (dt=")[0][:160] + "`"
        return ("exact " if r["exact"] else "differ ") + ", ".join(
            f"{k}: {v['want']}/{v['got']}" + (
                f" ({v['differ']} differ, first t={v['first']['step']} n={v['first']['neuron']})"
                if v.get("first") else "") for k, v in r["layers"].items())
    out = ["| file | neurosim defaults (dt=1e-3, exact, strict) | exact with (edits; options) |",
           "|---|---|---|"]
    for name, rows in sorted(table.items()):
        default = next(r for r in rows if r["edits"] == [] and set(r["options"]) == {"input_kind"})
        exact = [r for r in rows if r.get("exact")]
        if exact:
            n = min(len(r["edits"]) for r in exact)
            best = [r for r in exact if len(r["edits"]) == n]
            eds = best[0]["edits"]
            opts = sorted({"default" if set(r["options"]) == {"input_kind"} else
                           f"dt={r['options']['dt']:g} {r['options']['leak_integration']} "
                           f"{r['options']['threshold']}" for r in best if r["edits"] == eds})
            cell = f"{' + '.join(e.replace('edit_', '') for e in eds) or 'no edit'}; " + "; ".join(opts)
        else:
            ran = [r for r in rows if "layers" in r]
            cell = "**none**"
            if ran:
                r = min(ran, key=lambda r: sum(v.get("differ", 0) for v in r["layers"].values()))
                cell += (f"; closest: {' + '.join(e.replace('edit_', '') for e in r['edits'])}; "
                         f"{r['options']}: {fmt(r)}")
        out.append(f"| {name} | {fmt(default)} | {cell} |")
    return "\n".join(out)


#: the import that reproduces each snnTorch net exactly (from --check): edits, options.
NB_IMPORTS = {
    "snntorch_mlp": ((edit_squeeze_leading_ones, edit_broadcast_scalars), {}),
    "snntorch_conv": ((edit_squeeze_leading_ones, edit_broadcast_scalars,
                       edit_compose_pool_linear), {}),
    "snntorch_rnn": ((edit_squeeze_leading_ones, edit_broadcast_scalars,
                      net_refractory_one("1.lif")), {}),
}


def check_neurobench():
    """``neurosim ops --neurobench`` (the library behind it) on the exact imports of the
    snnTorch nets, next to the real NeuroBench numbers in the manifest."""
    import tempfile
    from neurosim.io.nir import from_nir
    from neurosim.simulate import simulate
    from neurosim import ops as O
    manifest = json.loads((OUT / "manifest.json").read_text())
    rows = {}
    for name, (edits, extra) in NB_IMPORTS.items():
        entry = manifest["files"][name]
        nb = entry.get("neurobench")
        gedits = [e for e in edits if not e.__name__.startswith("net_")]
        net = from_nir(_load_graph(OUT / entry["nir"], gedits), dt=1e-4,
                       leak_integration="euler", **extra)
        for e in edits:
            if e.__name__.startswith("net_"):
                net = e(net)
        x = np.load(OUT / entry["npz"])["input"]
        src = [p for p in net.populations.values() if p.kind == "source"][0]
        T = x.shape[0]
        with tempfile.TemporaryDirectory() as d:
            simulate(net, {src.name: x.reshape(1, T, -1).astype(np.uint8)}, T,
                     out=Path(d) / "run.h5")
            # record: composed pool -> Linear layers are counted from the spike trains
            m = O.neurobench_metrics(O.load_run_data(Path(d) / "run.h5", record=True))
        ours = dict(m["static"], **m["workload"])
        ours.update({f"SynapticOperations.{k}": v for k, v in m["totals"].items()})
        theirs = {k: v for k, v in nb.items() if not isinstance(v, dict)}
        theirs.update({f"SynapticOperations.{k}": v for k, v in nb["SynapticOperations"].items()})
        rows[name] = {k: dict(neurobench=theirs.get(k), neurosim=ours.get(k))
                      for k in sorted(set(theirs) | set(ours))}
        print(name)
        for k, v in rows[name].items():
            if v["neurobench"] is None:
                continue
            same = "==" if v["neurosim"] is not None and abs(float(v["neurosim"]) - float(v["neurobench"])) < 1e-9 else "!="
            print(f"    {k:34s} neurobench {v['neurobench']!s:>20}  {same}  neurosim {v['neurosim']}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="compare neurosim's import of every golden file with the recording")
    ap.add_argument("--only", nargs="*", help="frameworks (make) / name parts (check)")
    ap.add_argument("--json", help="--check: write the whole result table here")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--neurobench", action="store_true",
                    help="neurosim's NeuroBench metrics on the exact imports of the snnTorch "
                         "nets next to the recorded NeuroBench numbers")
    a = ap.parse_args(argv)
    if a.neurobench:
        check_neurobench()
    elif a.check:
        check(a.json, a.only, a.verbose)
    else:
        make(a.only)


if __name__ == "__main__":
    main()
