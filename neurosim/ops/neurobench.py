"""NeuroBench-compatible metrics of a run, from neurosim's exact event counts.

:func:`neurobench_metrics` gives the NeuroBench 2.x metric names (``Footprint``,
``ParameterCount``, ``ConnectionSparsity``, ``ActivationSparsity``, ``MembraneUpdates``,
``SynapticOperations`` with ``Effective_MACs``, ``Effective_ACs`` and ``Dense``) for
the forward phase of a run, computed the way the ``neurobench`` package computes them
(``neurobench.metrics``: hooks on every ``torch.nn.Linear`` / ``Conv1d/2d/3d`` layer and
on every spiking-neuron layer, one call per time step) but from the counts the engine
keeps, with nothing re-simulated.  :func:`format_neurobench` renders it (``neurosim ops
--neurobench``).  ``docs/ops-energy.md``, "NeuroBench-compatible metrics", defines each
number and lists where neurosim and NeuroBench differ.

How a NeuroBench counting pass maps onto a neurosim network:

* NeuroBench's *connection layers* (Linear, Conv) are the ``dense``, ``sparse`` and
  ``conv2d`` projections (:data:`CONNECTION_KINDS`).  Pooling and transposed
  convolutions are not connection layers in NeuroBench (``nn.AvgPool2d`` and
  ``nn.ConvTranspose2d`` are not hooked): their rows are listed with ``counted: False``
  and are left out of the totals.
* A connection layer is called once per step on its input.  Input that is entirely
  in {-1, 0, 1} (NeuroBench's test, per call) is *spiking*: its operations are ACs,
  otherwise MACs.  Spikes of spiking populations and of spike sources are spiking; an
  ``input`` population's analog values are tested frame by frame.
* ``Effective`` = Σ over steps of the layer applied to the binarised input with its
  weights binarised (nonzero -> 1, zero stays 0), bias suppressed: nonzero inputs ×
  nonzero-weight fan-out.  ``Dense`` = the same with input and weights set to ones
  (zero padding stays zero): every input × full fan-out, every step.
* A dense projection that the NIR import composed from a framework's pool -> Flatten ->
  Linear/Affine (``net.metadata["composed_layers"]``, decision 61) is counted as the
  framework's layers are: the pool is no connection layer, the Linear receives the pooled
  values (a MAC call unless every pooled value of the step is in {-1, 0, 1}), its
  nonzero fan-out and parameters are those of the ``n_pooled × n_out`` Linear (read off
  the composed matrix: with non-overlapping windows each row is a Linear row over k²),
  and its bias is counted whatever its values.  This needs the pre population's spike
  trains (:func:`needs_spike_trains`).  neurosim's own counts (``"neurosim"``, the ops
  table) stay those of the composed matrix, what event-driven hardware performs.
"""
from pathlib import Path

import numpy as np

from ..connectivity import flat_to_chw
from ..local_rule import flat_input
from .table import OpsError, table_from_phases

#: projection kinds that are NeuroBench connection layers (torch.nn.Linear / Conv2d).
CONNECTION_KINDS = ("dense", "sparse", "conv2d")

