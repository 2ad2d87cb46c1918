"""The event-driven engine: one phase (forward or backward) for a batch of samples.

Samples are independent; ``run_phase`` runs one range of them, and the caller
(:func:`neurosim.engine._alloc_run`) runs disjoint ranges on threads, each call owning
its scratch memory (:class:`.Scratch`), so no two threads ever write the same location.
The compiled network, the run's drive and
its outputs arrive as the named bundles of :mod:`.layout`.

Per sample and step ``t`` (schedule: integrate -> threshold -> reset -> leak -> propagate):

1. every population's *touched-site list* is seeded with the sites that carry a constant
   current and the sites left above threshold (or refractory) by the previous step;
2. projections of delay ``d >= 1`` deliver the events their sender emitted at ``t - d``;
3. populations are updated in schedule order; each one
   a. updates the neurons of its touched sites (all sites when a dense projection hit it,
      or when it must be updated densely: CubaLIF, time-varying current),
   b. appends its spikes to its ring buffer (slot ``t % depth``),
   c. delivers them at once through its delay-0 projections.

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
"""
import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from ..config import NJIT, NJIT_INLINE, NJIT_NORT
from .cuba import MAX_FAST_PORTS, cuba_population, cuba_site
from .layout import (FP_LEAK, FP_SUB, FP_VRESET, FP_VTH, IP_NPORTS, IP_RESET, IP_TREF, K_CONV_DOWN,
                     K_CONV_UP, K_CSR, K_DENSE, K_POOL_UP, G_CR, G_CS, G_HR, G_HS, G_KH, G_KW,
                     G_PAD, G_STRIDE, G_WR, G_WS, M_CUBA, M_INPUT, M_LIF, M_SOURCE,
                     M_TERNARY, Scratch)
from .neurons import leak, leak_steps, lif_fire, lif_update, ternary_fire, ternary_update
from .simd import compact8, ctz64, vadd, vlanes, vloadm, vstorem
from .scatter import (_mark, conv_scatter_group, csr_scatter, dense_scatter_group,
                      pool_scatter_group, rows_acc)

# nonzero-byte mask of a 64-bit word of int8 spikes (see _update_block)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH1 = np.uint64(0x8080808080808080)
_GATHER = np.uint64(0x0102040810204080)
_POPCOUNT = np.array([bin(m).count("1") for m in range(256)], np.int64)
_LANES = np.array([[i for i in range(8) if m >> i & 1] + [0] * (8 - bin(m).count("1"))
                   for m in range(256)], np.int64)
_LANES32 = _LANES.astype(np.int32)
#: a touched population with at least 1/DENSE_SHARE of its sites touched is updated as one
#: block (no per-site overhead); otherwise each run of consecutive touched sites is one
#: block.  Results and counts are the same either way.  The backward phase uses
#: DENSE_SHARE_BWD = 1 (one block only when every site is touched): its populations are
#: touched in short runs, and updating only those was 9-12 % faster for ConvNet-F's and
#: LeNet's backward phase, while the forward phase's busier layers measured ~2 % slower
#: (benchmarks/README.md, "Touched runs").
DENSE_SHARE = 4
DENSE_SHARE_BWD = 1
#: a touched list covering at least 1/SCAN_SHARE of the sites is put in order by a scan of
#: the marks instead of a sort.
SCAN_SHARE = 16
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


@numba.njit(**NJIT_INLINE)
def _gather_site(p, g0, j0, ssz, t, b, model, net, run, sc, cur):
    """Input current of the ``ssz`` neurons of one site into ``cur[0:ssz]``: constant, then
    time-varying, then each incoming projection's buffer (× its mask, forward only) in
    declaration order; the buffers are cleared.  CubaLIF: the buffers go to the receptor
    currents instead (``cur`` holds the constant part only)."""
    tvo = run.tv_off[p]
    for k in range(ssz):
        I = run.const[b, g0 + k]
        if tvo >= 0:
            I = I + run.tv[b, t, tvo + j0 + k]
        cur[k] = I
    for a in range(net.in_ptr[p], net.in_ptr[p + 1]):
        q = net.in_proj[a]
        bo = net.proj_boff[q] + j0
        mo = net.proj_moff[q]
        for k in range(ssz):
            x = sc.buf[bo + k]
            if x != 0:
                if mo >= 0 and model != M_TERNARY:
                    x = x * run.masks[b, mo + j0 + k]
                if model == M_CUBA:
                    port = net.proj_port[q]
                    sc.isyn[port, g0 + k] = sc.isyn[port, g0 + k] + x
                else:
                    cur[k] = cur[k] + x
                sc.buf[bo + k] = 0


