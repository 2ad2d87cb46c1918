"""Per-synapse event counts aligned with the stored connectivity.

:func:`synapse_counts` returns, for one projection and phase, the event counts of every
synapse summed over the run's samples, in the layout of the projection's stored weights
(``docs/hdf5-schema.md``, "Per-synapse counts"):

============================  =================================================================
kind                          layout of ``counts["count"]`` (backward: ``count_pos``, ``count_neg``)
============================  =================================================================
dense                         ``[n_pre, n_post]``, like ``weight``
sparse                        ``[nnz]``, aligned with ``indices`` (synapse ``s`` goes from the
                              pre neuron ``j`` with ``indptr[j] <= s < indptr[j+1]`` to post
                              ``indices[s]``)
conv2d, conv_transpose2d,     ``[n_pre, kh*kw]`` per (pre neuron in neurosim order, kernel
avgpool2d, sumpool2d          offset ``ky*kw + kx``), summed over the receiving channels; and
                              ``count_per_kernel_weight`` (``_pos``/``_neg``) with the
                              weight's own shape (pool: ``[k, k]``)
============================  =================================================================

A ``neurosim simulate`` run file stores these arrays and they are returned as stored; for
a ``neurosim train`` run file they come from the recomputed pass
(:func:`neurosim.ops.load_run_data`).
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import counting
from .runfile import DEFAULT_SAMPLES, RunData, load_run_data
from .table import OpsError

class SynapseCounts(NamedTuple):
    """Per-synapse counts of one projection and phase (see the module docstring)."""
    projection: str
    kind: str
    phase: str
    samples: int
    layout: str
    counts: dict        # "count" (forward) or "count_pos"/"count_neg"; + per kernel weight
    weight: object      # the stored weight (None for pooling)
    indptr: object      # sparse only
    indices: object     # sparse only
    pre_index: object   # sparse only: pre neuron of every synapse


def synapse_counts(run, projection, phase="forward", *, n_samples=DEFAULT_SAMPLES, data_dir=None):
    """Per-synapse event counts of ``projection`` in ``phase`` ("forward" or "backward").

    ``run`` is a run file path (either kind) or a :class:`~neurosim.ops.RunData`."""
    data = run if isinstance(run, RunData) else load_run_data(Path(run), n_samples=n_samples,
                                                              data_dir=data_dir)
    net = data.network
    if projection not in net.projections:
        raise OpsError(f"no projection {projection!r} in the run's network; known: "
                       f"{list(net.projections)}")
    pr = net.projections[projection]
    if net.populations[pr.pre].kind == "input":
        raise OpsError(f"{projection!r} is an input map (analog encoding, counted as MACs in "
                       "the input_encoding phase); it has no per-synapse event counts")
    if phase not in ("forward", "backward"):
        raise OpsError(f"phase must be 'forward' or 'backward', got {phase!r}")
    res = data.forward if phase == "forward" else data.backward
    if res is None:
        raise OpsError(f"the run {str(data.path)!r} has no backward phase")
    stored = (data.synapse_counts or {}).get(phase, {}).get(projection)
    if stored:
        counts = {k: np.asarray(v) for k, v in stored.items()}
    else:
        if projection not in res.sent:
            raise OpsError(f"the {phase} phase has no counts for projection {projection!r}")
        counts = dict(counting.per_synapse(res, projection))
        if pr.spatial:
            for k, a in counting.per_kernel_weight(res, projection).items():
                counts["count_per_kernel_weight" + k[len("count"):]] = a
    indptr, indices, pre_index = pr.synapse_csr() or (None, None, None)
    return SynapseCounts(projection, pr.kind, phase, int(res.batch), pr.count_layout, counts,
                         pr.weight if pr.has_weights else None, indptr, indices, pre_index)


__all__ = ["SynapseCounts", "synapse_counts"]
