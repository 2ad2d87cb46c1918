"""Deliveries: the events of a sender's ring slot added to a projection's input buffer
(the ``deliver delayed`` and ``deliver same-step`` steps of the schedule, :mod:`.schedule`).

:func:`_deliver` picks the delivery of the projection's kind: dense (:func:`_deliver_dense`),
CSR (:func:`.scatter.csr_scatter`), conv / conv-transpose (:func:`_deliver_conv`,
:func:`_deliver_conv_bits`) or pool (:func:`.scatter.pool_scatter_group`).  Every
receiver gets its events in increasing sender index, one rounding per event and receiver
(docs/hdf5-schema.md, "Arithmetic").  Counting: ``sent[j]`` counts the events delivered
by sender neuron ``j`` through each projection (backward: ``sent`` +1 events, ``sent_neg``
-1 events).
"""
import numba
import numpy as np

from ..config import NJIT_NORT
from .layout import (K_CONV_DOWN, K_CONV_UP, K_DENSE, K_POOL_UP, G_CR, G_CS, G_HR, G_HS, G_KH,
                     G_KW, G_WR, G_WS)
from .scatter import _mark, csr_scatter, dense_scatter_group, pool_scatter_group, rows_acc
from .simd import ctz64, vadd, vlanes, vloadm, vstorem

#: a forward conv delivery from senders of at most 64 channels whose sender sites carry
#: fewer than GATHER_GROUP events each on average, and whose (sender site, kernel offset)
#: pairs number at least GATHER_PAIRS per receiver site, runs receiver by receiver
#: (:func:`_deliver_conv_bits`), every other conv delivery offset by offset
#: (:func:`_deliver_conv`).  Results are the same either way.  (A receiver-major path for
#: weighted backward events, with a list of rows per receiver, measured no faster than
#: offset-major on ConvNet-F's backward phase -- 0.97x, within noise -- and was dropped
#: for compile time.)
GATHER_GROUP = 4
GATHER_PAIRS = 4


@numba.njit(**NJIT_NORT)
def _deliver_dense(ri, rv, backward, buf, boff, W, woff, n_r, sent, sent_neg, mrow, masked,
                   scale, gch, gval):
    """Dense deliveries of the ring events ``ri``/``rv`` (see :func:`_deliver`; ``sent``,
    ``sent_neg`` and ``mrow`` start at the projection's sender / mask offset): the rows of
    the events summed four at a time in registers, in event order
    (:func:`.scatter.dense_scatter_group`).  A function of its own with few arguments
    (inside :func:`_deliver` the event loop compiled to several times the instructions).
    Returns whether any event was delivered."""
    n_ev = ri.shape[0]
    cap = gch.shape[0]
    if not backward:             # unweighted: val = scale = 1
        e = 0
        while e < n_ev:
            ng = min(n_ev - e, cap)
            for i in range(np.uint64(ng)):
                j = ri[np.uint64(e) + i]
                sent[j] += 1
                gch[i] = j
            dense_scatter_group(buf, boff, W, woff, n_r, gch, gval, ng, False)
            e += ng
        return n_ev > 0
    hit = False
    ng = 0
    for e in range(n_ev):
        j = np.int64(ri[e])
        sign = rv[e]
        val = scale if sign > 0 else -scale
        if masked:
            val = val * mrow[j]
            if val == 0:
                continue
        if sign > 0:
            sent[j] += 1
        else:
            sent_neg[j] += 1
        gch[ng] = j
        gval[ng] = val
        ng += 1
        if ng == cap:
            dense_scatter_group(buf, boff, W, woff, n_r, gch, gval, ng, True)
            hit = True
            ng = 0
    if ng > 0:
        dense_scatter_group(buf, boff, W, woff, n_r, gch, gval, ng, True)
        hit = True
    return hit