@numba.njit(**NJIT_INLINE)
def _push(sc, base, rc, jl, val, site, ch):
    """Append one spike to the ring at ``base``; returns the new ring count."""
    sc.ring_idx[base + rc] = jl
    sc.ring_val[base + rc] = val
    sc.ring_site[base + rc] = site
    sc.ring_ch[base + rc] = ch
    return rc + 1


@numba.njit(**NJIT_NORT)
def _update_site(p, site, t, b, model, net, run, out, sc, last, has_leak, base, rc, rec_off):
    """Update the neurons of one site (any model, refractoriness included); returns
    (ring count, carry: some neuron is left at/above threshold or refractory)."""
    carry = False
    ssz = net.pop_site[p]
    off = net.pop_off[p]
    j0 = site * ssz
    g0 = off + j0
    fp = net.pop_fp
    lam = fp[p, FP_LEAK]
    v_th = fp[p, FP_VTH]
    gap = t - last[site] - 1 if last[site] >= 0 else 0
    last[site] = t
    cur = sc.cur
    _gather_site(p, g0, j0, ssz, t, b, model, net, run, sc, cur)
    if model == M_CUBA:
        for k in range(ssz):
            if cuba_site(p, g0 + k, cur[k], net, sc):
                rc = _push(sc, base, rc, j0 + k, 1, site, k)
                out.counts[b, g0 + k] += 1
                if rec_off >= 0:
                    out.rec[b, t, rec_off + j0 + k] = 1
        return rc, carry
    wc = out.wcount.shape[1] > 0 and has_leak
    for k in range(ssz):
        g = g0 + k
        v = sc.u[g]
        if has_leak and gap > 0:
            v = leak_steps(v, lam, gap)
            if wc:
                out.wcount[b, g] = leak_steps(out.wcount[b, g], net.pop_lam[p], gap)
        if model == M_LIF:
            v, r, s = lif_update(v, sc.ref[g], cur[k], v_th, fp[p, FP_SUB], lam,
                                 net.pop_ip[p, IP_RESET] == 1, fp[p, FP_VRESET],
                                 net.pop_ip[p, IP_TREF])
            sc.ref[g] = r
            qv = np.int8(s)
            if v >= v_th or r > 0:
                carry = True
        else:  # ternary
            v, qv = ternary_update(v, cur[k], v_th, fp[p, FP_SUB], lam)
            if v >= v_th or v <= -v_th:
                carry = True
        sc.u[g] = v
        if wc:
            out.wcount[b, g] = out.wcount[b, g] * net.pop_lam[p] + qv
        if qv != 0:
            if qv > 0:
                out.counts[b, g] += 1
            else:
                out.counts_neg[b, g] += 1
            if rec_off >= 0:
                out.rec[b, t, rec_off + j0 + k] = qv
            rc = _push(sc, base, rc, j0 + k, qv, site, k)
    return rc, carry


@numba.njit(**NJIT_INLINE)
def _putu(ri, rv, rs, rch, u, jl, val, site, ch):
    """:func:`_push` on the ring's arrays from the slot's start, at the unsigned position
    ``u``; returns ``u + 1``."""
    ri[u] = jl
    rv[u] = val
    rs[u] = site
    rch[u] = ch
    return u + np.uint64(1)


