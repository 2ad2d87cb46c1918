"""The event-driven engine: one phase (forward or backward) for a batch of samples.

Samples are independent; :func:`run_phase` runs one range of them, and the caller
(:func:`neurosim.engine._alloc_run`) runs disjoint ranges on threads, each call owning
its scratch memory (:class:`.Scratch`), so no two threads ever write the same location.
The compiled network, the run's drive and its outputs arrive as the named bundles of
:mod:`.layout`.

The kernel is assembled from named schedule steps, each in a module of its own and
inlined into one compiled loop:

* :mod:`.schedule` -- one sample's T steps (seed touched, deliver delayed, update
  populations, gate backward, deliver same-step, finish leak);
* :mod:`.deliver` -- a sender's events into a projection's input buffer, per kind;
* :mod:`.update` -- the neuron update of a population (its model's functions,
  :mod:`.neurons`, :mod:`.cuba`);
* :mod:`.emit` -- spikes appended to the ring, counted and recorded.
* :mod:`.clock` -- the optional step profile (``NEUROSIM_PROFILE=1``; compiled away
  otherwise).

Incoming events are accumulated per projection in an input buffer, in event order (the
sender's spikes in increasing neuron index, each synapse of a CSR row in storage order),
one rounding in the network's dtype per event and receiver.  The neuron update reads and
clears the buffers: ``I = constant (+ time-varying)``, then ``I += buffer (× mask)`` for
each incoming projection in declaration order.  A site that was not touched keeps its
state; for a leaky neuron the missed leak steps are applied when the site is next
touched, as repeated multiplications in the dtype (:func:`.neurons.leak_steps`), so that
the result is bit-identical to a dense update at every step.  All neuron arithmetic is in
:mod:`.neurons`.

Counting: ``sent[j]`` counts the events delivered by sender neuron ``j`` through each
projection (forward: spikes; backward: ``sent`` counts +1 events, ``sent_neg`` -1 events).
Per-synapse counts follow exactly as ``sent[pre(s)]`` because every delivered event
traverses every synapse of its sender (see :mod:`neurosim.counting`).

The compiled entry points stay in this module (``engine.run_phase``, ``engine.apply_map``:
the names of their on-disk cache entries, :func:`neurosim.kernels.cache_warm`).
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_INLINE, NJIT_NORT
from .clock import _lap, _start
from .layout import G_CR, G_CS, G_HR, G_HS, G_KH, G_KW, G_PAD, G_STRIDE, G_WR, G_WS, \
    K_CONV_DOWN, K_CONV_UP, K_CSR, K_DENSE, K_POOL_UP, ST_TOTALS
from .scatter import conv_scatter_group, csr_scatter, pool_scatter_group
from .schedule import _run_sample


@numba.njit(**NJIT)
def run_phase(T, backward, b0, b1, net, run, out, sc, stop, done, slot, cuba):
    """Run T steps of one phase for the samples ``b0 .. b1-1``, one after another.

    ``net``, ``run``, ``out``, ``sc``: :class:`.layout.NetArrays`, :class:`.layout.RunArrays`,
    :class:`.layout.OutArrays` and this call's :class:`.layout.Scratch`
    (:func:`.layout.alloc_scratch`).  ``out.u_out`` [B, N] holds the initial potentials on
    entry and the final ones on exit.  ``cuba``: ``True`` if the network has a CubaLIF
    population, else ``None`` (compiles a specialisation without the CubaLIF kernels:
    :func:`_cuba_step`).  Not parallel itself: the caller
    (:func:`neurosim.engine._alloc_run`, through :func:`neurosim._pool.run_chunks`) runs
    disjoint sample ranges on threads (the kernel releases the GIL), which compiles in
    about two thirds of the time of a ``prange`` over the same ranges
    (docs/decisions.md, 41).

    ``stop`` int64 [1]: the stop word, read before every step; when another thread sets
    it nonzero the call returns within one step, its outputs incomplete (the caller
    raises :class:`neurosim._interrupt.Interrupted`).  ``done`` int64: ``done[slot]``
    counts this call's finished sample-steps (progress; each call its own cache line)."""
    for b in range(b0, b1):
        if not _run_sample(b, T, backward, net, run, out, sc, stop, done, slot, cuba):
            return
        c = _start()
        _sample_totals(b, net, out)
        _lap(out.prof, b, ST_TOTALS, c)       # the profile (nothing in the default build)


@numba.njit(**NJIT_NORT)
def _sample_totals(b, net, out):
    """Per-sample totals of sample ``b``, while its rows are in cache: synaptic events of
    every projection (``Σ_j sent[j] · sent_deg[j]``, +1 and -1 events apart: the
    formulas of :mod:`neurosim.counting`) and spikes of every population."""
    Q = net.proj_soff.shape[0]
    P = net.pop_off.shape[0] - 1
    for q in range(Q):
        s0 = np.uint64(net.proj_soff[q])
        n = np.uint64(net.pop_off[net.proj_src[q] + 1] - net.pop_off[net.proj_src[q]])
        a = 0
        c = 0
        for j in range(s0, s0 + n):
            d = net.sent_deg[j]
            a += out.sent[b, j] * d
            c += out.sent_neg[b, j] * d
        out.ops[b, q] = a
        out.ops_neg[b, q] = c
    for p in range(P):
        k = 0
        for g in range(np.uint64(net.pop_off[p]), np.uint64(net.pop_off[p + 1])):
            k += np.int64(out.counts[b, g]) + np.int64(out.counts_neg[b, g])
        out.spk[b, p] = k