@numba.njit(**NJIT_NORT)
def _deliver_conv(buf, boff, W, woff, Cs, Cr, S, nk, up, rt, gsite, gpos, na, gch, gval,
                  weighted, do_mark, mark, tlist, tcount, r, so):
    """Conv / conv-transpose deliveries of one step, offset-major: for each kernel offset,
    each sender site with events (``gsite[a]``, its events ``gpos[a] .. gpos[a+1]-1`` in
    ``gch`` / ``gval``) adds the rows of its channels to its receiver through that offset
    (``rt[k*S + s]``, :func:`neurosim.connectivity.conv.receiver_table`), summed in
    registers (:func:`.scatter.rows_acc`).  One offset's weights (``Cs x Cr``) stay in the
    L1 cache while every sender uses them, where a walk over each sender's offsets cycled
    the whole kernel through it (ConvNet-F's 400 KB per conv) for every sender.

    A receiver still gets its events in increasing sender index: through offset k it
    hears one sender, and the offsets run in the order of their senders -- increasing
    for a conv (sender row ``o*st - pad + k``), decreasing for a conv-transpose
    (``(o + pad - k) / st``); within a sender its channels increase.  So every sum is the
    documented one (docs/hdf5-schema.md, "Arithmetic")."""
    blk = Cs * Cr
    for kk in range(nk):
        k = nk - 1 - kk if up else kk
        wb = woff + k * blk
        rk = rt[k * S:]
        for a in range(na):
            o = rk[gsite[a]]
            if o < 0:
                continue
            g0 = gpos[a]
            rows_acc(buf, boff + o * Cr, W, wb, Cr, gch, gval, g0, gpos[a + 1] - g0, weighted)
            if do_mark:
                _mark(o, mark, tlist, tcount, r, so)


@numba.njit(**NJIT_NORT)
def _deliver_conv_bits(buf, boff, W, woff, Cs, Cr, S, R, nk, up, rt, gsite, gpos, na, gch,
                       do_mark, mark, tlist, tcount, r, so, gbits):
    """:func:`_deliver_conv` receiver by receiver, for forward steps whose sender sites
    carry few events each (LeNet's second conv: ~2 of 15 channels) and senders of at most
    64 channels: each sender site's spiking channels become the bits of one word
    (``gbits``), and each receiver site walks its offsets (in the order of their
    senders) and the set bits of each sender's word (channels increasing), adding every
    weight row straight into registers (:mod:`.simd`): its buffer row is read and
    written once per step instead of once per sender.  Same sums, same order."""
    for a in range(na):
        m = np.uint64(0)
        for e in range(gpos[a], gpos[a + 1]):
            m |= np.uint64(1) << np.uint64(gch[e])
        gbits[gsite[a]] = m
    st = rt[nk * S:]
    uR = np.uint64(R)
    L = vlanes(buf)
    ucs = np.uint64(Cs)
    ucr = np.uint64(Cr)
    for o in range(uR):
        t = np.uint64(boff) + o * ucr
        hit = False
        k0 = 0
        while k0 < Cr:
            n0 = Cr - k0
            n1 = n0 - L
            n2 = n1 - L
            n3 = n2 - L
            u = t + np.uint64(k0)
            a0 = vloadm(buf, u, n0)
            a1 = vloadm(buf, u + np.uint64(L), n1)
            a2 = vloadm(buf, u + np.uint64(2 * L), n2)
            a3 = vloadm(buf, u + np.uint64(3 * L), n3)
            for kk in range(nk):
                k = np.uint64(nk - 1 - kk if up else kk)
                s = st[k * uR + o]
                if s < 0:
                    continue
                m = gbits[np.uint64(s)]
                base = np.uint64(woff + k0) + k * ucs * ucr
                while m != 0:
                    rr = base + ctz64(m) * ucr
                    m &= m - np.uint64(1)
                    a0 = vadd(a0, vloadm(W, rr, n0))
                    a1 = vadd(a1, vloadm(W, rr + np.uint64(L), n1))
                    a2 = vadd(a2, vloadm(W, rr + np.uint64(2 * L), n2))
                    a3 = vadd(a3, vloadm(W, rr + np.uint64(3 * L), n3))
                    hit = True
            vstorem(buf, u, a0, n0)
            vstorem(buf, u + np.uint64(L), a1, n1)
            vstorem(buf, u + np.uint64(2 * L), a2, n2)
            vstorem(buf, u + np.uint64(3 * L), a3, n3)
            k0 += 4 * L
        if hit and do_mark:
            _mark(np.int64(o), mark, tlist, tcount, r, so)
    for a in range(na):
        gbits[gsite[a]] = np.uint64(0)


