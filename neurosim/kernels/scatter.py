"""Event scatter: what one spike adds to the input buffer of the receiving population.

Each function handles one event of sender neuron ``j`` with value ``val`` on one
projection.  ``weighted`` False means ``val == 1`` and the inner loop is a pure
contiguous add (SIMD).  When ``do_mark`` is set, the receiving *sites* touched are
recorded (see :mod:`.engine`); receivers that are updated densely anyway skip it.

Geometry ``geo`` = (Cs, Hs, Ws, Cr, Hr, Wr, kh, kw, stride, pad) of sender and receiver;
neurons are channel-last: ``(c, y, x) -> (y*W + x)*C + c``.  Conv weights are laid out
``(kh, kw, C_sender, C_receiver)`` so the innermost loop runs over receiver channels.
Spatial events arrive already split into sender site ``s = y*Ws + x`` and channel ``c``;
the receiving sites and kernel offsets come from the one offset walk of :mod:`.walk`.
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_INLINE, NJIT_NORT
from .layout import G_CR, G_CS, G_HS, G_KH, G_KW, G_PAD, G_STRIDE, G_WS
from .walk import down_walk, up_walk


@numba.njit(**NJIT_INLINE)
def _mark(site, mark, tlist, tcount, p, site_off):
    """Append ``site`` to population p's touched list unless already marked.

    Branch-free (the list slot is written unconditionally and the count advances by
    1 - mark): a data-dependent branch here stopped LLVM from vectorising the row adds
    around it and cost ~30 ns per call.  p's list starts at ``site_off + p`` (one slack
    slot per population for the unconditional write)."""
    g = site_off + site
    n = tcount[p]
    tlist[site_off + p + n] = site
    tcount[p] = n + 1 - mark[g]
    mark[g] = 1


@numba.njit(**NJIT_INLINE)
def dense_scatter_group(buf, boff, W, woff, n_r, gj, gval, ng, weighted):
    """Dense scatter of ``ng`` events of one sender (neurons ``gj`` in event order, values
    ``gval``): row ``j`` of the (n_sender, n_r) weights per event, four rows summed in
    registers before one store (:func:`_rows_add`), one rounding per event and receiver."""
    _rows_add(buf, boff, W, woff, n_r, gj, gval, ng, weighted)


@numba.njit(**NJIT_INLINE)
def csr_scatter(buf, boff, W, woff, indptr, ioff, indices, xoff, j, val, weighted,
                do_mark, mark, tlist, tcount, p, site_off, ssz):
    """Sparse scatter; the receiver's sites hold ``ssz`` neurons each."""
    s0 = np.uint64(indptr[ioff + j])
    s1 = np.uint64(indptr[ioff + j + 1])
    bo = np.uint64(boff)
    wo = np.uint64(woff)
    xo = np.uint64(xoff)
    for s in range(s0, s1):
        i = np.uint64(indices[xo + s])
        if weighted:
            buf[bo + i] += val * W[wo + s]
        else:
            buf[bo + i] += W[wo + s]
        if do_mark:
            _mark(np.int64(i) // ssz, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT_INLINE)
def _rows_add(buf, tb, W, wbase, Cr, gch, gval, ng, weighted):
    """buf[tb:tb+Cr] += (gval[i] *) W[wbase + gch[i]*Cr : ... + Cr], for i = 0 .. ng-1 in turn.

    The rows of events from one sender site (same kernel offset, different channels) are
    added four at a time in registers before one store to ``buf``: a quarter of the
    buffer loads and stores, and one offset walk per site instead of one per event.  The
    additions stay in event order, ``(((buf + r0) + r1) + r2) + r3``, each rounded in the
    dtype: exactly what adding the events one by one gives.  Indices are unsigned: Numba
    then emits no negative-index wrap-around, and LLVM vectorises the loops (~6x faster)."""
    t = np.uint64(tb)
    n = np.uint64(Cr)
    i = 0
    if weighted:
        while i + 4 <= ng:
            a = np.uint64(wbase + gch[i] * Cr)
            b = np.uint64(wbase + gch[i + 1] * Cr)
            c = np.uint64(wbase + gch[i + 2] * Cr)
            d = np.uint64(wbase + gch[i + 3] * Cr)
            va, vb, vc, vd = gval[i], gval[i + 1], gval[i + 2], gval[i + 3]
            for k in range(n):
                buf[t + k] = (((buf[t + k] + va * W[a + k]) + vb * W[b + k]) + vc * W[c + k]) \
                    + vd * W[d + k]
            i += 4
        while i < ng:
            a = np.uint64(wbase + gch[i] * Cr)
            va = gval[i]
            for k in range(n):
                buf[t + k] += va * W[a + k]
            i += 1
    else:
        while i + 4 <= ng:
            a = np.uint64(wbase + gch[i] * Cr)
            b = np.uint64(wbase + gch[i + 1] * Cr)
            c = np.uint64(wbase + gch[i + 2] * Cr)
            d = np.uint64(wbase + gch[i + 3] * Cr)
            for k in range(n):
                buf[t + k] = (((buf[t + k] + W[a + k]) + W[b + k]) + W[c + k]) + W[d + k]
            i += 4
        while i < ng:
            a = np.uint64(wbase + gch[i] * Cr)
            for k in range(n):
                buf[t + k] += W[a + k]
            i += 1


@numba.njit(**NJIT_INLINE)
def conv_scatter_group(buf, boff, W, woff, geo, tab, up, site_s, gch, gval, ng, weighted,
                       do_mark, mark, tlist, tcount, p, site_off, sites, offs):
    """Conv (``up`` False) or transposed-conv (``up`` True) scatter of ``ng`` events of
    one sender site (channels ``gch``, values ``gval``): one walk (:mod:`.walk`), then per
    receiving site the rows of the events summed in registers (:func:`_rows_add`).
    Returns the number of receiving sites."""
    Cs, Cr = geo[G_CS], geo[G_CR]
    n = up_walk(geo, tab, site_s, sites, offs) if up else down_walk(geo, tab, site_s, sites, offs)
    for i in range(n):
        site = sites[i]
        _rows_add(buf, boff + site * Cr, W, woff + offs[i] * Cs * Cr, Cr, gch, gval, ng, weighted)
        if do_mark:
            _mark(site, mark, tlist, tcount, p, site_off)
    return n


@numba.njit(**NJIT_INLINE)
def pool_scatter_group(buf, boff, w, geo, tab, up, site_s, gch, gval, ng, weighted, do_mark,
                       mark, tlist, tcount, p, site_off, sites, offs):
    """Pooling forward (``up`` False: one add of ``val * w`` per window containing the
    sender) or transpose (``up`` True: window sends ``val * w`` to each of its inputs) for
    ``ng`` events of one sender site (channels ``gch``); one walk and one mark per
    receiving site."""
    C = geo[G_CS]
    n = up_walk(geo, tab, site_s, sites, offs) if up else down_walk(geo, tab, site_s, sites, offs)
    ung = np.uint64(ng)
    for i in range(n):
        site = sites[i]
        base = np.uint64(boff + site * C)
        if weighted:
            for e in range(ung):
                buf[base + np.uint64(gch[e])] += gval[e] * w
        else:
            for e in range(ung):
                buf[base + np.uint64(gch[e])] += w
        if do_mark:
            _mark(site, mark, tlist, tcount, p, site_off)
    return n


# ---------------------------------------------------------------------------------------
# Stand-alone propagation kernels (one step, one sample): used by benchmarks and tests.
@numba.njit(**NJIT)
def csr_propagate(spike_idx, indptr, indices, weights, out):
    """out[indices[s]] += weights[s] for every synapse s of every spiking neuron.

    Returns the number of synaptic events.  The row is walked with an unsigned offset
    from its start: Numba then emits no negative-index wrap-around for ``indices`` and
    ``weights`` (with a signed ``s`` it did, twice per synapse, and ran ~1.4x slower)."""
    n = 0
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        s0 = indptr[j]
        s1 = indptr[j + 1]
        if s1 > s0:
            base = np.uint64(s0)
            for k in range(np.uint64(s1 - s0)):
                out[indices[base + k]] += weights[base + k]
            n += s1 - s0
    return n


@numba.njit(**NJIT)
def dense_propagate(spike_idx, W, out):
    """out += W[j, :] for every spiking neuron j (W is [n_pre, n_post]); returns #events."""
    n_r = W.shape[1]
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        for i in range(n_r):
            out[i] += W[j, i]
    return spike_idx.shape[0] * n_r


@numba.njit(**NJIT)
def conv_propagate(spike_idx, wf, geo, out):
    """Conv scatter of a list of spikes (pre in channel-last order) with the engine's own
    code: consecutive spikes of one sender site are delivered together by
    :func:`conv_scatter_group` (one offset walk, rows summed in registers in event order).

    ``wf`` is the flat (kh, kw, C_in, C_out) weight; ``out`` the flat channel-last post
    potentials.  Returns the number of synaptic events."""
    Cs, Hs, Ws, Cr = geo[G_CS], geo[G_HS], geo[G_WS], geo[G_CR]
    st, pad = geo[G_STRIDE], geo[G_PAD]
    tab = np.zeros((Hs * Ws, 4), np.int64)       # walk starts (neurosim.connectivity.site_table)
    for y in range(Hs):
        for x in range(Ws):
            tab[y * Ws + x, 0] = (y + pad) % st
            tab[y * Ws + x, 1] = (y + pad) // st
            tab[y * Ws + x, 2] = (x + pad) % st
            tab[y * Ws + x, 3] = (x + pad) // st
    nk = geo[G_KH] * geo[G_KW]
    sites = np.zeros(nk, np.int64)
    offs = np.zeros(nk, np.int64)
    gch = np.zeros(Cs, np.int64)
    gval = np.zeros(Cs, out.dtype)
    mark = np.zeros(1, np.uint8)
    tlist = np.zeros(1, np.int64)
    tcount = np.zeros(1, np.int64)
    n = 0
    e = 0
    ne = spike_idx.shape[0]
    while e < ne:
        site = spike_idx[e] // Cs
        ng = 0
        while e < ne and spike_idx[e] // Cs == site and ng < Cs:
            gch[ng] = spike_idx[e] - site * Cs
            ng += 1
            e += 1
        m = conv_scatter_group(out, 0, wf, 0, geo, tab, False, site, gch, gval, ng, False,
                               False, mark, tlist, tcount, 0, 0, sites, offs)
        n += m * Cr * ng
    return n
