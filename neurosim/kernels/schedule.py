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

Profile: in the build made with ``NEUROSIM_PROFILE=1`` the cycles of each named step are
added to ``out.prof[b, ST_*]`` (:func:`.clock._lap`, chained so that every cycle of the
sample goes to one step); in the default build those calls compile to nothing.
"""
import numba

from ..config import NJIT_INLINE, NJIT_NORT
from .clock import _lap, _start
from .deliver import _deliver
from .emit import _push
from .layout import FP_LEAK, ST_DELAYED, ST_FINISH, ST_GATE, ST_RESET, ST_SAME, ST_SEED, \
    ST_UPDATE
from .neurons import leak_steps
from .update import _dense_model, _has_neurons, _lazy_leak, _update_population, _updated


@numba.njit(**NJIT_NORT)
def _seed(lst, n, so, p, mark, tlist, tcount):
    """Append the sites ``lst[so:so+n]`` not yet marked to population p's touched list."""
    for a in range(n):
        s = lst[so + a]
        if mark[so + s] == 0:
            mark[so + s] = 1
            tlist[so + p + tcount[p]] = s
            tcount[p] += 1


@numba.njit(**NJIT_INLINE)
def _reset_sample(b, net, out, sc):
    """Initial state of sample ``b``: potentials from ``out.u_out`` (set by the caller,
    :func:`neurosim.engine._alloc_run`), empty rings, lists and buffers; this sample's rows
    of the accumulated outputs cleared (reused arrays of arbitrary content,
    neurosim/_buffers.py: cleared here, by the thread that fills them, instead of serially
    by the caller)."""
    P = net.pop_off.shape[0] - 1
    pop_off = net.pop_off
    out.counts[b, :] = 0
    out.counts_neg[b, :] = 0
    out.sent[b, :] = 0
    out.sent_neg[b, :] = 0
    out.nupd[b, :] = 0
    if out.wcount.shape[1] > 0:
        out.wcount[b, :] = 0
    for p in range(P):
        for g in range(pop_off[p], pop_off[p + 1]):
            sc.u[g] = out.u_out[b, g]
            sc.ref[g] = 0
        sc.tcount[p] = 0
        sc.ccount[p] = 0
        sc.kcount[p] = 0
        sc.allflag[p] = 0
        for d in range(net.pop_depth[p]):
            sc.ring_cnt[p, d] = 0
    sc.isyn[:, :] = 0
    sc.adapt[:] = 0
    sc.buf[:] = 0
    for s in range(net.pop_site_off[P]):
        sc.last[s] = -1
        sc.mark[s] = 0


@numba.njit(**NJIT_INLINE)
def _seed_constant(b, net, run, sc):
    """The sites carrying a constant current (``klist``, seeded every step), and the
    populations updated densely (``dense_pop``: CubaLIF, a time-varying current, or every
    site driven)."""
    P = net.pop_off.shape[0] - 1
    pop_off = net.pop_off
    klist = sc.klist
    kcount = sc.kcount
    for p in range(P):
        m = net.pop_model[p]
        sc.dense_pop[p] = 0
        if not _has_neurons(m):
            continue
        ssz = net.pop_site[p]
        so = net.pop_site_off[p]
        ns = net.pop_site_off[p + 1] - so
        if _dense_model(m) or run.tv_off[p] >= 0:
            sc.dense_pop[p] = 1
            continue
        for s in range(ns):
            for k in range(ssz):
                if run.const[b, pop_off[p] + s * ssz + k] != 0:
                    klist[so + kcount[p]] = s
                    kcount[p] += 1
                    break
        if kcount[p] == ns:
            sc.dense_pop[p] = 1


@numba.njit(**NJIT_INLINE)
def _seed_touched(net, sc):
    """Step 1: every event-driven population's touched list starts with its constant-current
    sites and the sites its last update carried (left at/above threshold or refractory)."""
    P = net.pop_off.shape[0] - 1
    for p in range(P):
        if sc.dense_pop[p] or not _has_neurons(net.pop_model[p]):
            continue
        so = net.pop_site_off[p]
        _seed(sc.klist, sc.kcount[p], so, p, sc.mark, sc.tlist, sc.tcount)
        _seed(sc.clist, sc.ccount[p], so, p, sc.mark, sc.tlist, sc.tcount)
        sc.ccount[p] = 0


@numba.njit(**NJIT_INLINE)
def _deliver_delayed(t, b, backward, net, run, out, sc):
    """Step 2: projections of delay ``d >= 1`` deliver the events their sender emitted at
    ``t - d`` (its ring slot ``(t - d) % depth``)."""
    P = net.pop_off.shape[0] - 1
    pop_off = net.pop_off
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


