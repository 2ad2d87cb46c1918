"""The operation table: exact counts per layer and phase, per sample and in total.

:func:`phase_sums` turns the results of one forward (and backward) phase into integer
sums over the batch, keyed by layer and phase; :class:`OpsTable` holds such sums with
the number of samples they cover and renders them (text, JSON, CSV).  Every count
derives from the per-sender event counts the engine keeps (:mod:`neurosim.counting`);
nothing is estimated here.  ``docs/ops-energy.md`` defines every column.

Phases of a projection (one row each):

``input_encoding``
    multiply-accumulates of an input map (an ``input`` population's analog values times
    the map's weights): nonzero inputs × fan-out, once per input frame.
``forward``
    synaptic events of the forward phase (accumulates, "ACs").
``backward``, ``backward_pos``, ``backward_neg``
    synaptic events of the backward phase through the transposed projection: both
    signs, +1 events, -1 events.
``weight_update``
    multiply-accumulates of SPIDE's local update (pre rate × post error, counted where
    both factors are nonzero; bias terms included), as
    :func:`neurosim.local_rule.projection_grads` performs them.

Populations have a ``forward`` and a ``backward`` row: neuron updates the engine did,
the updates a clock-driven simulator would do (neurons × steps), spikes (backward: +1
and -1 events), ``firing_rate`` (spikes per neuron per step) and ``activation_sparsity``
(1 - firing_rate, the fraction of zero activations).
"""
import csv
import io
import json

import numpy as np

from .. import _validate as V
from .. import counting
from ..counting import OP_KIND
from ..io.runfile import json_default
from .. import local_rule as rule
from ..local_rule import flat_input
from .report import format_table

#: projection phases, in table order.
PROJECTION_PHASES = ("input_encoding", "forward", "backward", "backward_pos", "backward_neg",
                     "weight_update")
#: population phases.
POPULATION_PHASES = ("forward", "backward")
#: projection metrics (integers summed over samples; None where undefined).
PROJECTION_METRICS = ("synaptic_operations", "synaptic_operations_nonzero", "dense_macs")
#: population metrics.
POPULATION_METRICS = ("neuron_updates", "dense_neuron_updates", "spikes", "spikes_pos",
                      "spikes_neg")


class OpsError(V.NeurosimError):
    """Operation accounting cannot be done on this input."""


# ======================================================================================
# degrees on nonzero weights
# ======================================================================================
def nonzero_out_degree(pr, dtype=np.float64):
    """Synapses with a nonzero weight leaving each pre neuron (int64 [n_pre]).

    Dense: nonzero entries of each row of ``W``; sparse: of each CSR row; conv: over the
    valid kernel offsets and the receiving channels; pooling: the out-degree (its shared
    weight is never 0).  Each kind computes it (``pr.nonzero_out_degree``)."""
    return pr.nonzero_out_degree(dtype)


def nonzero_in_degree(pr, dtype=np.float64):
    """Synapses with a nonzero weight arriving at each post neuron (int64 [n_post])."""
    return pr.nonzero_in_degree(dtype)


# ======================================================================================
# sums over a batch
# ======================================================================================
def _bias_terms(pr):
    return pr.n_post if pr.bias is not None else 0


def weight_update_dense_macs(pr):
    """Multiply-accumulates of one dense weight-gradient step of ``pr`` for one sample:
    every weight (the dense-equivalent MACs of one step) plus one per biased post neuron."""
    return (int(pr.dense_macs) if pr.has_weights else 0) + _bias_terms(pr)