#: NeuroBench name -> (NeuroBench's definition, how neurosim computes it).
DEFINITIONS = {
    "Footprint": (
        "bytes of the model's parameters and buffers (numel x element size)",
        "bytes of every projection's learnable arrays (weight, bias) in the network's "
        "compute dtype; pooling has none; a sparse projection holds its nnz weights"),
    "ParameterCount": (
        "number of parameter elements",
        "elements of every projection's learnable arrays (weight, bias)"),
    "ConnectionSparsity": (
        "zero weights / all weights of the Linear and Conv layers (biases excluded; "
        "NeuroBench rounds to 4 decimals)",
        "over the dense, sparse and conv2d projections; a sparse projection counts as its "
        "n_pre x n_post matrix (absent entries are zeros); unrounded"),
    "ActivationSparsity": (
        "1 - nonzero outputs / all outputs of the spiking-neuron layers, over all steps "
        "and samples",
        "1 - spikes / (neurons x steps x samples), over the spiking populations (not "
        "spike sources or inputs); at most one spike per neuron and step"),
    "MembraneUpdates": (
        "per sample: every neuron at the first step plus, at each later step, the "
        "neurons whose membrane potential changed",
        "not computable from the stored counts (needs the membrane trace); neurosim's "
        "event-driven neuron_updates and the clock-driven neurons x steps (an upper bound) "
        "are given instead"),
    "Effective_MACs": (
        "per sample: connection layers on non-binary input, nonzero inputs x nonzero "
        "weights (binarised layer on binarised input), every call (step)",
        "input maps on analog frames: nonzero inputs x nonzero-weight fan-out, per step "
        "(a constant input counts T times)"),
    "Effective_ACs": (
        "per sample: connection layers on binary (spike) input, nonzero inputs x nonzero "
        "weights, every call (step)",
        "delivered events x nonzero-weight fan-out (Σ_j sent[j] · nonzero_out_degree[j])"),
    "Dense": (
        "per sample: every input x every weight of the connection layers, every call "
        "(input and weights set to ones; zero padding stays zero)",
        "Σ over connection projections of the full fan-out summed over pre neurons "
        "(dense/sparse n_pre·n_post, conv the synapses inside the padded bounds) x steps"),
}

#: where the numbers differ from a NeuroBench run of a PyTorch port (text output).
NOTES = (
    "Counts are per sample of the run (mean over its samples), forward phase only.",
    "Delay-d projections: a spike emitted in the last d steps is never delivered and "
    "never counted (as a port applying the layer to the spikes of step t-d would); Dense "
    "counts all T calls.",
    "Input maps on a constant input: neurosim encodes once per sample (the ops table's "
    "input_encoding row); NeuroBench counts the layer at every step (T times).",
    "Pooling and transposed convolutions are not NeuroBench connection layers: listed, "
    "not in the totals.",
    "The backward phase and the weight update have no NeuroBench counterpart; they are "
    "reported separately.",
)


def _binary(a):
    a = np.asarray(a)
    return bool(np.all((a == 0) | (a == 1) | (a == -1)))


def _full_fanout_sum(pr):
    """Σ_j full fan-out: what one call on all-ones input with all-ones weights sums to."""
    if pr.kind in ("dense", "sparse"):
        return int(pr.n_pre) * int(pr.n_post)
    return int(pr.out_degree().sum())


def _weight_stats(pr, dtype):
    """(weights, zero weights) of a connection projection's weight matrix."""
    nz = int(np.count_nonzero(np.asarray(pr.weight).astype(dtype) != 0))
    n = int(pr.n_pre) * int(pr.n_post) if pr.kind == "sparse" else int(np.size(pr.weight))
    return n, n - nz


def composed_layers(net):
    """{projection: provenance} of the dense projections composed from a framework's pool
    -> Flatten -> Linear (NIR import) that are counted as those layers (non-overlapping
    pool windows; others are counted as the composed matrix)."""
    out = {}
    for name, d in ((getattr(net, "metadata", None) or {}).get("composed_layers") or {}).items():
        pr = net.projections.get(name)
        if pr is not None and pr.kind == "dense" and int(d["stride"]) >= int(d["kernel"]) \
                and net.populations[pr.pre].spiking \
                and tuple(d["pool_shape"]) == tuple(net.populations[pr.pre].shape):
            out[name] = d
    return out


def needs_spike_trains(data):
    """True when :func:`neurobench_metrics` needs spike trains that ``data`` (a RunData)
    lacks: the pre populations of composed layers (load it with ``record=True``)."""
    spikes = data.forward.spikes or {}
    return any(data.network.projections[n].pre not in spikes
               for n in composed_layers(data.network))


