"""The schedule of one sample: T steps of named steps (:func:`_run_sample`).

Per step ``t`` (integrate -> threshold -> reset -> leak -> propagate):

1. :func:`_seed_touched`: every population's touched-site list is seeded with the sites
   that carry a constant current and the sites left above threshold (or refractory) by
   the previous step;
2. :func:`_deliver_delayed`: projections of delay ``d >= 1`` deliver the events their
   sender emitted at ``t - d`` (:mod:`.deliver`);
3. populations in schedule order (:func:`_update_populations`), each one
   a. updated (:mod:`.update`: its touched sites, or all sites when a dense projection
      hit it or when it must be updated densely: CubaLIF, time-varying current), its
      spikes appended to its ring buffer (slot ``t % depth``, :mod:`.emit`),
   b. backward phase: :func:`_gate_backward` keeps the spikes of gated senders only,
   c. :func:`_deliver_same_step`: its spikes delivered at once through its delay-0
      projections.

Before the first step :func:`_reset_sample` and :func:`_seed_constant` set the initial
state; after the last, :func:`_finish_leak` applies the leak of the steps a site was not
touched.  Every step is a small function inlined into :func:`_run_sample` (Numba
``inline="always"``), so the compiled code is that of one loop.
"""
import numba
import numpy as np

from ..config import NJIT_INLINE, NJIT_NORT
from .cuba import MAX_FAST_PORTS
from .deliver import _deliver
from .emit import _emit_lean, _emit_spikes, _lean, _push
from .layout import FP_LEAK, IP_NPORTS, IP_RESET, IP_TREF, M_CUBA, M_INPUT, M_LIF, M_SOURCE, \
    M_TERNARY
from .neurons import leak_steps
from .update import _cuba_step, _update_fast, _update_site

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