def phase_sums(forward, backward=None, *, inputs=None, update_ops=None):
    """Integer sums over the batch of every count in the table.

    Parameters
    ----------
    forward : PhaseResult
        A forward phase (:func:`neurosim.run_forward` or a run file's).
    backward : PhaseResult, optional
        The backward phase of the same batch.
    inputs : dict, optional
        The analog values given to each ``input`` population (as given to
        ``run_forward``).  Needed for the input-encoding rows' nonzero-weight and
        dense-equivalent counts (None without it).
    update_ops : dict projection -> int [B], optional
        Weight-update MACs per projection and sample
        (:func:`neurosim.local_rule.update_ops`).

    Returns
    -------
    dict
        ``{"samples": B, "steps": {"forward": T, "backward": T_b or None},
        "projections": {name: {phase: {metric: int or None}}},
        "populations": {name: {phase: {metric: int}}}}``.
    """
    if getattr(forward, "phase", None) != "forward":
        raise TypeError(f"phase_sums needs a forward PhaseResult, got {forward!r}")
    if backward is not None and getattr(backward, "phase", None) != "backward":
        raise TypeError(f"backward must be a backward PhaseResult, got {backward!r}")
    net = forward.network
    dt = net.dtype
    T, B = forward.steps, forward.batch
    inputs = dict(inputs or {})
    projs, pops = {}, {}

    def put(d, name, phase, **m):
        d.setdefault(name, {})[phase] = {k: (None if v is None else int(v)) for k, v in m.items()}

    for name, ops in (forward.input_ops or {}).items():
        pr = net.projections[name]
        x = inputs.get(pr.pre)
        nz = dense = None
        if x is not None:
            x = flat_input(x, net.populations[pr.pre])
            per_step = x.ndim == 3
            nzx = (x != 0).reshape(-1, pr.n_pre).sum(0).astype(np.int64)
            nz = nzx @ nonzero_out_degree(pr, dt)
            dense = int(pr.dense_macs) * (T if per_step else 1) * B
        put(projs, name, "input_encoding", synaptic_operations=np.sum(ops),
            synaptic_operations_nonzero=nz, dense_macs=dense)
    for name, s in forward.sent.items():
        pr = net.projections[name]
        tot = s.sum(0)
        put(projs, name, "forward", synaptic_operations=tot @ pr.out_degree(),
            synaptic_operations_nonzero=tot @ nonzero_out_degree(pr, dt),
            dense_macs=int(pr.dense_macs) * T * B)
    for name, c in forward.counts.items():
        pop = net.populations[name]
        put(pops, name, "forward", neuron_updates=np.sum(forward.neuron_updates[name]),
            dense_neuron_updates=pop.n * T * B, spikes=np.sum(c, dtype=np.int64),
            spikes_pos=None, spikes_neg=None)
    if backward is not None:
        if backward.batch != B:
            raise OpsError(f"forward batch {B} and backward batch {backward.batch} differ")
        Tb = backward.steps
        for name, sp in backward.sent.items():
            pr = net.projections[name]
            d = counting.in_degree(pr)
            dnz = nonzero_in_degree(pr, dt)
            sp, sn = sp.sum(0), backward.sent_neg[name].sum(0)
            pos, neg = sp @ d, sn @ d
            pnz, nnz = sp @ dnz, sn @ dnz
            put(projs, name, "backward", synaptic_operations=pos + neg,
                synaptic_operations_nonzero=pnz + nnz, dense_macs=int(pr.dense_macs) * Tb * B)
            put(projs, name, "backward_pos", synaptic_operations=pos,
                synaptic_operations_nonzero=pnz, dense_macs=None)
            put(projs, name, "backward_neg", synaptic_operations=neg,
                synaptic_operations_nonzero=nnz, dense_macs=None)
        for name, c in backward.counts.items():
            pop = net.populations[name]
            p, n = np.sum(c, dtype=np.int64), np.sum(backward.counts_neg[name], dtype=np.int64)
            put(pops, name, "backward", neuron_updates=np.sum(backward.neuron_updates[name]),
                dense_neuron_updates=pop.n * Tb * B, spikes=p + n, spikes_pos=p, spikes_neg=n)
    for name, ops in (update_ops or {}).items():
        pr = net.projections[name]
        put(projs, name, "weight_update", synaptic_operations=np.sum(ops),
            synaptic_operations_nonzero=None, dense_macs=weight_update_dense_macs(pr) * B)
    return {"samples": int(B), "steps": {"forward": int(T),
                                         "backward": None if backward is None else int(backward.steps)},
            "projections": projs, "populations": pops}


