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
from .simd import vadd, vlanes, vloadm, vmul, vsplat, vstorem
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
    ``gval``): row ``j`` of the (n_sender, n_r) weights per event, the rows summed in
    registers before one store (:func:`rows_acc`), one rounding per event and receiver."""
    rows_acc(buf, boff, W, woff, n_r, gj, gval, 0, ng, weighted)


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
def rows_acc(buf, tb, W, wbase, Cr, gch, gval, g0, ng, weighted):
    """buf[tb:tb+Cr] += (gval[i] *) W[wbase + gch[i]*Cr : ... + Cr], for i = g0 .. g0+ng-1
    in turn: the rows of a group of events that reach the same receiving neurons (one
    sender site's channels through one kernel offset, or the events of a dense
    delivery).

    The row is cut into blocks of four vectors (:mod:`.simd`, 64 float32 / 32 float64
    lanes, the last vector of the row masked); per block the buffer is loaded once, every
    row of the group is added in registers, and the block is stored once.  The additions
    stay in event order, ``((buf + r0) + r1) + ...`` (weighted: ``+ (v * r)``), each
    rounded in the dtype: exactly what adding the events one by one gives.  A block that
    needs only one or two vectors uses a loop of one or two (no masked-off work)."""
    L = vlanes(buf)
    t = np.uint64(tb)
    ucr = np.uint64(Cr)
    k0 = 0
    while k0 < Cr:
        n0 = Cr - k0
        u = t + np.uint64(k0)
        if n0 <= L:
            a0 = vloadm(buf, u, n0)
            for i in range(g0, g0 + ng):
                r = np.uint64(wbase + k0) + np.uint64(gch[i]) * ucr
                if weighted:
                    a0 = vadd(a0, vmul(vsplat(gval[i], buf), vloadm(W, r, n0)))
                else:
                    a0 = vadd(a0, vloadm(W, r, n0))
            vstorem(buf, u, a0, n0)
        elif n0 <= 2 * L:
            n1 = n0 - L
            u1 = u + np.uint64(L)
            a0 = vloadm(buf, u, L)
            a1 = vloadm(buf, u1, n1)
            for i in range(g0, g0 + ng):
                r = np.uint64(wbase + k0) + np.uint64(gch[i]) * ucr
                if weighted:
                    s = vsplat(gval[i], buf)
                    a0 = vadd(a0, vmul(s, vloadm(W, r, L)))
                    a1 = vadd(a1, vmul(s, vloadm(W, r + np.uint64(L), n1)))
                else:
                    a0 = vadd(a0, vloadm(W, r, L))
                    a1 = vadd(a1, vloadm(W, r + np.uint64(L), n1))
            vstorem(buf, u, a0, L)
            vstorem(buf, u1, a1, n1)
        else:
            n2 = n0 - 2 * L
            n3 = n2 - L
            u1 = u + np.uint64(L)
            u2 = u1 + np.uint64(L)
            u3 = u2 + np.uint64(L)
            a0 = vloadm(buf, u, L)
            a1 = vloadm(buf, u1, L)
            a2 = vloadm(buf, u2, n2)
            a3 = vloadm(buf, u3, n3)
            for i in range(g0, g0 + ng):
                r = np.uint64(wbase + k0) + np.uint64(gch[i]) * ucr
                if weighted:
                    s = vsplat(gval[i], buf)
                    a0 = vadd(a0, vmul(s, vloadm(W, r, L)))
                    a1 = vadd(a1, vmul(s, vloadm(W, r + np.uint64(L), L)))
                    a2 = vadd(a2, vmul(s, vloadm(W, r + np.uint64(2 * L), n2)))
                    a3 = vadd(a3, vmul(s, vloadm(W, r + np.uint64(3 * L), n3)))
                else:
                    a0 = vadd(a0, vloadm(W, r, L))
                    a1 = vadd(a1, vloadm(W, r + np.uint64(L), L))
                    a2 = vadd(a2, vloadm(W, r + np.uint64(2 * L), n2))
                    a3 = vadd(a3, vloadm(W, r + np.uint64(3 * L), n3))
            vstorem(buf, u, a0, L)
            vstorem(buf, u1, a1, L)
            vstorem(buf, u2, a2, n2)
            vstorem(buf, u3, a3, n3)
        k0 += 4 * L


@numba.njit(**NJIT_INLINE)
def conv_scatter_group(buf, boff, W, woff, geo, tab, up, site_s, gch, gval, ng, weighted,
                       do_mark, mark, tlist, tcount, p, site_off, sites, offs):
    """Conv (``up`` False) or transposed-conv (``up`` True) scatter of ``ng`` events of
    one sender site (channels ``gch``, values ``gval``): one walk (:mod:`.walk`), then per
    receiving site the rows of the events summed in registers (:func:`rows_acc`).
    Returns the number of receiving sites."""
    Cs, Cr = geo[G_CS], geo[G_CR]
    n = up_walk(geo, tab, site_s, sites, offs) if up else down_walk(geo, tab, site_s, sites, offs)
    for i in range(n):
        site = sites[i]
        rows_acc(buf, boff + site * Cr, W, woff + offs[i] * Cs * Cr, Cr, gch, gval, 0, ng, weighted)
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