#: samples per block and output columns per tile of the dense input-map gather
_MAP_SB = 8
_MAP_TILE = 128


@numba.njit(**NJIT)
def apply_map(kind, geo, tab, weights, indptr, indices, pool_w, x, b0, b1, out):
    """Analog input map: out[b] += (map applied to x[b]) for ``b0 <= b < b1``, in
    ``out``'s dtype.

    Used for the input encoding (SPIDE's ``F x``).  Every output is the sum, in increasing
    input index, of ``x_j * w`` over the nonzero inputs ``j`` (each operation rounded in
    the dtype; docs/hdf5-schema.md, "Arithmetic"), then added to ``out``.  Dense and conv
    maps gather (:func:`_map_dense`, :func:`_map_conv_down`: the same additions in the same
    order per output, without a pass of each input over the whole output); the other
    kinds scatter each nonzero input with the engine's scatter code.  Not parallel itself:
    the caller (:func:`neurosim.engine._map_current`) runs sample ranges on threads."""
    if kind == K_DENSE:
        _map_dense(weights, x, b0, b1, out)
        return
    if kind == K_CONV_DOWN:
        _map_conv_down(geo, weights, x, b0, b1, out)
        return
    n_out = out.shape[1]
    Cs = geo[0] if geo[0] > 0 else 1
    nk = max(1, geo[G_KH] * geo[G_KW])
    buf = np.zeros(n_out, out.dtype)
    mark = np.zeros(1, np.uint8)
    tlist = np.zeros(1, np.int64)
    tcount = np.zeros(1, np.int64)
    gch = np.zeros(1, np.int64)          # one event per call of the grouped scatters
    gval = np.zeros(1, out.dtype)
    sites = np.zeros(nk, np.int64)
    offs = np.zeros(nk, np.int64)
    for b in range(b0, b1):
        buf[:] = 0
        for j in range(x.shape[1]):
            v = x[b, j]
            if v == 0:
                continue
            site = j // Cs
            gch[0] = j - site * Cs
            gval[0] = v
            if kind == K_CSR:
                csr_scatter(buf, 0, weights, 0, indptr, 0, indices, 0, j, v, True, False,
                            mark, tlist, tcount, 0, 0, 1)
            elif kind == K_CONV_UP:
                conv_scatter_group(buf, 0, weights, 0, geo, tab, True, site, gch,
                                   gval, 1, True, False, mark, tlist, tcount, 0, 0, sites, offs)
            else:
                pool_scatter_group(buf, 0, pool_w, geo, tab, kind == K_POOL_UP, site, gch, gval,
                                   1, True, False, mark, tlist, tcount, 0, 0, sites, offs)
        for i in range(n_out):
            out[b, i] += buf[i]


@numba.njit(**NJIT_INLINE)
def _map_dense(weights, x, b0, b1, out):
    """Dense map, gathered: per block of ``_MAP_SB`` samples and tile of ``_MAP_TILE``
    outputs, the inputs in increasing index, each weight row tile read once per block."""
    n_in = x.shape[1]
    n_out = out.shape[1]
    acc = np.zeros((_MAP_SB, _MAP_TILE), out.dtype)
    for s0 in range(b0, b1, _MAP_SB):
        s1 = min(b1, s0 + _MAP_SB)
        for i0 in range(0, n_out, _MAP_TILE):
            m = np.uint64(min(_MAP_TILE, n_out - i0))
            acc[:, :] = 0
            for j in range(n_in):
                wrow = np.uint64(j * n_out + i0)
                for b in range(s0, s1):
                    v = x[b, j]
                    if v != 0:
                        a = acc[b - s0]
                        for i in range(m):
                            a[i] = a[i] + v * weights[wrow + i]
            for b in range(s0, s1):
                for i in range(m):
                    out[b, i0 + i] += acc[b - s0, i]


@numba.njit(**NJIT_INLINE)
def _map_conv_down(geo, weights, x, b0, b1, out):
    """Conv map (weights ``(kh, kw, Cs, Cr)``), gathered per receiver site: kernel rows
    ``ky``, then ``kx``, then sender channels, increasing — increasing input index.
    The offset loop is :func:`.walk.up_walk`'s geometry run from a receiver into the
    sender map, written inline: through ``up_walk`` (its site table and offset lists)
    LeNet's map took twice as long."""
    Cs, Hs, Ws, Cr, Hr, Wr = geo[G_CS], geo[G_HS], geo[G_WS], geo[G_CR], geo[G_HR], geo[G_WR]
    kh, kw, st, pad = geo[G_KH], geo[G_KW], geo[G_STRIDE], geo[G_PAD]
    ucr = np.uint64(Cr)
    acc = np.zeros(Cr, out.dtype)
    for b in range(b0, b1):
        xb = x[b]
        for oy in range(Hr):
            for ox in range(Wr):
                acc[:] = 0
                for ky in range(kh):
                    iy = oy * st - pad + ky
                    if iy < 0 or iy >= Hs:
                        continue
                    for kx in range(kw):
                        ix = ox * st - pad + kx
                        if ix < 0 or ix >= Ws:
                            continue
                        jb = (iy * Ws + ix) * Cs
                        wb = (ky * kw + kx) * Cs
                        for c in range(Cs):
                            v = xb[jb + c]
                            if v != 0:
                                w0 = np.uint64((wb + c) * Cr)
                                for i in range(ucr):
                                    acc[i] = acc[i] + v * weights[w0 + i]
                ob = (oy * Wr + ox) * Cr
                for i in range(Cr):
                    out[b, ob + i] += acc[i]