@numba.njit(**NJIT_NORT)
def _emit_lean(spk, n, nz, j0, cpos, rrow, rec_off, ri, rc):
    """:func:`_emit_spikes` for a forward-phase population whose projections are all
    dense or CSR: their deliveries read only the neuron index of a spike (forward spikes
    are +1), so only ``ri`` is written, and no -1 count is kept.  Same ring order and
    counts.  Silent 64-bit words (eight neurons) are skipped; a word with a spike is
    compacted without a branch (each lane's index is stored, the position advances by
    the lane's 0/1 byte: every store lands at or before the lane's own slot in the
    ring).  The counts as one vectorised add when at least one neuron in eight spikes,
    else per lane of the nonzero words."""
    u = np.uint64(rc)
    few = nz * 8 < np.int64(n)
    if not few:
        cb = np.uint64(j0)
        for kk in range(n):
            cpos[cb + kk] += spk[kk]
    nw = n // np.uint64(8)
    words = spk[:nw * np.uint64(8)].view(np.uint64)
    rec = rec_off >= 0
    for wi in range(nw):
        w = words[wi]
        if w != 0:
            kb = j0 + np.int64(wi * np.uint64(8))
            for i in range(8):
                f = (w >> np.uint64(8 * i)) & np.uint64(1)
                ri[u] = kb + i
                u += f
                if few:
                    cpos[kb + i] += np.int32(f)
                if rec:
                    rrow[rec_off + kb + i] = np.int8(f)
    for kk in range(nw * np.uint64(8), n):
        if spk[kk] != 0:
            k = j0 + np.int64(kk)
            ri[u] = k
            u += np.uint64(1)
            if few:
                cpos[k] += 1
            if rec:
                rrow[rec_off + k] = 1
    return np.int64(u)


@numba.njit(**NJIT_INLINE)
def _lean(p, backward, net):
    """Whether population p's spikes may be emitted by :func:`_emit_lean` (forward phase,
    no conv / pool projection out of p: nothing reads a spike's value, site or channel)."""
    if backward:
        return False
    for a in range(net.out_ptr[p], net.out_ptr[p + 1]):
        if net.proj_kind[net.out_proj[a]] >= K_CONV_DOWN:
            return False
    return True


