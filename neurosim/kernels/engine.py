"""The event-driven engine: one phase (forward or backward) for a batch of samples.

Samples are independent; ``run_phase`` splits the batch into chunks processed in
parallel (``numba.prange``), each chunk owning its scratch memory, so no two threads
ever write the same location.

Per sample and step ``t`` (schedule: integrate -> threshold -> reset -> leak -> propagate):

1. every population's *touched-site list* is seeded with the sites that carry a constant
   current and the sites left above threshold (or refractory) by the previous step;
2. projections of delay ``d >= 1`` deliver the events their sender emitted at ``t - d``;
3. populations are updated in schedule order; each one
   a. updates the neurons of its touched sites (all sites when a dense projection hit it,
      or when it must be updated densely: CubaLIF, time-varying current),
   b. appends its spikes to its ring buffer (slot ``t % depth``),
   c. delivers them at once through its delay-0 projections.

Incoming events are accumulated per projection in an input buffer; the neuron update
reads and clears it (times the projection's per-sample mask, if any).  A site that was
not touched keeps its state; for a leaky neuron the missed leak steps are applied when the
site is next touched, as repeated multiplications so that the result is bit-identical
to a dense update at every step.

Counting: ``sent[j]`` counts the events delivered by sender neuron ``j`` through each
projection (forward: spikes; backward: ``sent`` counts +1 events, ``sent_neg`` -1 events).
Per-synapse counts follow exactly as ``sent[pre(s)]`` because every delivered event
traverses every synapse of its sender (see :mod:`neurosim.counting`).
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_NORT, NJIT_PARALLEL
from .cuba import MAX_FAST_PORTS, _cuba_population
from .neurons import _cuba_update, _lif_update, _ternary_update
from .scatter import (conv_down_scatter_group, conv_up_scatter_group, csr_scatter,
                      dense_scatter, pool_down_scatter_group, pool_up_scatter_group)

M_INPUT, M_SOURCE, M_LIF, M_CUBA, M_TERNARY = -1, 0, 1, 2, 3
# nonzero-byte mask of a 64-bit word of int8 spikes (see _update_block)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_HIGH1 = np.uint64(0x8080808080808080)
_GATHER = np.uint64(0x0102040810204080)
_POPCOUNT = np.array([bin(m).count("1") for m in range(256)], np.int64)
_LANES = np.array([[i for i in range(8) if m >> i & 1] + [0] * (8 - bin(m).count("1"))
                   for m in range(256)], np.int64)
#: a touched population with at least 1/DENSE_SHARE of its sites touched is updated as one
#: block (no per-site overhead); results and counts are unchanged.
DENSE_SHARE = 4
K_DENSE, K_CSR, K_CONV_DOWN, K_CONV_UP, K_POOL_DOWN, K_POOL_UP = 0, 1, 2, 3, 4, 5


@numba.njit(**NJIT_NORT)
def _deliver(q, b, ev_idx, ev_val, ev_site, ev_ch, e0, e1, backward,
             proj_kind, proj_dst, proj_geo, proj_woff, proj_ioff, proj_xoff, proj_boff,
             proj_soff, proj_scale, proj_moff, proj_toff, tabs, pop_off, pop_site_off, pop_site,
             pop_n, weights, indptr, indices, masks,
             buf, mark, tlist, tcount, allflag, dense_pop, sent, sent_neg, gch, gval):
    """Deliver events ev_idx[e0:e1] (values ev_val) of projection q's sender.

    Conv and conv-transpose events of one sender site (consecutive in the event list:
    spikes are collected site by site) are delivered together (``gch``/``gval`` scratch)."""
    kind = proj_kind[q]
    r = proj_dst[q]
    boff = proj_boff[q]
    woff = proj_woff[q]
    soff = proj_soff[q]
    moff = proj_moff[q]
    scale = proj_scale[q]
    so = pop_site_off[r]
    n_r = pop_n[r]
    geo = proj_geo[q]
    tab = tabs[proj_toff[q]:]
    do_mark = dense_pop[r] == 0
    if kind >= K_CONV_DOWN:      # conv, conv-transpose, pool: grouped by sender site
        e = e0
        while e < e1:
            site = ev_site[e]
            ng = 0
            while e < e1 and ev_site[e] == site:
                j = np.int64(ev_idx[e])
                if backward:
                    sign = ev_val[e]
                    val = sign * scale
                    if moff >= 0:
                        val = val * masks[b, moff + j]
                    if val != 0.0:
                        if sign > 0:
                            sent[b, soff + j] += 1
                        else:
                            sent_neg[b, soff + j] += 1
                        gch[ng] = ev_ch[e]
                        gval[ng] = val
                        ng += 1
                else:
                    sent[b, soff + j] += 1
                    gch[ng] = ev_ch[e]
                    ng += 1
                e += 1
            if ng == 0:
                continue
            if kind == K_CONV_DOWN:
                conv_down_scatter_group(buf, boff, weights, woff, geo, tab, site, gch, gval, ng,
                                        backward, do_mark, mark, tlist, tcount, r, so)
            elif kind == K_CONV_UP:
                conv_up_scatter_group(buf, boff, weights, woff, geo, tab, site, gch, gval, ng,
                                      backward, do_mark, mark, tlist, tcount, r, so)
            elif kind == K_POOL_DOWN:
                pool_down_scatter_group(buf, boff, weights[woff], geo, tab, site, gch, gval, ng,
                                        backward, do_mark, mark, tlist, tcount, r, so)
            else:
                pool_up_scatter_group(buf, boff, weights[woff], geo, tab, site, gch, gval, ng,
                                      backward, do_mark, mark, tlist, tcount, r, so)
        return
    for e in range(e0, e1):
        j = np.int64(ev_idx[e])
        if backward:
            sign = ev_val[e]
            val = sign * scale
            if moff >= 0:
                val = val * masks[b, moff + j]
                if val == 0.0:
                    continue
            if sign > 0:
                sent[b, soff + j] += 1
            else:
                sent_neg[b, soff + j] += 1
            weighted = True
        else:
            sent[b, soff + j] += 1
            val = 1.0
            weighted = False
        if kind == K_DENSE:      # conv / pool kinds were delivered above, grouped by site
            dense_scatter(buf, boff, weights, woff, j, n_r, val, weighted)
            allflag[r] = 1
        else:
            csr_scatter(buf, boff, weights, woff, indptr, proj_ioff[q], indices, proj_xoff[q], j,
                        val, weighted, do_mark, mark, tlist, tcount, r, so, pop_site[r])


@numba.njit(**NJIT_NORT)
def _update_site(p, site, t, b, model, fp, ip, syn, off, ssz, in_ptr, in_proj, proj_boff,
                 proj_moff, proj_port, masks, const, tv, tv_off, u, ref, isyn, wcount, last,
                 buf, has_leak, ring_idx, ring_val, ring_site, ring_ch, ring_base, rc, rec, record,
                 counts, counts_neg):
    """Update the ``ssz`` neurons of one site; returns (n_spikes_appended, carry)."""
    carry = False
    g0 = off + site * ssz
    leak = fp[p, 2]
    gap = t - last[site] - 1 if last[site] >= 0 else 0
    last[site] = t
    for k in range(ssz):
        g = g0 + k
        jl = site * ssz + k
        I = const[b, g]
        if tv_off[p] >= 0:
            I += tv[b, t, tv_off[p] + jl]
        if model == M_CUBA:
            for a in range(in_ptr[p], in_ptr[p + 1]):
                q = in_proj[a]
                x = buf[proj_boff[q] + jl]
                if x != 0.0:
                    if proj_moff[q] >= 0:
                        x = x * masks[b, proj_moff[q] + jl]
                    isyn[proj_port[q], g] += x
                    buf[proj_boff[q] + jl] = 0.0
            s = _cuba_update(u, isyn, ref, g, fp[p, 4] + I, fp[p, 0], fp[p, 1], fp[p, 2],
                             fp[p, 3], syn[p, 0], syn[p, 1], ip[p, 0])
            if s:
                ring_idx[ring_base + rc] = jl
                ring_val[ring_base + rc] = 1
                ring_site[ring_base + rc] = site
                ring_ch[ring_base + rc] = k
                rc += 1
                counts[b, g] += 1
                if record >= 0:
                    rec[b, t, record + jl] = 1
            continue
        for a in range(in_ptr[p], in_ptr[p + 1]):
            q = in_proj[a]
            x = buf[proj_boff[q] + jl]
            if x != 0.0:
                if proj_moff[q] >= 0 and model != M_TERNARY:
                    x = x * masks[b, proj_moff[q] + jl]
                I += x
                buf[proj_boff[q] + jl] = 0.0
        v = u[g]
        if has_leak and gap > 0:
            for _ in range(gap):
                v = v * leak
            if wcount.shape[1] > 0:
                wc = wcount[b, g]
                for _ in range(gap):
                    wc = wc * leak
                wcount[b, g] = wc
        if model == M_LIF:
            v, r, s = _lif_update(v, ref[g], I, fp[p, 0], fp[p, 1], leak, ip[p, 0], fp[p, 3], ip[p, 1])
            ref[g] = r
            u[g] = v
            if has_leak and wcount.shape[1] > 0:
                wcount[b, g] = wcount[b, g] * leak + s
            if s:
                ring_idx[ring_base + rc] = jl
                ring_val[ring_base + rc] = 1
                ring_site[ring_base + rc] = site
                ring_ch[ring_base + rc] = k
                rc += 1
                counts[b, g] += 1
                if record >= 0:
                    rec[b, t, record + jl] = 1
            if v >= fp[p, 0] or r > 0:
                carry = True
        else:  # ternary
            v, qv = _ternary_update(v, I, fp[p, 0], fp[p, 1], leak)
            u[g] = v
            if has_leak and wcount.shape[1] > 0:
                wcount[b, g] = wcount[b, g] * leak + qv
            if qv != 0:
                if qv > 0:
                    counts[b, g] += 1
                else:
                    counts_neg[b, g] += 1
                if record >= 0:
                    rec[b, t, record + jl] = qv
                ring_idx[ring_base + rc] = jl
                ring_val[ring_base + rc] = qv
                ring_site[ring_base + rc] = site
                ring_ch[ring_base + rc] = k
                rc += 1
            if v >= fp[p, 0] or v <= -fp[p, 0]:
                carry = True
    return rc, carry


@numba.njit(**NJIT_NORT)
def _update_block(model, p, s0, s1, t, b, fp, off, ssz, in_ptr, in_proj, proj_boff, proj_moff,
                  masks, const, tv, tv_off, u, wcount, last, buf, has_leak, by_value, cur, spk,
                  ring_idx, ring_val, ring_site, ring_ch, ring_base, rc, rec, rec_off, counts,
                  counts_neg, clist, ccount, so, keep_carry):
    """Update the contiguous sites [s0, s1) of an LIF (no refractoriness) or ternary
    population in separate loops over its neurons, so that the arithmetic vectorises:
    gather inputs; integrate, threshold, reset, leak; collect spikes and carries.
    Same arithmetic, in the same order, as :func:`_update_site`.  Returns the ring count."""
    j0 = s0 * ssz
    g0 = off + j0
    n = np.uint64((s1 - s0) * ssz)
    v_th = fp[p, 0]
    sub = fp[p, 1]
    leak = fp[p, 2]
    v_reset = fp[p, 3]
    ternary = model == M_TERNARY
    crow = const[b]
    c0 = np.uint64(g0)
    for k in range(n):
        cur[k] = crow[c0 + k]
    if tv_off[p] >= 0:
        for k in range(n):
            cur[k] += tv[b, t, tv_off[p] + j0 + k]
    for a in range(in_ptr[p], in_ptr[p + 1]):
        q = in_proj[a]
        bo = np.uint64(proj_boff[q] + j0)
        if proj_moff[q] >= 0 and not ternary:
            mo = np.uint64(proj_moff[q] + j0)
            for k in range(n):
                cur[k] += buf[bo + k] * masks[b, mo + k]
                buf[bo + k] = 0.0
        else:
            for k in range(n):
                cur[k] += buf[bo + k]
                buf[bo + k] = 0.0
    ug = np.uint64(g0)
    for s in range(s0, s1):
        if not has_leak:          # `last` only serves the lazy leak
            break
        gap = t - last[s] - 1 if last[s] >= 0 else 0
        last[s] = t
        if gap > 0:
            for k in range(s * ssz, (s + 1) * ssz):
                v = u[off + k]
                for _ in range(gap):
                    v = v * leak
                u[off + k] = v
                if wcount.shape[1] > 0:
                    wc = wcount[b, off + k]
                    for _ in range(gap):
                        wc = wc * leak
                    wcount[b, off + k] = wc
    nz = 0                       # spikes of this block
    nc = 0                       # neurons left at/above threshold (carry)
    if ternary:
        for k in range(n):
            v = u[ug + k] + cur[k]
            qv = np.int8(v >= v_th) - np.int8(v <= -v_th)
            v = v - sub * qv
            if leak != 1.0:
                v = v * leak
            u[ug + k] = v
            spk[k] = qv
            nz += qv != 0
            nc += (v >= v_th) | (v <= -v_th)
    else:
        for k in range(n):
            v = u[ug + k] + cur[k]
            f = v >= v_th
            if by_value:
                v = v_reset if f else v
            else:
                v = v - sub * f
            if leak != 1.0:
                v = v * leak
            u[ug + k] = v
            spk[k] = f
            nz += f
            nc += v >= v_th
    if has_leak and wcount.shape[1] > 0:
        for k in range(n):
            wcount[b, ug + k] = wcount[b, ug + k] * leak + spk[k]
    if nz == 0:
        pass
    elif ssz == 1 or nz * 8 < np.int64(n) or rec_off >= 0:
        # few spikes: skip eight silent neurons per 64-bit word
        nw = n // np.uint64(8)
        words = spk[:nw * np.uint64(8)].view(np.uint64)
        for wi in range(nw + np.uint64(1)):
            if wi < nw and words[wi] == 0:
                continue
            k0 = wi * np.uint64(8)
            k1 = min(k0 + np.uint64(8), n)
            for kk in range(k0, k1):
                qv = spk[kk]
                if qv != 0:
                    k = j0 + np.int64(kk)
                    if ssz == 1:
                        s = k
                        c = 0
                    else:
                        s = k // ssz
                        c = k - s * ssz
                    ring_idx[ring_base + rc] = k
                    ring_val[ring_base + rc] = qv
                    ring_site[ring_base + rc] = s
                    ring_ch[ring_base + rc] = c
                    rc += 1
                    if qv > 0:
                        counts[b, off + k] += 1
                    else:
                        counts_neg[b, off + k] += 1
                    if rec_off >= 0:
                        rec[b, t, rec_off + k] = qv
    else:
        # many spikes (forward of busy layers): branch-free compaction (the ring slots
        # past the last spike are scratch), counts as one vectorised add per sign
        cpos = counts[b]
        cneg = counts_neg[b]
        cb = np.uint64(off + j0)
        for kk in range(n):
            qv = spk[kk]
            cpos[cb + kk] += qv > 0
            cneg[cb + kk] += qv < 0
        # eight neurons per 64-bit word: a bit mask of the nonzero bytes, then only its
        # set bits (lane tables), tracking (site, channel) without division
        nw = n // np.uint64(8)
        words = spk[:nw * np.uint64(8)].view(np.uint64)
        s = s0
        c0 = 0
        for wi in range(nw):
            w = words[wi]
            if w != 0:
                x = (((w & _LOW7) + _LOW7) | w) & _HIGH1
                m = ((x >> np.uint64(7)) * _GATHER) >> np.uint64(56)
                for i in range(_POPCOUNT[m]):
                    lane = _LANES[m, i]
                    c = c0 + lane
                    ss = s
                    while c >= ssz:
                        c -= ssz
                        ss += 1
                    ring_idx[ring_base + rc] = ss * ssz + c
                    ring_val[ring_base + rc] = spk[wi * np.uint64(8) + np.uint64(lane)]
                    ring_site[ring_base + rc] = ss
                    ring_ch[ring_base + rc] = c
                    rc += 1
            c0 += 8
            while c0 >= ssz:
                c0 -= ssz
                s += 1
        for kk in range(nw * np.uint64(8), n):
            qv = spk[kk]
            if qv != 0:
                k = j0 + np.int64(kk)
                ring_idx[ring_base + rc] = k
                ring_val[ring_base + rc] = qv
                ring_site[ring_base + rc] = k // ssz
                ring_ch[ring_base + rc] = k - (k // ssz) * ssz
                rc += 1
    if keep_carry and nc > 0:    # densely updated populations need no carry list
        for s in range(s0, s1):
            carry = False
            for k in range(s * ssz, (s + 1) * ssz):
                v = u[off + k]
                if v >= v_th or (ternary and v <= -v_th):
                    carry = True
            if carry:
                clist[so + ccount[p]] = s
                ccount[p] += 1
    return rc


@numba.njit(**NJIT_NORT)
def _update_fast(model, p, use_all, ns, tlist, tl0, n_list, mark, t, b, fp, off, ssz, in_ptr,
                 in_proj, proj_boff, proj_moff, masks, const, tv, tv_off, u, wcount, last, buf,
                 has_leak, by_value, cur, spk, ring_idx, ring_val, ring_site, ring_ch, ring_base,
                 rec, rec_off, counts, counts_neg, clist, ccount, so, keep_carry):
    """All sites of population p at once (one vectorised block), or each touched site;
    clears the marks.  One call per population and step.  Returns the ring count."""
    rc = 0
    n_iter = 1 if use_all else n_list
    for a in range(n_iter):
        if use_all:
            s0 = 0
            s1 = ns
        else:
            s0 = tlist[tl0 + a]
            s1 = s0 + 1
        kc = keep_carry or not use_all
        # one call site, so that LLVM inlines the block update
        rc = _update_block(model, p, s0, s1, t, b, fp, off, ssz, in_ptr, in_proj, proj_boff,
                           proj_moff, masks, const, tv, tv_off, u, wcount, last, buf, has_leak,
                           by_value, cur, spk, ring_idx, ring_val, ring_site, ring_ch, ring_base,
                           rc, rec, rec_off, counts, counts_neg, clist, ccount, so, kc)
        for s in range(s0, s1):
            mark[so + s] = 0
    return rc


@numba.njit(**NJIT)
def _run_sample(b, T, backward, rec_off,
                pop_off, pop_site, pop_site_off, pop_model, pop_fp, pop_ip, pop_syn,
                pop_depth, pop_ring_off, schedule, out_ptr, out_proj, in_ptr, in_proj,
                proj_kind, proj_dst, proj_delay, proj_port, proj_geo, proj_woff, proj_ioff,
                proj_xoff, proj_boff, proj_soff, proj_scale, proj_moff, proj_toff, tabs,
                weights, indptr, indices, const, tv, tv_off, src_idx, src_ptr, masks, gate,
                counts, counts_neg, u_out, wcount, sent, sent_neg, nupd, rec,
                u, ref, isyn, buf, last, mark, tlist, tcount, allflag, clist, ccount,
                klist, kcount, ring_idx, ring_val, ring_site, ring_ch, ring_cnt, dense_pop,
                cur, spk, gch, gval):
    P = pop_off.shape[0] - 1
    pop_n = pop_off[1:] - pop_off[:-1]
    n_sites_tot = pop_site_off[P]
    # -- initial state
    for p in range(P):
        for g in range(pop_off[p], pop_off[p + 1]):
            u[g] = u_out[b, g]      # initial potentials, set by the caller (engine._alloc_run)
            ref[g] = 0
        tcount[p] = 0
        ccount[p] = 0
        kcount[p] = 0
        allflag[p] = 0
        for d in range(pop_depth[p]):
            ring_cnt[p, d] = 0
    isyn[:, :] = 0.0
    buf[:] = 0.0
    for s in range(n_sites_tot):
        last[s] = -1
        mark[s] = 0
    # -- sites carrying a constant current (seeded every step); dense populations
    for p in range(P):
        m = pop_model[p]
        dense_pop[p] = 0
        if m == M_INPUT or m == M_SOURCE:
            continue
        ssz = pop_site[p]
        so = pop_site_off[p]
        ns = pop_site_off[p + 1] - so
        if m == M_CUBA or tv_off[p] >= 0:
            dense_pop[p] = 1
            continue
        for s in range(ns):
            for k in range(ssz):
                if const[b, pop_off[p] + s * ssz + k] != 0.0:
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
            for a in range(kcount[p]):
                s = klist[so + a]
                if mark[so + s] == 0:
                    mark[so + s] = 1
                    tlist[so + p + tcount[p]] = s
                    tcount[p] += 1
            for a in range(ccount[p]):
                s = clist[so + a]
                if mark[so + s] == 0:
                    mark[so + s] = 1
                    tlist[so + p + tcount[p]] = s
                    tcount[p] += 1
            ccount[p] = 0
        # 2. delayed deliveries
        for p in range(P):
            for a in range(out_ptr[p], out_ptr[p + 1]):
                q = out_proj[a]
                d = proj_delay[q]
                if d == 0 or t - d < 0:
                    continue
                slot = (t - d) % pop_depth[p]
                if ring_cnt[p, slot] == 0:
                    continue
                base = pop_ring_off[p] + slot * pop_n[p]
                _deliver(q, b, ring_idx, ring_val, ring_site, ring_ch, base,
                         base + ring_cnt[p, slot], backward,
                         proj_kind, proj_dst, proj_geo, proj_woff, proj_ioff, proj_xoff,
                         proj_boff, proj_soff, proj_scale, proj_moff, proj_toff, tabs, pop_off,
                         pop_site_off, pop_site, pop_n, weights, indptr, indices, masks, buf,
                         mark, tlist, tcount, allflag, dense_pop, sent, sent_neg, gch, gval)
        # 3. populations in schedule order
        for si in range(P):
            p = schedule[si]
            m = pop_model[p]
            if m == M_INPUT:
                continue
            slot = t % pop_depth[p]
            base = pop_ring_off[p] + slot * pop_n[p]
            rc = 0
            if m == M_SOURCE:
                e0 = src_ptr[b, p, t]
                e1 = src_ptr[b, p, t + 1]
                for e in range(e0, e1):
                    jl = src_idx[b, e]
                    ring_idx[base + rc] = jl
                    ring_val[base + rc] = 1
                    if pop_site[p] == 1:
                        ring_site[base + rc] = jl
                        ring_ch[base + rc] = 0
                    else:
                        ring_site[base + rc] = jl // pop_site[p]
                        ring_ch[base + rc] = jl - (jl // pop_site[p]) * pop_site[p]
                    rc += 1
                    counts[b, pop_off[p] + jl] += 1
                    if rec_off[p] >= 0:
                        rec[b, t, rec_off[p] + jl] = 1
            else:
                ssz = pop_site[p]
                so = pop_site_off[p]
                off = pop_off[p]
                has_leak = pop_fp[p, 2] != 1.0 and m != M_CUBA
                lastp = last[so:pop_site_off[p + 1]]
                fast = (m == M_LIF and pop_ip[p, 1] == 0) or m == M_TERNARY
                if fast:
                    ns = pop_site_off[p + 1] - so
                    # many touched sites: update them all in one vectorised block (same
                    # result: an untouched site has no input and is below threshold), but
                    # count only the touched ones (what an event-driven update costs)
                    busy = tcount[p] * DENSE_SHARE >= ns
                    use_all = dense_pop[p] == 1 or allflag[p] == 1 or busy
                    by_value = pop_ip[p, 0] == 1
                    keep = dense_pop[p] == 0
                    rc = _update_fast(m, p, use_all, ns, tlist, so + p, tcount[p], mark, t, b,
                                      pop_fp, off, ssz, in_ptr, in_proj, proj_boff, proj_moff,
                                      masks, const, tv, tv_off, u, wcount, lastp, buf, has_leak,
                                      by_value, cur, spk, ring_idx, ring_val, ring_site,
                                      ring_ch, base, rec, rec_off[p], counts, counts_neg, clist,
                                      ccount, so, keep)
                    nupd[b, p] += (ns if dense_pop[p] or allflag[p] else tcount[p]) * ssz
                elif m == M_CUBA and pop_ip[p, 1] <= MAX_FAST_PORTS:   # vectorised (cuba.py)
                    rc = _cuba_population(p, t, b, off, pop_n[p], ssz, pop_fp, pop_ip, pop_syn,
                                          in_ptr, in_proj, proj_boff, proj_moff, proj_port, masks,
                                          const, tv, tv_off, u, ref, isyn, buf, spk, ring_idx,
                                          ring_val, ring_site, ring_ch, base, rec, rec_off[p],
                                          counts)
                    nupd[b, p] += pop_n[p]
                elif dense_pop[p] or allflag[p]:
                    ns = pop_site_off[p + 1] - so
                    for s in range(ns):
                        rc, carry = _update_site(p, s, t, b, m, pop_fp, pop_ip, pop_syn, off,
                                                 ssz, in_ptr, in_proj, proj_boff, proj_moff,
                                                 proj_port, masks, const, tv, tv_off, u, ref,
                                                 isyn, wcount, lastp, buf, has_leak, ring_idx,
                                                 ring_val, ring_site, ring_ch, base,
                                                 rc, rec, rec_off[p], counts, counts_neg)
                        mark[so + s] = 0
                        if carry and not dense_pop[p]:
                            clist[so + ccount[p]] = s
                            ccount[p] += 1
                    nupd[b, p] += ns * ssz
                else:
                    for a in range(tcount[p]):
                        s = tlist[so + p + a]
                        rc, carry = _update_site(p, s, t, b, m, pop_fp, pop_ip, pop_syn, off,
                                                 ssz, in_ptr, in_proj, proj_boff, proj_moff,
                                                 proj_port, masks, const, tv, tv_off, u, ref,
                                                 isyn, wcount, lastp, buf, has_leak, ring_idx,
                                                 ring_val, ring_site, ring_ch, base,
                                                 rc, rec, rec_off[p], counts, counts_neg)
                        mark[so + s] = 0
                        if carry:
                            clist[so + ccount[p]] = s
                            ccount[p] += 1
                    nupd[b, p] += tcount[p] * ssz
                tcount[p] = 0
                allflag[p] = 0
                if backward:
                    # only gated senders (0 < forward rate < 1) transmit
                    w = 0
                    for e in range(rc):
                        jl = ring_idx[base + e]
                        if gate[b, off + jl]:
                            ring_idx[base + w] = jl
                            ring_val[base + w] = ring_val[base + e]
                            ring_site[base + w] = ring_site[base + e]
                            ring_ch[base + w] = ring_ch[base + e]
                            w += 1
                    rc = w
            ring_cnt[p, slot] = rc
            # 3c. same-step delivery
            for a in range(out_ptr[p], out_ptr[p + 1]):
                q = out_proj[a]
                if proj_delay[q] != 0 or rc == 0:
                    continue
                _deliver(q, b, ring_idx, ring_val, ring_site, ring_ch, base, base + rc,
                         backward, proj_kind, proj_dst, proj_geo, proj_woff, proj_ioff, proj_xoff,
                         proj_boff, proj_soff, proj_scale, proj_moff, proj_toff, tabs, pop_off,
                         pop_site_off, pop_site, pop_n, weights, indptr, indices, masks, buf,
                         mark, tlist, tcount, allflag, dense_pop, sent, sent_neg, gch, gval)
    # -- final state: apply the leak of steps a site was not touched
    for p in range(P):
        m = pop_model[p]
        ssz = pop_site[p]
        so = pop_site_off[p]
        leak = pop_fp[p, 2]
        lk = (m == M_LIF or m == M_TERNARY) and leak != 1.0
        for s in range(pop_site_off[p + 1] - so):
            gap = T - 1 - last[so + s] if last[so + s] >= 0 else 0
            for k in range(ssz):
                g = pop_off[p] + s * ssz + k
                v = u[g]
                if lk:
                    for _ in range(gap):
                        v = v * leak
                    if wcount.shape[1] > 0:
                        wc = wcount[b, g]
                        for _ in range(gap):
                            wc = wc * leak
                        wcount[b, g] = wc
                u_out[b, g] = v


@numba.njit(**NJIT_PARALLEL)
def run_phase(T, backward, rec_off, n_chunks,
              pop_off, pop_site, pop_site_off, pop_model, pop_fp, pop_ip, pop_syn,
              pop_depth, pop_ring_off, schedule, out_ptr, out_proj, in_ptr, in_proj,
              proj_kind, proj_dst, proj_delay, proj_port, proj_geo, proj_woff, proj_ioff,
              proj_xoff, proj_boff, proj_soff, proj_scale, proj_moff, proj_toff, tabs,
              weights, indptr, indices, const, tv, tv_off, src_idx, src_ptr, masks, gate,
              n_buf, max_ports, counts, counts_neg, u_out, wcount, sent, sent_neg, nupd, rec):
    """Run T steps of one phase for every sample of the batch (parallel over chunks).

    ``u_out`` [B, N] holds the initial potentials on entry and the final ones on exit."""
    B = const.shape[0]
    P = pop_off.shape[0] - 1
    N = pop_off[P]
    NS = pop_site_off[P]
    dt = weights.dtype
    for c in numba.prange(n_chunks):
        u = np.zeros(N, dt)
        ref = np.zeros(N, np.int32)
        has_cuba = False
        for p in range(P):
            if pop_model[p] == M_CUBA:
                has_cuba = True
        isyn = np.zeros((max_ports, N if has_cuba else 0), dt)
        buf = np.zeros(n_buf, dt)
        last = np.empty(NS, np.int64)
        mark = np.zeros(NS, np.uint8)
        tlist = np.zeros(NS + P, np.int64)
        clist = np.zeros(NS, np.int64)
        klist = np.zeros(NS, np.int64)
        tcount = np.zeros(P, np.int64)
        ccount = np.zeros(P, np.int64)
        kcount = np.zeros(P, np.int64)
        allflag = np.zeros(P, np.uint8)
        dense_pop = np.zeros(P, np.uint8)
        ring_idx = np.zeros(pop_ring_off[P], np.int32)
        ring_val = np.zeros(pop_ring_off[P], np.int8)
        ring_site = np.zeros(pop_ring_off[P], np.int32)
        ring_ch = np.zeros(pop_ring_off[P], np.int32)
        maxd = 1
        for p in range(P):
            maxd = max(maxd, pop_depth[p])
        ring_cnt = np.zeros((P, maxd), np.int64)
        max_ssz = 1
        for p in range(P):
            max_ssz = max(max_ssz, pop_off[p + 1] - pop_off[p])
        cur = np.zeros(max_ssz, dt)
        spk = np.zeros(max_ssz, np.int8)
        gch = np.zeros(max_ssz, np.int64)     # one sender site's events (grouped delivery)
        gval = np.zeros(max_ssz, dt)
        b0 = c * B // n_chunks
        b1 = (c + 1) * B // n_chunks
        for b in range(b0, b1):
            _run_sample(b, T, backward, rec_off,
                        pop_off, pop_site, pop_site_off, pop_model, pop_fp, pop_ip, pop_syn,
                        pop_depth, pop_ring_off, schedule, out_ptr, out_proj, in_ptr, in_proj,
                        proj_kind, proj_dst, proj_delay, proj_port, proj_geo, proj_woff,
                        proj_ioff, proj_xoff, proj_boff, proj_soff, proj_scale, proj_moff,
                        proj_toff, tabs, weights, indptr, indices, const, tv, tv_off, src_idx,
                        src_ptr, masks, gate, counts, counts_neg, u_out, wcount, sent, sent_neg,
                        nupd, rec, u, ref, isyn, buf, last, mark, tlist, tcount, allflag, clist,
                        ccount, klist, kcount, ring_idx, ring_val, ring_site, ring_ch, ring_cnt,
                        dense_pop, cur, spk, gch, gval)


@numba.njit(**NJIT_PARALLEL)
def apply_map(kind, geo, tab, weights, indptr, indices, pool_w, x, out):
    """Analog input map: out[b] += (map applied to x[b]), scattering each nonzero x.

    Used for the input encoding (SPIDE's ``F x``) with the same scatter code as spikes;
    ``out`` [B, n_out] is updated in place."""
    B = x.shape[0]
    n_out = out.shape[1]
    Cs = geo[0] if geo[0] > 0 else 1
    for b in numba.prange(B):
        buf = np.zeros(n_out, out.dtype)
        mark = np.zeros(1, np.uint8)
        tlist = np.zeros(1, np.int64)
        tcount = np.zeros(1, np.int64)
        gch = np.zeros(1, np.int64)          # one event per call of the grouped scatters
        gval = np.zeros(1, out.dtype)
        for j in range(x.shape[1]):
            v = x[b, j]
            if v == 0.0:
                continue
            site = j // Cs
            c = j - site * Cs
            if kind == K_DENSE:
                dense_scatter(buf, 0, weights, 0, j, n_out, v, True)
            elif kind == K_CSR:
                csr_scatter(buf, 0, weights, 0, indptr, 0, indices, 0, j, v, True, False,
                            mark, tlist, tcount, 0, 0, 1)
            else:
                gch[0] = c
                gval[0] = v
                if kind == K_CONV_DOWN:
                    conv_down_scatter_group(buf, 0, weights, 0, geo, tab, site, gch, gval, 1,
                                            True, False, mark, tlist, tcount, 0, 0)
                elif kind == K_CONV_UP:
                    conv_up_scatter_group(buf, 0, weights, 0, geo, tab, site, gch, gval, 1,
                                          True, False, mark, tlist, tcount, 0, 0)
                else:
                    pool_down_scatter_group(buf, 0, pool_w, geo, tab, site, gch, gval, 1, True,
                                            False, mark, tlist, tcount, 0, 0)
        for i in range(n_out):
            out[b, i] += buf[i]


@numba.njit(**NJIT_PARALLEL)
def pack_events(s, counts_bt):
    """Per-sample event lists of a bool spike array s [B, T, n].

    ``counts_bt`` [B, T] receives the number of spikes per step; returns idx [B, max_events]
    (neuron indices in (step, neuron) order, padded with 0)."""
    B, T, n = s.shape
    for b in numba.prange(B):
        for t in range(T):
            c = 0
            for j in range(n):
                c += s[b, t, j]
            counts_bt[b, t] = c
    m = 1
    for b in range(B):
        tot = 0
        for t in range(T):
            tot += counts_bt[b, t]
        m = max(m, tot)
    idx = np.zeros((B, m + 1), np.int32)      # one slack column for the branch-free write
    for b in numba.prange(B):
        e = 0
        for t in range(T):
            for j in range(n):
                idx[b, e] = j
                e += s[b, t, j]
        for k in range(e, m + 1):               # zero padding after the sample's events
            idx[b, k] = 0
    return idx[:, :m]
