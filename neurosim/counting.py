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