def _composed_layer(net, fwd, name, pr, d):
    """NeuroBench counts of the framework's Linear behind a composed projection: per step,
    nonzero pooled values x the Linear's nonzero fan-out; (macs, acs, op, dense,
    parameters, weights, zero weights)."""
    T, B = fwd.steps, fwd.batch
    if fwd.spikes is None or pr.pre not in fwd.spikes:
        raise OpsError(f"projection {name!r} (composed {' -> '.join(d['nodes'])}): NeuroBench "
                       f"counts need the spike trains of {pr.pre!r}; load the run with "
                       "record=True (the CLI does)")
    C, H, W = d["pool_shape"]
    k, s = int(d["kernel"]), int(d["stride"])
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    x = flat_to_chw(np.asarray(fwd.spikes[pr.pre], np.int64), (C, H, W))    # [B, T, C, H, W]
    sums = np.zeros((B, T, C, Ho, Wo), np.int64)
    for dy in range(k):
        for dx in range(k):
            sums += x[..., dy:dy + s * (Ho - 1) + 1:s, dx:dx + s * (Wo - 1) + 1:s]
    # a row of the composed matrix (one neuron of window (c, i, j)) is the Linear's row of
    # pooled value (c, i, j), times 1/k² for an average: its nonzero fan-out is the Linear's
    nzd_ns = np.count_nonzero(np.asarray(pr.weight).astype(net.dtype) != 0, axis=1)
    nzd = flat_to_chw(nzd_ns.astype(np.int64)[None], (C, H, W))[0]
    nzd = nzd[:, :s * (Ho - 1) + 1:s, :s * (Wo - 1) + 1:s]          # the windows' first rows
    binary_max = k * k if d["pool"] == "avgpool2d" else 1
    macs = acs = 0
    kinds = set()
    for t in range(T):                     # one NeuroBench call of the Linear per step
        st = sums[:, t]
        ops = int(((st != 0) * nzd[None]).sum())
        if d["pool"] == "avgpool2d":
            binary = bool(np.all((st == 0) | (st == binary_max)))
        else:
            binary = bool(np.all(st <= 1))
        if binary:
            acs += ops
            kinds.add("AC")
        else:
            macs += ops
            kinds.add("MAC")
    n_out = int(pr.n_post)
    n_w = C * Ho * Wo * n_out
    zero = n_w - int(nzd.sum())
    return (macs, acs, "+".join(sorted(kinds, reverse=True)) or "AC", n_w * T * B,
            n_w + int(d["bias"]), n_w, zero)


def _layer(net, fwd, inputs, name, pr, composed=None):
    """One projection's NeuroBench counts summed over the batch (ints)."""
    T, B = fwd.steps, fwd.batch
    pre = net.populations[pr.pre]
    nzd = pr.nonzero_out_degree(net.dtype)
    macs = acs = 0
    if pre.kind == "input":
        if pr.pre not in inputs or inputs[pr.pre] is None:
            raise OpsError(f"projection {name!r}: NeuroBench counts need the analog values of "
                           f"input population {pr.pre!r}, which this run does not carry")
        x = flat_input(inputs[pr.pre], pre)
        frames = [x] * T if x.ndim == 2 else [x[:, t] for t in range(x.shape[1])]
        kinds = set()
        for f in frames:                      # one NeuroBench call per step
            ops = int(((f != 0).astype(np.int64) @ nzd).sum())
            if _binary(f):
                acs += ops
                kinds.add("AC")
            else:
                macs += ops
                kinds.add("MAC")
        op = "+".join(sorted(kinds, reverse=True))
    else:
        acs = int(fwd.sent[name].sum(0) @ nzd)
        op = "AC"
    if composed is not None:
        macs, acs, op, dense, n_par, n_w, n_zero = _composed_layer(net, fwd, name, pr, composed)
        return dict(layer=name, kind=pr.kind, pre=pr.pre, post=pr.post, delay=int(pr.delay),
                    op=op, counted=True, Effective_MACs=macs, Effective_ACs=acs, Dense=dense,
                    parameters=n_par, weights=n_w, zero_weights=n_zero,
                    composed=" -> ".join(composed["nodes"]))
    d = dict(layer=name, kind=pr.kind, pre=pr.pre, post=pr.post, delay=int(pr.delay), op=op,
             counted=pr.kind in CONNECTION_KINDS, Effective_MACs=macs, Effective_ACs=acs,
             Dense=_full_fanout_sum(pr) * T * B)
    arrays = pr.weight_arrays()
    d["parameters"] = int(sum(np.size(a) for a in arrays.values()))
    if d["counted"]:
        d["weights"], d["zero_weights"] = _weight_stats(pr, net.dtype)
    else:
        d["weights"] = d["zero_weights"] = None
    return d


