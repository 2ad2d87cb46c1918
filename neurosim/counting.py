"""Exact operation counts derived from per-neuron sent-event counts.

How counting stays cheap.  The engine's hot loop increments one counter per *event*
(``sent[j]`` of the sending neuron, per projection), never per synapse.  Everything else
follows exactly, because an event delivered by neuron ``j`` traverses every synapse of
``j`` in that projection once:

* forward, synapse ``s`` from pre ``j``:           ``count[s] = sent[j]``
* backward (transposed), synapse ``s`` into post ``i``: ``count_pos[s] = sent_pos[i]``,
  ``count_neg[s] = sent_neg[i]`` (the forward post neuron is the backward sender)
* per projection and sample: forward ``Σ_j sent[j] · out_degree[j]``, backward
  ``Σ_i sent[i] · in_degree[i]``.

Synapse layouts.  Dense: ``[n_pre, n_post]``.  Sparse: aligned with the CSR ``indices``
(length nnz).  Conv2d / ConvTranspose2d / AvgPool2d / SumPool2d: no synapse list exists;
counts are given per ``(pre neuron, kernel offset)`` — shape ``[n_pre, kh*kw]``, summed
over the receiving channels — and per kernel weight (the weight's own shape; pooling:
``[kh, kw]``).  Each kind computes its own layouts
(:meth:`neurosim.connectivity.Projection.synapse_counts`, ``kernel_weight_counts``).
"""
from typing import NamedTuple

import numpy as np

from . import _validate as V
from .connectivity import offset_targets


def conv_targets(pr):
    """int64 [n_pre, kh*kw]: receiving site (oy*W_out + ox) of each (pre, offset), or -1."""
    return offset_targets(pr)


def out_degree(pr):
    """Synapses leaving each pre neuron (int64 [n_pre])."""
    return pr.out_degree()


def in_degree(pr):
    """Synapses arriving at each post neuron (int64 [n_post])."""
    return pr.in_degree()


def _sent(result, name):
    if name not in result.sent:
        raise V.NeurosimError(f"no counts for projection {name!r} in this {result.phase} result; "
                              f"it has {list(result.sent)}")
    return result.sent[name], result.sent_neg[name]


def synaptic_events(result, name):
    """Synaptic events (accumulates) of projection ``name`` per sample.

    Forward: int64 [B].  Backward: (pos [B], neg [B]) for +1 and -1 events."""
    pr = result.network.projections[name]
    s, sn = _sent(result, name)
    fast = getattr(result, "synops", None)     # the engine's own per-sample totals
    if fast and name in fast:
        if result.phase == "forward":
            return fast[name]
        return fast[name], result.synops_neg[name]
    if result.phase == "forward":
        return s @ out_degree(pr)
    d = in_degree(pr)
    return s @ d, sn @ d


def per_synapse(result, name):
    """Per-synapse event counts summed over the batch, aligned with the synapse layout.

    Returns a dict: forward ``{"count": ...}``; backward ``{"count_pos", "count_neg"}``.
    Layouts: see the module docstring."""
    pr = result.network.projections[name]
    s, sn = _sent(result, name)
    if result.phase == "forward":
        return {"count": _fwd_layout(pr, s.sum(0))}
    return {"count_pos": _bwd_layout(pr, s.sum(0)), "count_neg": _bwd_layout(pr, sn.sum(0))}


def _fwd_layout(pr, sent):
    return pr.synapse_counts(sent, backward=False)


def _bwd_layout(pr, sent_post):
    return pr.synapse_counts(sent_post, backward=True)


def per_kernel_weight(result, name):
    """Events per kernel weight (conv: weight's shape; pool: [k, k]), summed over the batch.

    Forward: ``count[co, ci, ky, kx] = Σ_{pre j in channel ci, offset valid} sent[j]``
    (the same for every co); backward: +1/-1 events of the post neurons at the receiving
    positions, per output channel."""
    pr = result.network.projections[name]
    if not pr.spatial:
        raise V.NeurosimError(f"per_kernel_weight needs a conv or pool projection; {name!r} is {pr.kind}")
    s, sn = _sent(result, name)
    if result.phase == "forward":
        return {"count": pr.kernel_weight_counts(s.sum(0))}
    return {"count_pos": pr.kernel_weight_counts(s.sum(0), backward=True),
            "count_neg": pr.kernel_weight_counts(sn.sum(0), backward=True)}


def totals(result):
    """Per-projection and per-population totals per sample (NeuroBench/sinabs names).

    Returns ``{"projections": {name: {...}}, "populations": {name: {...}}}`` with, per
    projection, ``synaptic_operations`` ([B] accumulates; backward also ``_pos``/``_neg``)
    and ``dense_macs`` (per step × steps, what a clock-driven dense simulation would do);
    per population ``spikes`` ([B]), ``neuron_updates`` ([B]), ``firing_rate`` (spikes per
    neuron per step, [B]) and ``activation_sparsity`` (1 − firing_rate).
    """
    net = result.network
    out = {"projections": {}, "populations": {}}
    for name in result.sent:
        pr = net.projections[name]
        ev = synaptic_events(result, name)
        d = {"dense_macs": int(pr.dense_macs) * result.steps}
        if result.phase == "forward":
            d["synaptic_operations"] = ev
        else:
            d["synaptic_operations_pos"], d["synaptic_operations_neg"] = ev
            d["synaptic_operations"] = ev[0] + ev[1]
        out["projections"][name] = d
    fast = getattr(result, "spike_totals", None) or {}
    for name, c in result.counts.items():
        pop = net.populations[name]
        if name in fast:
            spikes = fast[name]
        else:
            spikes = c.sum(1).astype(np.int64) + result.counts_neg[name].sum(1)
        rate = spikes / (pop.n * result.steps)
        out["populations"][name] = dict(spikes=spikes, neuron_updates=result.neuron_updates[name],
                                        firing_rate=rate, activation_sparsity=1.0 - rate)
    return out