@numba.njit(**NJIT_NORT)
def _deliver(q, b, e0, e1, backward, net, run, out, sc):
    """Deliver the ring events ``e0:e1`` of projection q's sender.

    Backward events carry ``±scale`` (× the sender-side mask); forward events are
    unweighted.  Conv and pool events of one sender site (consecutive in the event list:
    spikes are collected site by site) are delivered together (``gch``/``gval``)."""
    kind = net.proj_kind[q]
    r = net.proj_dst[q]
    boff = net.proj_boff[q]
    woff = net.proj_woff[q]
    soff = net.proj_soff[q]
    moff = net.proj_moff[q]
    scale = net.proj_scale[q]
    so = net.pop_site_off[r]
    do_mark = sc.dense_pop[r] == 0
    sent = out.sent
    sent_neg = out.sent_neg
    ev_idx = sc.ring_idx
    ev_val = sc.ring_val
    if kind >= K_CONV_DOWN:      # conv, conv-transpose, pool: grouped by sender site
        gch = sc.gch
        gval = sc.gval
        geo = net.proj_geo[q]
        conv = kind == K_CONV_DOWN or kind == K_CONV_UP
        up = kind == K_CONV_UP or kind == K_POOL_UP
        # unsigned positions and indices: no negative-index wrap-around per event
        srow = sent[b, soff:]
        snrow = sent_neg[b, soff:]
        rsite = sc.ring_site
        rch = sc.ring_ch
        gsite = sc.gsite
        gpos = sc.gpos
        tab = net.tabs[net.proj_toff[q]:]
        e = np.uint64(e0)
        ee = np.uint64(e1)
        na = 0                   # conv: sender sites with events so far
        pos = 0                  # conv: events kept so far (gch / gval)
        while e < ee:
            site = rsite[e]
            ng = pos if conv else 0
            while e < ee and rsite[e] == site:
                j = np.uint64(ev_idx[e])
                if backward:
                    sign = ev_val[e]
                    val = scale if sign > 0 else -scale
                    if moff >= 0:
                        val = val * run.masks[b, np.uint64(moff) + j]
                    if val != 0:
                        if sign > 0:
                            srow[j] += 1
                        else:
                            snrow[j] += 1
                        gch[np.uint64(ng)] = rch[e]
                        gval[np.uint64(ng)] = val
                        ng += 1
                else:
                    srow[j] += 1
                    gch[np.uint64(ng)] = rch[e]
                    ng += 1
                e += np.uint64(1)
            if conv:
                if ng > pos:
                    gsite[na] = site
                    gpos[na] = pos
                    na += 1
                    pos = ng
            elif ng > 0:
                pool_scatter_group(sc.buf, boff, net.weights[woff], geo, tab, up, site, gch,
                                   gval, ng, backward, do_mark, sc.mark, sc.tlist, sc.tcount,
                                   r, so, sc.wsite, sc.woffs)
        if conv and na > 0:
            gpos[na] = pos
            nk = geo[G_KH] * geo[G_KW]
            S = geo[G_HS] * geo[G_WS]
            R = geo[G_HR] * geo[G_WR]
            rt = net.rtab[net.proj_roff[q]:]
            if not backward and geo[G_CS] <= 64 and pos < GATHER_GROUP * na and \
                    na * nk >= GATHER_PAIRS * R:
                _deliver_conv_bits(sc.buf, boff, net.weights, woff, geo[G_CS], geo[G_CR], S, R,
                                   nk, up, rt, gsite, gpos, na, gch, do_mark, sc.mark,
                                   sc.tlist, sc.tcount, r, so, sc.gbits)
            else:
                _deliver_conv(sc.buf, boff, net.weights, woff, geo[G_CS], geo[G_CR], S, nk, up,
                              rt, gsite, gpos, na, gch, gval, backward, do_mark, sc.mark,
                              sc.tlist, sc.tcount, r, so)
        return
    if kind == K_DENSE:
        mrow = run.masks[b, moff:] if moff >= 0 else run.masks[b]
        if _deliver_dense(ev_idx[e0:e1], ev_val[e0:e1], backward, sc.buf, boff, net.weights,
                          woff, net.pop_off[r + 1] - net.pop_off[r], sent[b, soff:],
                          sent_neg[b, soff:], mrow, moff >= 0, scale, sc.gch, sc.gval):
            sc.allflag[r] = 1
        return
    srow = sent[b, soff:]
    snrow = sent_neg[b, soff:]
    for e in range(np.uint64(e0), np.uint64(e1)):
        j = np.uint64(ev_idx[e])
        val = scale
        if backward:
            sign = ev_val[e]
            if sign < 0:
                val = -scale
            if moff >= 0:
                val = val * run.masks[b, np.uint64(moff) + j]
                if val == 0:
                    continue
            if sign > 0:
                srow[j] += 1
            else:
                snrow[j] += 1
        else:
            srow[j] += 1
        csr_scatter(sc.buf, boff, net.weights, woff, net.indptr, net.proj_ioff[q],
                    net.indices, net.proj_xoff[q], np.int64(j), val, backward, do_mark, sc.mark,
                    sc.tlist, sc.tcount, r, so, net.pop_site[r])