@numba.njit(**NJIT_NORT)
def _emit_spikes(spk, n, nz, s0, ssz, j0, cpos, cneg, rrow, rec_off, ri, rv, rs, rch, rc,
                 pos_only):
    """Append the ``nz`` spikes of ``spk[0:n]`` (neurons ``j0 ..`` of a block starting at
    site ``s0``) to the ring (``ri, rv, rs, rch`` from its slot, ``rc`` used) in neuron
    order, count them (``cpos``/``cneg``: the population's counts) and record them
    (``rrow``, when ``rec_off >= 0``); returns the ring count.  A function of its own with
    few arguments: inlined into the block update, its loops compiled to several times
    the instructions (ad-hoc timings: ~14 ns per spike there, a few ns here).  The ring
    position is unsigned inside (no negative-index wrap-around per store).  ``pos_only``:
    every spike is +1 (forward phase, sources), which lets busy blocks store eight
    records at once (:func:`.simd.compact8`)."""
    u = np.uint64(rc)
    if ssz == 1:
        # one neuron per site: eight neurons per 64-bit word, a bit mask of the nonzero
        # bytes, then only its set bits (lane tables); counts without a branch on the sign
        nw = n // np.uint64(8)
        words = spk[:nw * np.uint64(8)].view(np.uint64)
        for wi in range(nw):
            w = words[wi]
            if w != 0:
                x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                kb = wi * np.uint64(8)
                for i in range(_POPCOUNT[m]):
                    kk = kb + np.uint64(_LANES[m, i])
                    qv = spk[kk]
                    k = j0 + np.int64(kk)
                    u = _putu(ri, rv, rs, rch, u, k, qv, k, 0)
                    cpos[k] += qv > 0
                    cneg[k] += qv < 0
                    if rec_off >= 0:
                        rrow[rec_off + k] = qv
        for kk in range(nw * np.uint64(8), n):
            qv = spk[kk]
            if qv != 0:
                k = j0 + np.int64(kk)
                u = _putu(ri, rv, rs, rch, u, k, qv, k, 0)
                cpos[k] += qv > 0
                cneg[k] += qv < 0
                if rec_off >= 0:
                    rrow[rec_off + k] = qv
    else:
        # several neurons per site: the same word scan, tracking (site, channel) of each
        # word's first lane without a division (branch-free when a site holds >= 8
        # neurons: a lane then wraps at most once); the counts as one vectorised add
        # per sign when at least one neuron in eight spikes, else per spike
        few = nz * 8 < np.int64(n)
        if not few:
            cb = np.uint64(j0)
            for kk in range(n):
                qv = spk[kk]
                cpos[cb + kk] += qv > 0
                cneg[cb + kk] += qv < 0
        big = ssz >= 8
        nw = n // np.uint64(8)
        words = spk[:nw * np.uint64(8)].view(np.uint64)
        s = s0
        c0 = 0
        if big and not few and pos_only and rec_off < 0:
            # busy block of 0/1 spikes: each nonzero word's records are written as eight
            # lanes at once (simd.compact8: its set lanes from the lane table, the site
            # and channel wrapped without a branch; a store never lands past the last
            # lane's own slot), the position advanced by the word's spike count
            for wi in range(nw):
                w = words[wi]
                if w != 0:
                    x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                    m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                    compact8(ri, rv, rs, rch, u, _LANES32, m,
                             j0 + np.int64(wi * np.uint64(8)), c0, s, ssz)
                    u += np.uint64(_POPCOUNT[m])
                c0 += 8
                wrap = np.int64(c0 >= ssz)
                c0 -= ssz * wrap
                s += wrap
        elif big and not few:
            # busy block: a nonzero word is compacted without a branch (every lane's
            # record is stored, the position advances by its 0/1 flag; a store never
            # lands past the lane's own slot), as in _emit_lean
            rec = rec_off >= 0
            for wi in range(nw):
                w = words[wi]
                if w != 0:
                    kb = wi * np.uint64(8)
                    for i in range(8):
                        c = c0 + i
                        wrap = np.int64(c >= ssz)
                        kk = kb + np.uint64(i)
                        qv = spk[kk]
                        k = j0 + np.int64(kk)
                        ri[u] = k
                        rv[u] = qv
                        rs[u] = s + wrap
                        rch[u] = c - ssz * wrap
                        u += np.uint64(qv != 0)
                        if rec:
                            rrow[rec_off + k] = qv
                c0 += 8
                wrap = np.int64(c0 >= ssz)
                c0 -= ssz * wrap
                s += wrap
        else:                      # the lanes of the set bits only
            for wi in range(nw):
                w = words[wi]
                if w != 0:
                    x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                    m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                    kb = wi * np.uint64(8)
                    for i in range(_POPCOUNT[m]):
                        lane = _LANES[m, i]
                        c = c0 + lane
                        ss = s
                        if big:
                            wrap = np.int64(c >= ssz)
                            c -= ssz * wrap
                            ss += wrap
                        else:
                            while c >= ssz:
                                c -= ssz
                                ss += 1
                        kk = kb + np.uint64(lane)
                        qv = spk[kk]
                        k = j0 + np.int64(kk)
                        u = _putu(ri, rv, rs, rch, u, k, qv, ss, c)
                        if few:
                            cpos[k] += qv > 0
                            cneg[k] += qv < 0
                        if rec_off >= 0:
                            rrow[rec_off + k] = qv
                c0 += 8
                if big:
                    wrap = np.int64(c0 >= ssz)
                    c0 -= ssz * wrap
                    s += wrap
                else:
                    while c0 >= ssz:
                        c0 -= ssz
                        s += 1
        for kk in range(nw * np.uint64(8), n):
            qv = spk[kk]
            if qv != 0:
                k = j0 + np.int64(kk)
                u = _putu(ri, rv, rs, rch, u, k, qv, k // ssz, k - (k // ssz) * ssz)
                if few:
                    cpos[k] += qv > 0
                    cneg[k] += qv < 0
                if rec_off >= 0:
                    rrow[rec_off + k] = qv
    return np.int64(u)


@numba.njit(**NJIT_INLINE)
def _update_block(model, p, s0, s1, t, b, net, run, out, sc, last, has_leak, by_value, base,
                  rc, rec_off, keep_carry):
    """Update the contiguous sites [s0, s1) of an LIF (no refractoriness) or ternary
    population in separate loops over its neurons, so that the arithmetic vectorises:
    gather inputs; integrate, threshold, reset, leak; collect spikes and carries.
    Same functions (:mod:`.neurons`), in the same order, as :func:`_update_site`.
    Returns the ring count."""
    ssz = net.pop_site[p]
    off = net.pop_off[p]
    so = net.pop_site_off[p]
    j0 = s0 * ssz
    g0 = off + j0
    n = np.uint64((s1 - s0) * ssz)
    fp = net.pop_fp
    v_th = fp[p, FP_VTH]
    sub = fp[p, FP_SUB]
    lam = fp[p, FP_LEAK]
    v_reset = fp[p, FP_VRESET]
    ternary = model == M_TERNARY
    cur = sc.cur
    spk = sc.spk
    u = sc.u
    buf = sc.buf
    masks = run.masks
    crow = run.const[b]
    c0 = np.uint64(g0)
    for k in range(n):
        cur[k] = crow[c0 + k]
    if run.tv_off[p] >= 0:
        trow = run.tv[b, t]
        t0 = np.uint64(run.tv_off[p] + j0)
        for k in range(n):
            cur[k] = cur[k] + trow[t0 + k]
    for a in range(net.in_ptr[p], net.in_ptr[p + 1]):
        q = net.in_proj[a]
        bo = np.uint64(net.proj_boff[q] + j0)
        if net.proj_moff[q] >= 0 and not ternary:
            mo = np.uint64(net.proj_moff[q] + j0)
            for k in range(n):
                cur[k] = cur[k] + buf[bo + k] * masks[b, mo + k]
                buf[bo + k] = 0
        else:
            for k in range(n):
                cur[k] = cur[k] + buf[bo + k]
                buf[bo + k] = 0
    ug = np.uint64(g0)
    wc = out.wcount.shape[1] > 0 and has_leak
    wrow = out.wcount[b]
    if has_leak:                 # `last` only serves the lazy leak
        for s in range(s0, s1):
            gap = t - last[s] - 1 if last[s] >= 0 else 0
            last[s] = t
            if gap > 0:
                for k in range(s * ssz, (s + 1) * ssz):
                    u[off + k] = leak_steps(u[off + k], lam, gap)
                    if wc:
                        wrow[off + k] = leak_steps(wrow[off + k], net.pop_lam[p], gap)
    nz = 0                       # spikes of this block
    nc = 0                       # neurons left at/above threshold (carry)
    if ternary:
        for k in range(n):
            v, qv = ternary_fire(u[ug + k], cur[k], v_th, sub)
            v = leak(v, lam)
            u[ug + k] = v
            spk[k] = qv
            nz += qv != 0
            nc += (v >= v_th) | (v <= -v_th)
    else:
        for k in range(n):
            v, f = lif_fire(u[ug + k], cur[k], v_th, sub, by_value, v_reset)
            v = leak(v, lam)
            u[ug + k] = v
            spk[k] = f
            nz += f
            nc += v >= v_th
    if wc:
        lw = net.pop_lam[p]
        for k in range(n):
            wrow[ug + k] = wrow[ug + k] * lw + spk[k]
    if nz > 0:
        rrow = out.rec[b, t] if rec_off >= 0 else out.rec[0, 0]
        if model != M_TERNARY and _lean(p, False, net):
            rc = _emit_lean(spk, n, nz, j0, out.counts[b, off:], rrow, rec_off,
                            sc.ring_idx[base:], rc)
        else:
            rc = _emit_spikes(spk, n, nz, s0, ssz, j0, out.counts[b, off:],
                              out.counts_neg[b, off:], rrow, rec_off, sc.ring_idx[base:],
                              sc.ring_val[base:], sc.ring_site[base:], sc.ring_ch[base:], rc,
                              not ternary)
    if keep_carry and nc > 0:    # densely updated populations need no carry list
        for s in range(s0, s1):
            carry = False
            for k in range(s * ssz, (s + 1) * ssz):
                v = u[off + k]
                if v >= v_th or (ternary and v <= -v_th):
                    carry = True
            if carry:
                sc.clist[so + sc.ccount[p]] = s
                sc.ccount[p] += 1
    return rc


@numba.njit(**NJIT_NORT)
def _update_fast(model, p, use_all, ns, t, b, net, run, out, sc, last, has_leak, by_value,
                 base, rec_off, keep_carry):
    """All sites of population p at once (one vectorised block), or the touched sites, each
    run of consecutive ones as one block (the touched list is sorted); clears the marks.
    One call per population and step.  Returns the ring count."""
    so = net.pop_site_off[p]
    rc = 0
    n_t = sc.tcount[p]
    a = 0
    while True:
        if use_all:
            s0 = 0
            s1 = ns
        else:
            # the next run of consecutive touched sites (the list is sorted): one block
            if a >= n_t:
                break
            s0 = sc.tlist[so + p + a]
            s1 = s0 + 1
            a += 1
            while a < n_t and sc.tlist[so + p + a] == s1:
                s1 += 1
                a += 1
        kc = keep_carry or not use_all
        # one call site, so that LLVM inlines the block update
        rc = _update_block(model, p, s0, s1, t, b, net, run, out, sc, last, has_leak, by_value,
                           base, rc, rec_off, kc)
        if keep_carry:           # densely updated populations are never marked
            mk = sc.mark
            for s in range(np.uint64(so + s0), np.uint64(so + s1)):
                mk[s] = 0
        if use_all:
            break
    return rc


@numba.njit(**NJIT_NORT)
def _seed(lst, n, so, p, mark, tlist, tcount):
    """Append the sites ``lst[so:so+n]`` not yet marked to population p's touched list."""
    for a in range(n):
        s = lst[so + a]
        if mark[so + s] == 0:
            mark[so + s] = 1
            tlist[so + p + tcount[p]] = s
            tcount[p] += 1


@numba.njit(**NJIT_NORT)
def _scan_sites(mark, tlist, so, p, ns):
    """Rewrite population p's touched list in increasing order from its marks (the marked
    sites are exactly the listed ones): O(sites), for lists too long to sort."""
    k = 0
    for s in range(ns):
        if mark[so + s] != 0:
            tlist[so + p + k] = s
            k += 1


@numba.njit(**NJIT_NORT)
def _sort_sites(a, lo, n):
    """Sort ``a[lo:lo+n]`` in place, ascending (insertion sort for short runs, heapsort
    otherwise: no allocation, O(n log n)).  Touched sites are updated in increasing
    order so that their spikes are delivered in increasing neuron index, the documented
    event order that fixes every floating-point sum."""
    sorted_ = True
    for i in range(lo + 1, lo + n):
        if a[i] < a[i - 1]:
            sorted_ = False
            break
    if sorted_:
        return
    if n <= 16:
        for i in range(lo + 1, lo + n):
            x = a[i]
            j = i - 1
            while j >= lo and a[j] > x:
                a[j + 1] = a[j]
                j -= 1
            a[j + 1] = x
        return
    for start in range(n // 2 - 1, -1, -1):      # heapify (max-heap)
        _sift(a, lo, start, n)
    for end in range(n - 1, 0, -1):
        x = a[lo]
        a[lo] = a[lo + end]
        a[lo + end] = x
        _sift(a, lo, 0, end)


@numba.njit(**NJIT_NORT)
def _sift(a, lo, root, n):
    while True:
        c = 2 * root + 1
        if c >= n:
            return
        if c + 1 < n and a[lo + c + 1] > a[lo + c]:
            c += 1
        if a[lo + root] >= a[lo + c]:
            return
        x = a[lo + root]
        a[lo + root] = a[lo + c]
        a[lo + c] = x
        root = c


def _cuba_step(cuba, p, t, b, n_p, base, net, run, out, sc):
    """One vectorised step of CubaLIF population ``p`` (:func:`.cuba.cuba_population`);
    returns its spike count.  Resolved by the type of ``cuba`` when the engine compiles:
    ``None`` (the network has no CubaLIF population) selects a body that returns 0, so
    that the CubaLIF kernels are neither typed nor compiled into that specialisation of
    :func:`run_phase` (~6 s of its ~25 s compile time on 2 cores; decisions.md, 43).
    Only callable from compiled code."""
    raise NotImplementedError("_cuba_step is only callable from compiled code")


@overload(_cuba_step, inline="always")
def _cuba_step_ol(cuba, p, t, b, n_p, base, net, run, out, sc):
    if isinstance(cuba, types.NoneType):
        def absent(cuba, p, t, b, n_p, base, net, run, out, sc):
            return 0
        return absent

    def present(cuba, p, t, b, n_p, base, net, run, out, sc):
        return cuba_population(p, t, b, 0, n_p, base, net, run, out, sc, sc.spk)
    return present


@numba.njit(**NJIT_INLINE)
def _run_sample(b, T, backward, net, run, out, sc, cuba):
    P = net.pop_off.shape[0] - 1
    pop_off = net.pop_off
    pop_site_off = net.pop_site_off
    pop_model = net.pop_model
    rec_off = run.rec_off
    mark = sc.mark
    tlist = sc.tlist
    tcount = sc.tcount
    ccount = sc.ccount
    kcount = sc.kcount
    clist = sc.clist
    klist = sc.klist
    allflag = sc.allflag
    dense_pop = sc.dense_pop
    # -- initial state; this sample's rows of the accumulated outputs (reused arrays of
    # arbitrary content, neurosim/_buffers.py: cleared here, by the thread that fills
    # them, instead of serially by the caller)
    out.counts[b, :] = 0
    out.counts_neg[b, :] = 0
    out.sent[b, :] = 0
    out.sent_neg[b, :] = 0
    out.nupd[b, :] = 0
    if out.wcount.shape[1] > 0:
        out.wcount[b, :] = 0
    for p in range(P):
        for g in range(pop_off[p], pop_off[p + 1]):
            sc.u[g] = out.u_out[b, g]   # initial potentials, set by the caller (engine._alloc_run)
            sc.ref[g] = 0
        tcount[p] = 0
        ccount[p] = 0
        kcount[p] = 0
        allflag[p] = 0
        for d in range(net.pop_depth[p]):
            sc.ring_cnt[p, d] = 0
    sc.isyn[:, :] = 0
    sc.buf[:] = 0
    for s in range(pop_site_off[P]):
        sc.last[s] = -1
        mark[s] = 0
    # -- sites carrying a constant current (seeded every step); dense populations
    for p in range(P):
        m = pop_model[p]
        dense_pop[p] = 0
        if m == M_INPUT or m == M_SOURCE:
            continue
        ssz = net.pop_site[p]
        so = pop_site_off[p]
        ns = pop_site_off[p + 1] - so
        if m == M_CUBA or run.tv_off[p] >= 0:
            dense_pop[p] = 1
            continue
        for s in range(ns):
            for k in range(ssz):
                if run.const[b, pop_off[p] + s * ssz + k] != 0:
                    klist[so + kcount[p]] = s
                    kcount[p] += 1
                    break
        if kcount[p] == ns:
            dense_pop[p] = 1
    # -- time loop
    for t in range(T):
        # 1. seed touched lists
        for p in range(P):
            if dense_pop[p] or pop_model[p] <= M_SOURCE:
                continue
            so = pop_site_off[p]
            _seed(klist, kcount[p], so, p, mark, tlist, tcount)
            _seed(clist, ccount[p], so, p, mark, tlist, tcount)
            ccount[p] = 0
        # 2. delayed deliveries
        for p in range(P):
            for a in range(net.out_ptr[p], net.out_ptr[p + 1]):
                q = net.out_proj[a]
                d = net.proj_delay[q]
                if d == 0 or t - d < 0:
                    continue
                slot = (t - d) % net.pop_depth[p]
                if sc.ring_cnt[p, slot] == 0:
                    continue
                base = net.pop_ring_off[p] + slot * (pop_off[p + 1] - pop_off[p])
                _deliver(q, b, base, base + sc.ring_cnt[p, slot], backward, net, run, out, sc)
        # 3. populations in schedule order
        for si in range(P):
            p = net.schedule[si]
            m = pop_model[p]
            if m == M_INPUT:
                continue
            n_p = pop_off[p + 1] - pop_off[p]
            slot = t % net.pop_depth[p]
            base = net.pop_ring_off[p] + slot * n_p
            rc = 0
            if m == M_SOURCE:
                # the given spike train read as emitted spikes (none given, as in the
                # backward phase: silent)
                o = run.src_off[p]
                if o >= 0:
                    rrow = out.rec[b, t] if rec_off[p] >= 0 else out.rec[0, 0]
                    row = run.src[b, t, o:o + n_p]
                    if _lean(p, backward, net):
                        rc = _emit_lean(row, np.uint64(n_p), n_p, 0, out.counts[b, pop_off[p]:],
                                        rrow, rec_off[p], sc.ring_idx[base:], 0)
                    else:
                        rc = _emit_spikes(row, np.uint64(n_p), n_p, 0, net.pop_site[p], 0,
                                          out.counts[b, pop_off[p]:],
                                          out.counts_neg[b, pop_off[p]:], rrow, rec_off[p],
                                          sc.ring_idx[base:], sc.ring_val[base:],
                                          sc.ring_site[base:], sc.ring_ch[base:], 0, True)
            else:
                ssz = net.pop_site[p]
                so = pop_site_off[p]
                ns = pop_site_off[p + 1] - so
                has_leak = net.pop_fp[p, FP_LEAK] != 1 and m != M_CUBA
                lastp = sc.last[so:pop_site_off[p + 1]]
                fast = (m == M_LIF and net.pop_ip[p, IP_TREF] == 0) or m == M_TERNARY
                share = DENSE_SHARE_BWD if backward else DENSE_SHARE
                if tcount[p] > 1 and not (dense_pop[p] or allflag[p]) and \
                        not (fast and tcount[p] * share >= ns):
                    if tcount[p] * SCAN_SHARE >= ns:          # spikes in index order
                        _scan_sites(mark, tlist, so, p, ns)
                    else:
                        _sort_sites(tlist, so + p, tcount[p])
                if fast:
                    # many touched sites: update them all in one vectorised block (same
                    # result: an untouched site has no input and is below threshold), but
                    # count only the touched ones (what an event-driven update costs)
                    busy = tcount[p] * share >= ns
                    use_all = dense_pop[p] == 1 or allflag[p] == 1 or busy
                    by_value = net.pop_ip[p, IP_RESET] == 1
                    rc = _update_fast(m, p, use_all, ns, t, b, net, run, out, sc, lastp,
                                      has_leak, by_value, base, rec_off[p], dense_pop[p] == 0)
                    out.nupd[b, p] += (ns if dense_pop[p] or allflag[p] else tcount[p]) * ssz
                elif m == M_CUBA and net.pop_ip[p, IP_NPORTS] <= MAX_FAST_PORTS:  # vectorised (cuba.py)
                    rc = _cuba_step(cuba, p, t, b, n_p, base, net, run, out, sc)
                    out.nupd[b, p] += n_p
                else:
                    every = dense_pop[p] or allflag[p]
                    n_iter = ns if every else tcount[p]
                    for a in range(n_iter):
                        s = a if every else tlist[so + p + a]
                        rc, carry = _update_site(p, s, t, b, m, net, run, out, sc, lastp,
                                                 has_leak, base, rc, rec_off[p])
                        mark[so + s] = 0
                        if carry and not dense_pop[p]:
                            clist[so + ccount[p]] = s
                            ccount[p] += 1
                    out.nupd[b, p] += n_iter * ssz
                tcount[p] = 0
                allflag[p] = 0
                if backward:
                    # only gated senders (0 < forward rate < 1) transmit
                    w = 0
                    for e in range(rc):
                        jl = sc.ring_idx[base + e]
                        if run.gate[b, pop_off[p] + jl]:
                            w = _push(sc, base, w, jl, sc.ring_val[base + e],
                                      sc.ring_site[base + e], sc.ring_ch[base + e])
                    rc = w
            sc.ring_cnt[p, slot] = rc
            # 3c. same-step delivery
            if rc == 0:
                continue
            for a in range(net.out_ptr[p], net.out_ptr[p + 1]):
                q = net.out_proj[a]
                if net.proj_delay[q] == 0:
                    _deliver(q, b, base, base + rc, backward, net, run, out, sc)
    # -- final state: apply the leak of steps a site was not touched
    for p in range(P):
        m = pop_model[p]
        ssz = net.pop_site[p]
        so = pop_site_off[p]
        lam = net.pop_fp[p, FP_LEAK]
        lk = (m == M_LIF or m == M_TERNARY) and lam != 1
        wc = out.wcount.shape[1] > 0
        for s in range(pop_site_off[p + 1] - so):
            gap = T - 1 - sc.last[so + s] if sc.last[so + s] >= 0 else 0
            for k in range(ssz):
                g = pop_off[p] + s * ssz + k
                v = sc.u[g]
                if lk:
                    v = leak_steps(v, lam, gap)
                    if wc:
                        out.wcount[b, g] = leak_steps(out.wcount[b, g], net.pop_lam[p], gap)
                out.u_out[b, g] = v


@numba.njit(**NJIT)
def run_phase(T, backward, b0, b1, net, run, out, sc, cuba):
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
    (docs/decisions.md, 41)."""
    for b in range(b0, b1):
        _run_sample(b, T, backward, net, run, out, sc, cuba)
        _sample_totals(b, net, out)


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