def add_sums(a, b):
    """Sums of two :func:`phase_sums` results of the same network (None + b = b)."""
    if a is None:
        return json.loads(json.dumps(b))
    if a["steps"] != b["steps"]:
        raise OpsError(f"cannot add sums with steps {a['steps']} and {b['steps']}")
    out = {"samples": a["samples"] + b["samples"], "steps": dict(a["steps"])}
    for sec in ("projections", "populations"):
        out[sec] = {}
        for name in set(a[sec]) | set(b[sec]):
            for phase in set(a[sec].get(name, {})) | set(b[sec].get(name, {})):
                x = a[sec].get(name, {}).get(phase)
                y = b[sec].get(name, {}).get(phase)
                if x is None or y is None:
                    raise OpsError(f"{sec[:-1]} {name!r} has a {phase} row in only one of the sums")
                out[sec].setdefault(name, {})[phase] = {
                    k: None if x[k] is None or y[k] is None else x[k] + y[k] for k in x}
    return out


# ======================================================================================
# the table
# ======================================================================================
def _div(a, b):
    return None if a is None or not b else a / b


class OpsTable:
    """Operation counts per layer and phase (see the module docstring).

    Parameters
    ----------
    sums : dict
        A :func:`phase_sums` result (or several added with :func:`add_sums`).
    network : Network
        The network the counts belong to (layer order, kinds, sizes).
    source : dict, optional
        Where the counts come from: ``file``, ``kind`` (``"simulate"``, ``"training"``,
        ``"phases"``), ``basis`` (one sentence), and for training runs ``model``,
        ``dataset``, ``epoch``, ``history`` (the stored per-sample totals of the last
        epoch).

    Attributes ``samples`` (samples the sums cover), ``steps`` (``{"forward": T,
    "backward": T_b}``), ``sums``, ``network``, ``source``.
    """

    def __init__(self, sums, network, source=None):
        self.sums = sums
        self.network = network
        self.samples = int(sums["samples"])
        if self.samples < 1:
            raise OpsError("an operation table needs at least one sample")
        self.steps = dict(sums["steps"])
        self.source = dict(source or {"kind": "phases"})

    # -- rows ------------------------------------------------------------------------
    def projection_rows(self):
        """One dict per (projection, phase), in declaration and phase order."""
        out = []
        for name, pr in self.network.projections.items():
            phases = self.sums["projections"].get(name, {})
            for phase in PROJECTION_PHASES:
                m = phases.get(phase)
                if m is None:
                    continue
                row = dict(section="projection", layer=name, kind=pr.kind, phase=phase,
                           op=OP_KIND[phase])
                for k in PROJECTION_METRICS:
                    row[k] = _div(m[k], self.samples)
                    row[k + "_total"] = m[k]
                row["event_fraction"] = _div(m["synaptic_operations"], m["dense_macs"])
                out.append(row)
        return out

    def population_rows(self):
        """One dict per (population, phase)."""
        out = []
        for name, pop in self.network.populations.items():
            phases = self.sums["populations"].get(name, {})
            for phase in POPULATION_PHASES:
                m = phases.get(phase)
                if m is None:
                    continue
                rate = _div(m["spikes"], m["dense_neuron_updates"])
                row = dict(section="population", layer=name, kind=pop.kind, phase=phase)
                for k in POPULATION_METRICS:
                    row[k] = _div(m[k], self.samples)
                    row[k + "_total"] = m[k]
                row["firing_rate"] = rate
                row["activation_sparsity"] = None if rate is None else 1.0 - rate
                out.append(row)
        return out

    def phase_totals(self):
        """Per phase: summed projection metrics and spiking-population metrics, per sample.

        ``{phase: {"synaptic_operations", "synaptic_operations_nonzero", "dense_macs",
        "neuron_updates", "dense_neuron_updates", "spikes"}}`` (None where a term has no
        value), for the phases present."""
        out = {}
        for phase in PROJECTION_PHASES:
            ms = [p[phase] for p in self.sums["projections"].values() if phase in p]
            if not ms:
                continue
            d = {}
            for k in PROJECTION_METRICS:
                vals = [m[k] for m in ms]
                d[k] = None if any(v is None for v in vals) else sum(vals) / self.samples
            out[phase] = d
        for phase in POPULATION_PHASES:
            ms = [p[phase] for n, p in self.sums["populations"].items()
                  if phase in p and self.network.populations[n].spiking]
            if not ms:
                continue
            d = out.setdefault(phase, {k: None for k in PROJECTION_METRICS})
            for k in ("neuron_updates", "dense_neuron_updates", "spikes"):
                d[k] = sum(m[k] for m in ms) / self.samples
        return out

    def energy_counts(self):
        """Per-sample counts the energy model prices (:func:`neurosim.ops.energy.estimate`):
        ``{"inference": {...}, "training": {...} or None}``.  A training run's table
        carries the stored last-epoch totals (``source["energy_counts"]``), which are used
        instead of the recomputed sample."""
        if self.source.get("energy_counts"):
            return self.source["energy_counts"]
        t = self.phase_totals()
        z = {"synaptic_operations": 0.0, "neuron_updates": 0.0, "dense_neuron_updates": 0.0}

        def get(phase, key):
            v = t.get(phase, {}).get(key)
            return 0.0 if v is None else float(v)
        fwd = {k: get("forward", k) for k in z}
        enc = get("input_encoding", "synaptic_operations")
        out = {"inference": dict(forward=fwd, input_encoding_macs=enc), "training": None}
        if "backward" in t:
            out["training"] = dict(forward=fwd, input_encoding_macs=enc,
                                   backward={k: get("backward", k) for k in z},
                                   weight_update_macs=get("weight_update", "synaptic_operations"))
        return out

    # -- output ----------------------------------------------------------------------
    def to_dict(self, energy=None):
        """JSON-able dict: source, samples, steps, rows, phase totals (and energy)."""
        d = dict(source=self.source, samples=self.samples, steps=self.steps,
                 network=self.network.name, projections=self.projection_rows(),
                 populations=self.population_rows(), phase_totals=self.phase_totals())
        if energy is not None:
            d["energy"] = energy
        return d

    def to_json(self, energy=None):
        return json.dumps(self.to_dict(energy), indent=2, default=json_default)

    def to_csv(self, energy=None):
        """CSV text: one line per projection row, population row and phase total."""
        rows = self.projection_rows() + self.population_rows()
        for phase, m in self.phase_totals().items():
            rows.append(dict(section="phase_total", layer="*", phase=phase,
                             op=OP_KIND.get(phase, ""), **m))
        if energy is not None:
            per = energy.get("per_phase_pj", {})
            for r in rows:
                if r["section"] == "phase_total":
                    r["energy_pj"] = per.get(r["phase"])
        cols = ["section", "layer", "kind", "phase", "op"]
        for r in rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in cols})
        return buf.getvalue()

    def format(self, energy=None):
        """The human-readable table (what ``neurosim ops`` prints)."""
        return format_table(self, energy)

    def __repr__(self):
        return f"OpsTable({self.network.name!r}, samples={self.samples}, steps={self.steps})"


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def table_from_phases(forward, backward=None, *, inputs=None, update=True, gate=None,
                      source=None):
    """An :class:`OpsTable` straight from PhaseResults (notebook use).

    ``update`` adds the weight-update rows (SPIDE's local rule,
    :func:`neurosim.local_rule.update_ops`) when a
    backward phase is given; ``gate`` is the backward gate if not the default."""
    ups = None
    if backward is not None and update:
        ups = rule.update_ops(forward, backward, inputs=inputs, gate=gate)
    return OpsTable(phase_sums(forward, backward, inputs=inputs, update_ops=ups),
                    forward.network, source)
