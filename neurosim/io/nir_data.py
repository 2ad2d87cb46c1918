r"""Recorded spike trains as NIR data (``nir.NIRGraphData``; the data classes of nir 1.0.8).

NIR's data classes describe what the nodes of a NIR graph did: ``NIRGraphData`` maps a
node name to ``NIRNodeData``, whose ``observables`` map a name to ``TimeGriddedData``
(``data`` [samples, steps, neurons], ``dt``) or ``EventData`` (``idx`` / ``time``
[samples, events], padded with -1 / inf; ``n_neurons``, ``t_max``) or
``ValuedEventData`` (with ``value``).  :func:`to_nir_data` writes a neurosim run's
recordings under the names :func:`neurosim.io.nir.to_nir` gives the populations (the
population name), so a data file goes with the network's NIR export:

=================  =====================================================================
observable         contents
=================  =====================================================================
``spikes``         forward spikes: ``TimeGriddedData`` of bool, or ``EventData``
``spikes_backward``  the backward phase's signed ternary events: ``TimeGriddedData`` of
                   int8 in {-1, 0, 1}, or ``ValuedEventData`` with values ±1 (float64)
=================  =====================================================================

Neurons are numbered as NIR numbers them: the C-order flattening of the node's shape
(``(C, H, W)`` populations are stored channel-last by neurosim and reordered here).
Step ``t`` of a trace is time ``t*dt``; events of one sample are sorted by (step,
neuron).  :func:`read_nir_data` inverts it exactly (steps are ``rint(time/dt)``, not
nir's ``floor``, which float rounding can put one step early).  ``docs/nir.md``,
"Recorded activity".
"""
import numpy as np

from .. import _validate as V
from . import atomic
from .nir import NIRError, _nir, _order

#: observable names: forward spikes, backward signed ternary events.
FORWARD, BACKWARD = "spikes", "spikes_backward"


def _data_classes():
    nir = _nir()
    if not all(hasattr(nir, c) for c in ("NIRGraphData", "NIRNodeData", "TimeGriddedData",
                                         "EventData", "ValuedEventData", "write_data")):
        raise NIRError(f"the installed nir ({getattr(nir, '__version__', '?')}) has no data "
                       "classes (NIRGraphData, TimeGriddedData, EventData): recorded activity "
                       "needs nir >= 1.0.8")
    return nir


def _events(a, dt, valued, nir):
    """EventData / ValuedEventData of trains a [B, T, n] (C-order neurons)."""
    B, T, n = a.shape
    per = [np.nonzero(a[b]) for b in range(B)]          # (steps, neurons), step-major
    E = max([len(t) for t, _ in per] + [0])
    idx = np.full((B, E), -1, np.int64)
    time = np.full((B, E), np.inf)
    value = np.zeros((B, E))
    for b, (t, j) in enumerate(per):
        idx[b, :len(t)] = j
        time[b, :len(t)] = t * dt
        value[b, :len(t)] = a[b, t, j]
    if valued:
        return nir.ValuedEventData(idx=idx, time=time, value=value, n_neurons=n, t_max=T * dt)
    return nir.EventData(idx=idx, time=time, n_neurons=n, t_max=T * dt)


def to_nir_data(net, forward, backward=None, *, dt, events=False):
    """A ``nir.NIRGraphData`` of recorded spike trains.

    Parameters
    ----------
    net : Network
        The network the trains belong to (shapes and neuron order).
    forward, backward : dict
        Population -> spike trains [B, T, n] in neurosim's neuron order: forward 0/1,
        backward signed {-1, 0, 1} (a ``PhaseResult.spikes``); ``backward`` optional.
    dt : float
        Time step, in the unit of the network's NIR export (NIR: seconds).
    events : bool
        Event lists (``EventData`` / ``ValuedEventData``) instead of time grids.
    """
    nir = _data_classes()
    dt = V.check_real(dt, "dt", positive=True)
    obs = {}
    for what, trains in ((FORWARD, forward or {}), (BACKWARD, backward or {})):
        for name, a in trains.items():
            if name not in net.populations:
                raise NIRError(f"spike trains of {name!r}: no such population; populations: "
                               f"{list(net.populations)}")
            p = net.populations[name]
            a = np.asarray(a)
            if a.ndim != 3 or a.shape[2] != p.n:
                raise NIRError(f"spike trains of {name!r} have shape {a.shape}; expected "
                               f"(samples, steps, {p.n})")
            allowed = (0, 1) if what == FORWARD else (-1, 0, 1)
            if not np.all(np.isin(a, allowed)):
                raise NIRError(f"{what} of {name!r} must hold only {allowed}")
            ns2chw, _ = _order(p.shape)
            c = np.zeros(a.shape, np.int8)
            c[..., ns2chw] = a
            if events:
                o = _events(c, dt, what == BACKWARD, nir)
            else:
                o = nir.TimeGriddedData(c.astype(bool) if what == FORWARD else c, dt)
            obs.setdefault(name, {})[what] = o
    if not obs:
        raise NIRError("no spike trains to write (record them: `neurosim simulate --record`)")
    return nir.NIRGraphData(nodes={k: nir.NIRNodeData(observables=v) for k, v in obs.items()})


def write_nir_data(path, data, *, force=False):
    """Write a ``nir.NIRGraphData`` (:func:`to_nir_data`) with ``nir.write_data``,
    atomically (a temporary file in the same folder, then renamed)."""
    nir = _data_classes()
    path = atomic.check_destination(path, force)
    with atomic.atomic_path(path, force=force) as tmp:
        nir.write_data(tmp, data)
    return path


def read_nir_data(path, *, dt=None, net=None):
    """The spike trains of a NIR data file: {observable: {node: int8 [B, T, n]}}, neurons
    in NIR's C-order, or in neurosim's order for the populations of ``net``.  Gridded
    observables carry their dt; event observables need ``dt`` (steps are
    ``rint(time/dt)``, ``T = rint(t_max/dt)``)."""
    nir = _data_classes()
    try:
        g = nir.read_data(str(path))
    except Exception as e:
        raise NIRError(f"cannot read NIR data file {str(path)!r}: {type(e).__name__}: {e}") from e
    out = {}
    for node, nd in g.nodes.items():
        for what, o in getattr(nd, "observables", {}).items():
            if isinstance(o, nir.TimeGriddedData):
                a = np.asarray(o.data).astype(np.int8)
            else:
                if dt is None:
                    raise NIRError(f"{node}/{what} is event data: give dt (its time step)")
                T = int(np.rint(o.t_max / dt))
                B, n = o.idx.shape[0], int(o.n_neurons)
                a = np.zeros((B, T, n), np.int8)
                ok = o.idx >= 0
                b = np.nonzero(ok)[0]
                vals = o.value[ok] if isinstance(o, nir.ValuedEventData) else 1
                a[b, np.rint(o.time[ok] / dt).astype(np.int64), o.idx[ok]] = vals
            if net is not None and node in net.populations:
                ns2chw, _ = _order(net.populations[node].shape)
                a = a[..., ns2chw]
            out.setdefault(what, {})[node] = a
    return out
