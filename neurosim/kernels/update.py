"""Neuron updates: the ``update populations`` step of the schedule (:mod:`.schedule`).

A population's touched sites (or all of them) read and clear their input buffers
(:func:`_gather_site`), integrate, threshold, reset and leak (the model's own functions,
:mod:`.neurons`, :mod:`.cuba`) and emit their spikes (:mod:`.emit`).  Sites left at or
above threshold (or refractory) go on the carry list, seeded again next step.
"""
import numba
import numpy as np
from numba.core import types
from numba.extending import overload

from ..config import NJIT_INLINE, NJIT_NORT
from .cuba import MAX_FAST_PORTS, cuba_population, cuba_site
from .emit import _emit_lean, _emit_spikes, _lean, _push
from .layout import (FP_BETA, FP_LEAK, FP_RHO, FP_SUB, FP_VRESET, FP_VTH, IP_NPORTS, IP_RESET,
                     IP_TREF, M_ALIF, M_CUBA, M_INPUT, M_LIF, M_SOURCE, M_TERNARY)
from .neurons import (carry_lif, carry_ternary, leak_steps, update_block_lif,
                      update_block_ternary, update_site_alif, update_site_lif,
                      update_site_ternary)

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


@numba.njit(**NJIT_NORT)
def _update_site(p, site, t, b, model, net, run, out, sc, last, has_leak, base, rc, rec_off):
    """Update the neurons of one site (any model, refractoriness included); returns
    (ring count, carry: some neuron is left at/above threshold or refractory).  The
    steps the site was not touched (``gap``) are applied first: the leak of the
    potential (``has_leak``) and, for ALIF, the decay of the adaptation."""
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
            v, r, s, c = update_site_lif(v, sc.ref[g], cur[k], v_th, fp[p, FP_SUB], lam,
                                         net.pop_ip[p, IP_RESET] == 1, fp[p, FP_VRESET],
                                         net.pop_ip[p, IP_TREF])
            sc.ref[g] = r
            qv = np.int8(s)
        elif model == M_ALIF:    # the adaptation decays over the missed steps too
            rho = fp[p, FP_RHO]
            a = sc.adapt[g]
            if gap > 0:
                a = leak_steps(a, rho, gap)
            v, a, s, c = update_site_alif(v, a, cur[k], v_th, fp[p, FP_SUB], lam,
                                          fp[p, FP_BETA], rho)
            sc.adapt[g] = a
            qv = np.int8(s)
        else:  # ternary
            v, qv, c = update_site_ternary(v, cur[k], v_th, fp[p, FP_SUB], lam)
        if c:
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
            v, qv, c = update_block_ternary(u[ug + k], cur[k], v_th, sub, lam)
            u[ug + k] = v
            spk[k] = qv
            nz += qv != 0
            nc += c
    else:
        for k in range(n):
            v, f, c = update_block_lif(u[ug + k], cur[k], v_th, sub, by_value, v_reset, lam)
            u[ug + k] = v
            spk[k] = f
            nz += f
            nc += c
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
                if carry_ternary(v, v_th) if ternary else carry_lif(v, v_th):
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


@numba.njit(**NJIT_NORT)
def _order_touched(p, so, ns, fast, share, sc):
    """Put population p's touched list (sites from ``so``) in increasing order -- a scan of
    the marks for long lists, else a sort -- unless the population is updated whole:
    densely, hit by a dense projection, or, for block updates (``fast``), busy enough to be
    one block (at least 1/``share`` of its ``ns`` sites touched).  Sites are updated in
    increasing order so that their spikes are emitted in increasing neuron index, the
    documented event order."""
    tc = sc.tcount[p]
    if tc > 1 and not (sc.dense_pop[p] or sc.allflag[p]) and not (fast and tc * share >= ns):
        if tc * SCAN_SHARE >= ns:
            _scan_sites(sc.mark, sc.tlist, so, p, ns)
        else:
            _sort_sites(sc.tlist, so + p, tc)


@numba.njit(**NJIT_INLINE)
def _update_blocks(m, p, t, b, backward, has_leak, base, net, run, out, sc):
    """Population p (LIF without refractoriness, ternary) as vectorised blocks
    (:func:`_update_fast`): all its sites at once when many are touched (same result: an
    untouched site has no input and is below threshold), but only the touched ones
    counted (what an event-driven update costs); else each run of touched sites.
    Returns the ring count."""
    ssz = net.pop_site[p]
    so = net.pop_site_off[p]
    ns = net.pop_site_off[p + 1] - so
    share = DENSE_SHARE_BWD if backward else DENSE_SHARE
    _order_touched(p, so, ns, True, share, sc)
    dense = sc.dense_pop[p]
    busy = sc.tcount[p] * share >= ns
    use_all = dense == 1 or sc.allflag[p] == 1 or busy
    by_value = net.pop_ip[p, IP_RESET] == 1
    rc = _update_fast(m, p, use_all, ns, t, b, net, run, out, sc, sc.last[so:so + ns],
                      has_leak, by_value, base, run.rec_off[p], dense == 0)
    out.nupd[b, p] += (ns if dense or sc.allflag[p] else sc.tcount[p]) * ssz
    return rc