def neurobench_metrics(data):
    """NeuroBench 2.x metrics of a run (see the module docstring).

    Parameters
    ----------
    data : RunData or path
        :func:`neurosim.ops.load_run_data` of a run file (simulate or training), or the
        path of one (loaded with the defaults).

    Returns
    -------
    dict
        ``{"static": {"Footprint", "ParameterCount", "ConnectionSparsity"},
        "workload": {"ActivationSparsity", "MembraneUpdates", "SynapticOperations":
        {"Effective_MACs", "Effective_ACs", "Dense"}}`` (per sample, NeuroBench's names),
        ``"totals"`` (integer sums over the samples behind every number), ``"layers"``
        (one dict per projection, ``counted`` False where NeuroBench does not hook the
        layer), ``"neurosim"`` (its own counts per sample: forward synaptic events on
        every synapse, input-encoding MACs as performed, neuron updates, and the backward
        phase and weight update, which have no NeuroBench counterpart), ``"source"``,
        ``"samples"``, ``"steps"``, ``"definitions"`` and ``"notes"``.
    """
    from .runfile import RunData, load_run_data
    if isinstance(data, (str, Path)):
        data = load_run_data(data)
    if not isinstance(data, RunData):
        raise TypeError(f"neurobench_metrics needs a RunData (neurosim.ops.load_run_data) or "
                        f"a run file path, got {type(data).__name__}")
    net, fwd = data.network, data.forward
    T, B = int(fwd.steps), int(fwd.batch)
    inputs = dict(data.inputs or {})
    comp = composed_layers(net)
    layers = [_layer(net, fwd, inputs, name, pr, comp.get(name))
              for name, pr in net.projections.items()]
    counted = [d for d in layers if d["counted"]]
    itemsize = np.dtype(net.dtype).itemsize
    n_params = sum(d["parameters"] for d in layers)
    n_w = sum(d["weights"] for d in counted)
    n_zero = sum(d["zero_weights"] for d in counted)
    spiking = [p for p in net.spiking_populations if p.name in fwd.counts]
    n_act = sum(p.n for p in spiking) * T * B
    n_spk = int(sum(np.sum(fwd.counts[p.name], dtype=np.int64) for p in spiking))
    upd = int(sum(np.sum(fwd.neuron_updates[p.name]) for p in spiking))
    totals = dict(Effective_MACs=sum(d["Effective_MACs"] for d in counted),
                  Effective_ACs=sum(d["Effective_ACs"] for d in counted),
                  Dense=sum(d["Dense"] for d in counted),
                  weights=n_w, zero_weights=n_zero, parameters=n_params,
                  activations=n_act, nonzero_activations=n_spk,
                  neuron_updates=upd, dense_neuron_updates=n_act)
    conn = None if n_w == 0 else n_zero / n_w
    static = dict(Footprint=n_params * itemsize, ParameterCount=n_params,
                  ConnectionSparsity=conn,
                  ConnectionSparsity_rounded=None if conn is None else round(conn, 4))
    workload = dict(
        ActivationSparsity=None if n_act == 0 else (n_act - n_spk) / n_act,
        MembraneUpdates=None,
        SynapticOperations={k: totals[k] / B for k in ("Effective_MACs", "Effective_ACs",
                                                       "Dense")})
    tab = table_from_phases(fwd, data.backward, inputs=inputs, update=False)
    ph = tab.phase_totals()
    own = dict(
        forward_synaptic_operations=(ph.get("forward") or {}).get("synaptic_operations"),
        forward_synaptic_operations_nonzero=(ph.get("forward") or {}).get(
            "synaptic_operations_nonzero"),
        input_encoding_macs=(ph.get("input_encoding") or {}).get("synaptic_operations"),
        neuron_updates=upd / B, dense_neuron_updates=n_act / B,
        not_in_neurobench=None)
    if data.backward is not None:
        wu = None
        if data.update_ops is not None:
            wu = sum(int(np.sum(v)) for v in data.update_ops.values()) / B
        own["not_in_neurobench"] = dict(
            backward_synaptic_operations=ph["backward"]["synaptic_operations"],
            backward_neuron_updates=ph["backward"]["neuron_updates"],
            weight_update_macs=wu)
    return dict(format="neurosim-neurobench/1", source=dict(data.source), samples=B, steps=T,
                network=net.name, static=static, workload=workload, totals=totals,
                layers=layers, neurosim=own,
                definitions={k: dict(neurobench=a, neurosim=b)
                             for k, (a, b) in DEFINITIONS.items()},
                notes=list(NOTES))