# ======================================================================================
# the one accounting record of a training step
# ======================================================================================
class PhaseCounts(NamedTuple):
    """Per-sample op counts of one phase, summed over the network (int64 [B] each), under
    NeuroBench's names (the same phase and metric names as :class:`neurosim.ops.OpsTable`).

    ``synaptic_operations`` counts every synaptic event (forward: accumulates; backward:
    +1 and -1 events; input encoding and weight update: multiply-accumulates), with the
    backward's signs in ``synaptic_operations_pos`` / ``_neg`` (zero in the other phases);
    ``neuron_updates`` and ``spikes`` of the spiking phases (zero in the others)."""
    synaptic_operations: np.ndarray
    synaptic_operations_pos: np.ndarray
    synaptic_operations_neg: np.ndarray
    neuron_updates: np.ndarray
    spikes: np.ndarray


#: the kind of operation each projection phase of an op table counts (accumulates of
#: spike events, multiply-accumulates of analog values).
OP_KIND = {"input_encoding": "MAC", "forward": "AC", "backward": "AC", "backward_pos": "AC",
           "backward_neg": "AC", "weight_update": "MAC"}

#: the phases of a training step's counts, in order.
STEP_PHASES = ("input_encoding", "forward", "backward", "weight_update")

#: the run file's name of each count of a training step (``/training/history``,
#: ``docs/training.md``: schema names, kept): name -> (phase, PhaseCounts field).  The
#: only place these names are spelled; :data:`neurosim.training.checkpoint.OPS` is its keys.
STEP_COUNT_NAMES = {
    "fwd_synops": ("forward", "synaptic_operations"),
    "fwd_updates": ("forward", "neuron_updates"),
    "fwd_spikes": ("forward", "spikes"),
    "encoding_macs": ("input_encoding", "synaptic_operations"),
    "bwd_synops_pos": ("backward", "synaptic_operations_pos"),
    "bwd_synops_neg": ("backward", "synaptic_operations_neg"),
    "bwd_updates": ("backward", "neuron_updates"),
    "bwd_spikes": ("backward", "spikes"),
    "update_macs": ("weight_update", "synaptic_operations"),
}
#: the names that an evaluation (forward phase and input encoding only) has.
FORWARD_COUNT_NAMES = tuple(k for k, (ph, _) in STEP_COUNT_NAMES.items()
                            if ph in ("forward", "input_encoding"))


def zero_counts(B):
    """The :class:`PhaseCounts` of a phase that did not run (zeros [B])."""
    z = np.zeros(B, np.int64)
    return PhaseCounts(z, z, z, z, z)


def _sum(values, B):
    return sum(values, np.zeros(B, np.int64))


def phase_counts(result):
    """The :class:`PhaseCounts` of a PhaseResult, from :func:`totals` (the engine's own
    per-sample totals where it keeps them)."""
    B = result.batch
    tot = totals(result)
    pr, po = tot["projections"].values(), tot["populations"].values()
    syn = _sum((d["synaptic_operations"] for d in pr), B)
    if result.phase == "forward":
        pos, neg = syn, np.zeros(B, np.int64)
    else:
        pos = _sum((d["synaptic_operations_pos"] for d in pr), B)
        neg = _sum((d["synaptic_operations_neg"] for d in pr), B)
    return PhaseCounts(syn, pos, neg, _sum((d["neuron_updates"] for d in po), B),
                       _sum((d["spikes"] for d in po), B))


def mac_counts(ops, B):
    """The :class:`PhaseCounts` of a multiply-accumulate phase (input encoding, weight
    update) from its MACs per projection (dict projection -> int64 [B])."""
    z = np.zeros(B, np.int64)
    m = _sum(ops.values(), B)
    return PhaseCounts(m, z, z, z, z)


def step_counts_named(counts):
    """A step's counts (dict phase -> :class:`PhaseCounts`) under the run file's names
    (:data:`STEP_COUNT_NAMES`), for the phases present."""
    return {k: getattr(counts[ph], f) for k, (ph, f) in STEP_COUNT_NAMES.items() if ph in counts}


def named_to_phases(named):
    """The inverse of :func:`step_counts_named` on per-sample means (a history row:
    name -> float): dict phase -> dict field -> value, for the names present."""
    out = {}
    for k, (ph, f) in STEP_COUNT_NAMES.items():
        if k in named:
            out.setdefault(ph, {})[f] = named[k]
    return out