@numba.njit(**NJIT_INLINE)
def _update_sites(m, p, t, b, backward, has_leak, base, net, run, out, sc):
    """Population p site by site (:func:`_update_site`: LIF with refractoriness, ALIF,
    CubaLIF with more receptor ports than the vectorised runner takes): its touched sites,
    or all of them; a site left carrying goes on the carry list.  Returns the ring count."""
    ssz = net.pop_site[p]
    so = net.pop_site_off[p]
    ns = net.pop_site_off[p + 1] - so
    share = DENSE_SHARE_BWD if backward else DENSE_SHARE
    _order_touched(p, so, ns, False, share, sc)
    lastp = sc.last[so:so + ns]
    dense = sc.dense_pop[p]
    every = dense or sc.allflag[p]
    n_iter = ns if every else sc.tcount[p]
    rc = 0
    for a in range(n_iter):
        s = a if every else sc.tlist[so + p + a]
        rc, carry = _update_site(p, s, t, b, m, net, run, out, sc, lastp, has_leak, base, rc,
                                 run.rec_off[p])
        sc.mark[so + s] = 0
        if carry and not dense:
            sc.clist[so + sc.ccount[p]] = s
            sc.ccount[p] += 1
    out.nupd[b, p] += n_iter * ssz
    return rc


@numba.njit(**NJIT_INLINE)
def _emit_source(p, t, b, backward, base, n_p, net, run, out, sc):
    """A source population's given spike train read as emitted spikes (none given, as in
    the backward phase: silent).  Returns the ring count."""
    o = run.src_off[p]
    if o < 0:
        return 0
    rec_off = run.rec_off[p]
    rrow = out.rec[b, t] if rec_off >= 0 else out.rec[0, 0]
    row = run.src[b, t, o:o + n_p]
    off = net.pop_off[p]
    if _lean(p, backward, net):
        return _emit_lean(row, np.uint64(n_p), n_p, 0, out.counts[b, off:], rrow, rec_off,
                          sc.ring_idx[base:], 0)
    return _emit_spikes(row, np.uint64(n_p), n_p, 0, net.pop_site[p], 0, out.counts[b, off:],
                        out.counts_neg[b, off:], rrow, rec_off, sc.ring_idx[base:],
                        sc.ring_val[base:], sc.ring_site[base:], sc.ring_ch[base:], 0, True)


@numba.njit(**NJIT_NORT)
def _updated(m):
    """Whether a population of model code ``m`` is updated by the schedule (an input is
    not: its maps became constant currents)."""
    return m != M_INPUT


@numba.njit(**NJIT_NORT)
def _has_neurons(m):
    """Whether a population of model code ``m`` has neuron state (touched lists, carries,
    the backward gate): not an input or a source."""
    return m != M_INPUT and m != M_SOURCE


@numba.njit(**NJIT_NORT)
def _dense_model(m):
    """Whether model ``m`` is updated at every site and step (CubaLIF: its currents decay
    without input)."""
    return m == M_CUBA


@numba.njit(**NJIT_NORT)
def _lazy_leak(m):
    """Whether model ``m``'s untouched sites get their missed leak steps applied when next
    touched (LIF, ternary, ALIF)."""
    return m == M_LIF or m == M_TERNARY or m == M_ALIF


#: how :func:`_update_population` updates a population (:func:`_update_path`)
_BLOCKS = 0                  # vectorised blocks (_update_blocks)
_SITES = 1                   # site by site (_update_sites)
_CUBA = 2                    # the vectorised CubaLIF step (cuba.py)


@numba.njit(**NJIT_NORT)
def _update_path(m, p, net):
    """The one dispatch on the model code ``m`` (not an input or a source): one branch per
    model, giving how population p is updated (``_BLOCKS``, ``_SITES``, ``_CUBA``) and
    whether its untouched sites leak lazily."""
    if m == M_LIF:               # refractory neurons need the per-site update
        path = _BLOCKS if net.pop_ip[p, IP_TREF] == 0 else _SITES
        return path, net.pop_fp[p, FP_LEAK] != 1
    if m == M_TERNARY:
        return _BLOCKS, net.pop_fp[p, FP_LEAK] != 1
    if m == M_ALIF:              # per site: its adaptation decays lazily (_update_site)
        return _SITES, net.pop_fp[p, FP_LEAK] != 1
    # M_CUBA: updated densely, its leak inside its exact step
    return (_CUBA if net.pop_ip[p, IP_NPORTS] <= MAX_FAST_PORTS else _SITES), False


@numba.njit(**NJIT_INLINE)
def _update_population(m, p, t, b, backward, base, n_p, net, run, out, sc, cuba):
    """One step of population p of model code ``m`` (not an input): its neurons updated
    (the way :func:`_update_path` chooses) and its spikes emitted into its ring slot at
    ``base``; the touched list and dense flag cleared.  One call site per update path,
    so that LLVM inlines each once.  Returns the ring count."""
    if m == M_SOURCE:
        return _emit_source(p, t, b, backward, base, n_p, net, run, out, sc)
    path, has_leak = _update_path(m, p, net)
    if path == _BLOCKS:
        rc = _update_blocks(m, p, t, b, backward, has_leak, base, net, run, out, sc)
    elif path == _CUBA:
        rc = _cuba_step(cuba, p, t, b, n_p, base, net, run, out, sc)
        out.nupd[b, p] += n_p
    else:
        rc = _update_sites(m, p, t, b, backward, has_leak, base, net, run, out, sc)
    sc.tcount[p] = 0
    sc.allflag[p] = 0
    return rc
