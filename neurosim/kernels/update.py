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
from .cuba import cuba_population, cuba_site
from .emit import _emit_lean, _emit_spikes, _lean, _push
from .layout import (FP_LEAK, FP_SUB, FP_VRESET, FP_VTH, IP_RESET, IP_TREF, M_CUBA, M_LIF,
                     M_TERNARY)
from .neurons import leak, leak_steps, lif_fire, lif_update, ternary_fire, ternary_update

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