def _num(v):
    if v is None:
        return "-"
    if isinstance(v, float) and not float(v).is_integer():
        return f"{v:.6g}"
    return f"{int(v):,}"


def format_neurobench(d):
    """The text ``neurosim ops --neurobench`` prints for :func:`neurobench_metrics`' dict."""
    s, w = d["static"], d["workload"]
    src = d["source"]
    lines = [f"NeuroBench-compatible metrics (NeuroBench 2.x names) of {src.get('file', '?')}",
             f"  {src.get('kind', '?')} run; basis: {src.get('basis', '?')}",
             f"  {d['samples']} sample(s), T = {d['steps']} forward steps; per sample",
             ""]
    so = w["SynapticOperations"]
    cs = s["ConnectionSparsity"]
    rows = [("Footprint", _num(s["Footprint"]) + " B"),
            ("ParameterCount", _num(s["ParameterCount"])),
            ("ConnectionSparsity", "-" if cs is None else
             f"{cs:.6g} (NeuroBench's rounding: {s['ConnectionSparsity_rounded']})"),
            ("ActivationSparsity", _num(w["ActivationSparsity"])),
            ("MembraneUpdates", "not computable from the counts; neurosim neuron_updates "
             f"{_num(d['neurosim']['neuron_updates'])}, clock-driven upper bound "
             f"{_num(d['neurosim']['dense_neuron_updates'])}"),
            ("SynapticOperations.Effective_MACs", _num(so["Effective_MACs"])),
            ("SynapticOperations.Effective_ACs", _num(so["Effective_ACs"])),
            ("SynapticOperations.Dense", _num(so["Dense"]))]
    width = max(len(r[0]) for r in rows)
    for name, val in rows:
        lines.append(f"  {name:<{width}}  {val}")
    lines += ["", "Definitions (NeuroBench | neurosim):"]
    for name, dd in d["definitions"].items():
        lines.append(f"  {name}: {dd['neurobench']}")
        lines.append(f"  {'':<{len(name)}}  neurosim: {dd['neurosim']}")
    lines += ["", "Per layer (totals over the samples):",
              f"  {'layer':<14} {'kind':<17} {'op':<6} {'counted':<8} {'Eff_MACs':>12} "
              f"{'Eff_ACs':>12} {'Dense':>14} {'zero/weights':>16}"]
    for r in d["layers"]:
        zw = "-" if r["weights"] is None else f"{r['zero_weights']}/{r['weights']}"
        lines.append(f"  {r['layer']:<14} {r['kind']:<17} {r['op']:<6} "
                     f"{'yes' if r['counted'] else 'no':<8} {r['Effective_MACs']:>12,} "
                     f"{r['Effective_ACs']:>12,} {r['Dense']:>14,} {zw:>16}")
    own = d["neurosim"]
    lines += ["", "neurosim's own counts (per sample):",
              f"  forward synaptic events (every synapse): "
              f"{_num(own['forward_synaptic_operations'])}",
              f"  input-encoding MACs as performed: {_num(own['input_encoding_macs'])}"]
    nb = own["not_in_neurobench"]
    if nb is not None:
        lines += ["  no NeuroBench counterpart:",
                  f"    backward synaptic events: {_num(nb['backward_synaptic_operations'])}",
                  f"    backward neuron updates: {_num(nb['backward_neuron_updates'])}",
                  f"    weight-update MACs: {_num(nb['weight_update_macs'])}"]
    lines += ["", "Notes:"] + [f"  - {n}" for n in d["notes"]]
    return "\n".join(lines)