@numba.njit(**NJIT_INLINE)
def _gate_backward(p, b, base, rc, net, run, sc):
    """Step 3b (backward phase): only gated senders (0 < forward rate < 1) transmit; the
    ``rc`` events of population p's ring slot at ``base`` keep those of gated senders, in
    order.  Returns their count."""
    w = 0
    g0 = net.pop_off[p]
    for e in range(rc):
        jl = sc.ring_idx[base + e]
        if run.gate[b, g0 + jl]:
            w = _push(sc, base, w, jl, sc.ring_val[base + e], sc.ring_site[base + e],
                      sc.ring_ch[base + e])
    return w


@numba.njit(**NJIT_INLINE)
def _deliver_same_step(p, b, base, rc, backward, net, run, out, sc):
    """Step 3c: population p's ``rc`` new events (ring slot at ``base``) through its
    delay-0 projections, at once."""
    for a in range(net.out_ptr[p], net.out_ptr[p + 1]):
        q = net.out_proj[a]
        if net.proj_delay[q] == 0:
            _deliver(q, b, base, base + rc, backward, net, run, out, sc)


@numba.njit(**NJIT_INLINE)
def _update_populations(t, b, backward, net, run, out, sc, cuba, c):
    """Step 3: the populations in schedule order, each updated (:mod:`.update`), gated
    (backward phase) and delivered through its delay-0 projections before the next.
    ``c``: the profile's counter reading (:func:`.clock._lap`), returned advanced."""
    P = net.pop_off.shape[0] - 1
    for si in range(P):
        p = net.schedule[si]
        m = net.pop_model[p]
        if not _updated(m):
            continue
        n_p = net.pop_off[p + 1] - net.pop_off[p]
        slot = t % net.pop_depth[p]
        base = net.pop_ring_off[p] + slot * n_p
        rc = _update_population(m, p, t, b, backward, base, n_p, net, run, out, sc, cuba)
        c = _lap(out.prof, b, ST_UPDATE, c)
        if backward and _has_neurons(m):
            rc = _gate_backward(p, b, base, rc, net, run, sc)
            c = _lap(out.prof, b, ST_GATE, c)
        sc.ring_cnt[p, slot] = rc
        if rc > 0:
            _deliver_same_step(p, b, base, rc, backward, net, run, out, sc)
            c = _lap(out.prof, b, ST_SAME, c)
    return c


@numba.njit(**NJIT_INLINE)
def _finish_leak(T, b, net, out, sc):
    """Final state into ``out.u_out``: the leak of the steps a site was not touched applied
    (and to the weighted counts), as repeated multiplications in the dtype.  (ALIF's
    adaptation is not an output: its lazy decay is applied only when a site is touched.)"""
    P = net.pop_off.shape[0] - 1
    pop_off = net.pop_off
    pop_site_off = net.pop_site_off
    for p in range(P):
        m = net.pop_model[p]
        ssz = net.pop_site[p]
        so = pop_site_off[p]
        lam = net.pop_fp[p, FP_LEAK]
        lk = _lazy_leak(m) and lam != 1
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


@numba.njit(**NJIT_INLINE)
def _run_sample(b, T, backward, net, run, out, sc, stop, done, slot, cuba):
    """One sample ``b``: T steps of the named schedule (module docstring); ``c`` and the
    ``_lap`` lines are the profile (nothing in the default build).

    Before every step the stop word ``stop[0]`` is read: nonzero (a signal number, set by
    :mod:`neurosim._interrupt` from another thread) abandons the sample, and False is
    returned (the outputs are then incomplete; the caller discards them).  ``done[slot]``
    counts the finished steps (progress, read by another thread).  Returns True when all
    T steps ran."""
    c = _start()
    _reset_sample(b, net, out, sc)
    _seed_constant(b, net, run, sc)
    c = _lap(out.prof, b, ST_RESET, c)
    for t in range(T):
        if stop[0] != 0:
            return False
        _seed_touched(net, sc)
        c = _lap(out.prof, b, ST_SEED, c)
        _deliver_delayed(t, b, backward, net, run, out, sc)
        c = _lap(out.prof, b, ST_DELAYED, c)
        c = _update_populations(t, b, backward, net, run, out, sc, cuba, c)
        done[slot] += 1
    _finish_leak(T, b, net, out, sc)
    _lap(out.prof, b, ST_FINISH, c)
    return True
