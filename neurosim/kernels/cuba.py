"""Vectorised CubaLIF update: a whole population per step in flat loops (SIMD).

The engine updates CubaLIF populations densely at every step (their currents decay
whether or not events arrive).  Calling the per-neuron path neuron by neuron costs far
more than the arithmetic (~160 ns per neuron update for the CUBA benchmark network,
against < 1 ns here); instead a population is updated in one flat loop that LLVM
vectorises:

* the input buffers of the incoming projections are added to the currents where they
  are nonzero and cleared, in the same pass as the update when every receptor port is
  fed by exactly one unmasked projection (the usual case: one current, or excitatory +
  inhibitory), else in a separate pass first (:func:`_gather`);
* the step of one neuron is :func:`_neuron`, written once over the functions of
  :mod:`.neurons`; the loops that call it differ only in compile-time flags (ports,
  fused buffers, uniform drive), which LLVM folds after inlining, so each loop is
  branch-free and vectorises;
* only when something spiked are the flags searched, 8 at a time (uint64 words) and
  64 at a time (OR of 8 words): a per-flag scan of the whole population every step cost
  more than the update itself when a few neurons fire at almost every step (an
  asynchronous network such as CUBA).

The arithmetic is that of :mod:`.neurons` (``cuba_*``) in the network's dtype, so the
results are bit-identical to the per-neuron path (:func:`cuba_site`) and to the dense
twin in ``tests/reference.py``.  Specialised for one and two receptor ports; populations
with more ports keep the per-neuron path (:data:`MAX_FAST_PORTS`).
"""
from typing import NamedTuple

import numba
import numpy as np

from ..config import NJIT_INLINE, NJIT_NORT, NJIT_PARALLEL
from .layout import (FP_AMEM, FP_DMEM, FP_IE, FP_VREST, FP_VRESET, FP_VTH, IP_NPORTS, IP_TREF,
                     IP_UNIFORM, K_CSR, M_CUBA, SYN_ALPHA, SYN_P, Scratch)
from .neurons import cuba_drive, cuba_fire, cuba_jump, cuba_membrane, cuba_port
from .sync import compare_swap, cpu_pause, fetch_add, load_acquire, os_yield, store_release

#: receptor ports handled by the vectorised path.
MAX_FAST_PORTS = 2


@numba.njit(**NJIT_NORT)
def cuba_site(p, g, I, net, sc):
    """One step of CubaLIF neuron ``g`` of population ``p`` with any number of ports
    (events already added to ``sc.isyn``; ``I`` the constant + time-varying current).
    Returns spiked."""
    fp = net.pop_fp
    syn = net.pop_syn
    acc = cuba_membrane(sc.u[g], cuba_drive(fp[p, FP_IE], I, fp[p, FP_DMEM]), fp[p, FP_VREST],
                        fp[p, FP_AMEM])
    for k in range(net.pop_ip[p, IP_NPORTS]):
        acc, sc.isyn[k, g] = cuba_port(acc, sc.isyn[k, g], syn[p, SYN_ALPHA, k], syn[p, SYN_P, k])
    v, r, f = cuba_fire(acc, sc.ref[g], fp[p, FP_VTH], fp[p, FP_VRESET], net.pop_ip[p, IP_TREF])
    sc.u[g] = v
    sc.ref[g] = r
    return f


@numba.njit(**NJIT_INLINE)
def _neuron(i, k, dterm, two, fused, u, isyn, ref, buf, b0, b1, v_rest, a_m, v_th, v_reset,
            t_ref, a0, p0, a1, p1, spk):
    """Step of neuron ``i`` (flag ``spk[k]``) given its drive term; ``two``: second port;
    ``fused``: jump port 0 (and 1) by the input buffer at ``b0 + k`` (``b1 + k``) and
    clear it.  Returns spiked."""
    acc = cuba_membrane(u[i], dterm, v_rest, a_m)
    i0 = isyn[0, i]
    if fused:
        x0 = buf[b0 + k]
        if x0 != 0:                      # a masked store: clean cache lines stay clean
            buf[b0 + k] = 0
        i0 = cuba_jump(i0, x0)
    acc, isyn[0, i] = cuba_port(acc, i0, a0, p0)
    if two:
        i1 = isyn[1, i]
        if fused:
            x1 = buf[b1 + k]
            if x1 != 0:
                buf[b1 + k] = 0
            i1 = cuba_jump(i1, x1)
        acc, isyn[1, i] = cuba_port(acc, i1, a1, p1)
    v, r, f = cuba_fire(acc, ref[i], v_th, v_reset, t_ref)
    u[i] = v
    ref[i] = r
    spk[k] = f
    return f


@numba.njit(**NJIT_NORT)
def _advance(p, t, b, k0, k1, uniform, use_tv, fused, bo0, bo1, net, run, sc, spk):
    """Advance neurons ``k0 .. k1`` of population ``p`` by one step; flags in
    ``spk[k0:k1]``; returns the number of spikes.  Drive of neuron k:
    ``i_e + const (+ tv)``; ``uniform``: the same constant for every neuron, computed
    once (8 bytes per neuron less traffic: ~5 % at 16,000 neurons)."""
    fp = net.pop_fp
    syn = net.pop_syn
    off = net.pop_off[p]
    o = np.uint64(off)
    v_rest, a_m, d_m = fp[p, FP_VREST], fp[p, FP_AMEM], fp[p, FP_DMEM]
    v_th, v_reset, i_e = fp[p, FP_VTH], fp[p, FP_VRESET], fp[p, FP_IE]
    t_ref = net.pop_ip[p, IP_TREF]
    a0, p0, a1, p1 = syn[p, SYN_ALPHA, 0], syn[p, SYN_P, 0], syn[p, SYN_ALPHA, 1], syn[p, SYN_P, 1]
    two = net.pop_ip[p, IP_NPORTS] == 2
    u, isyn, ref, buf = sc.u, sc.isyn, sc.ref, sc.buf
    crow = run.const[b]
    trow = run.tv[b, t] if use_tv else crow
    t0 = np.uint64(run.tv_off[p] if use_tv else 0)
    b0 = np.uint64(bo0)
    b1 = np.uint64(bo1)
    ka = np.uint64(k0)
    kb = np.uint64(k1)
    nsp = 0
    if uniform:
        d = cuba_drive(i_e, crow[o], d_m)
        # one loop per (ports, fused): the flags are constants after inlining
        if two and fused:
            for k in range(ka, kb):
                nsp += _neuron(o + k, k, d, True, True, u, isyn, ref, buf, b0, b1, v_rest, a_m,
                               v_th, v_reset, t_ref, a0, p0, a1, p1, spk)
        elif two:
            for k in range(ka, kb):
                nsp += _neuron(o + k, k, d, True, False, u, isyn, ref, buf, b0, b1, v_rest, a_m,
                               v_th, v_reset, t_ref, a0, p0, a1, p1, spk)
        elif fused:
            for k in range(ka, kb):
                nsp += _neuron(o + k, k, d, False, True, u, isyn, ref, buf, b0, b1, v_rest, a_m,
                               v_th, v_reset, t_ref, a0, p0, a1, p1, spk)
        else:
            for k in range(ka, kb):
                nsp += _neuron(o + k, k, d, False, False, u, isyn, ref, buf, b0, b1, v_rest,
                               a_m, v_th, v_reset, t_ref, a0, p0, a1, p1, spk)
        return nsp
    for k in range(ka, kb):
        I = crow[o + k]
        if use_tv:
            I = I + trow[t0 + k]
        d = cuba_drive(i_e, I, d_m)
        if two:
            nsp += _neuron(o + k, k, d, True, fused, u, isyn, ref, buf, b0, b1, v_rest, a_m,
                           v_th, v_reset, t_ref, a0, p0, a1, p1, spk)
        else:
            nsp += _neuron(o + k, k, d, False, fused, u, isyn, ref, buf, b0, b1, v_rest, a_m,
                           v_th, v_reset, t_ref, a0, p0, a1, p1, spk)
    return nsp


@numba.njit(**NJIT_NORT)
def _gather(p, b, k0, k1, net, run, sc):
    """Add every incoming projection's buffer (times its mask) to the current of its
    port where nonzero, and clear it, for neurons ``k0 .. k1`` (the unfused case)."""
    o = np.uint64(net.pop_off[p])
    isyn = sc.isyn
    buf = sc.buf
    for a in range(net.in_ptr[p], net.in_ptr[p + 1]):
        q = net.in_proj[a]
        k = net.proj_port[q]
        bo = np.uint64(net.proj_boff[q])
        mo = net.proj_moff[q]
        for j in range(np.uint64(k0), np.uint64(k1)):
            y = buf[bo + j]
            x = y * run.masks[b, np.uint64(mo) + j] if mo >= 0 else y
            isyn[k, o + j] = cuba_jump(isyn[k, o + j], x)
            if y != 0:
                buf[bo + j] = 0


@numba.njit(**NJIT_NORT)
def cuba_population(p, t, b, k0, k1, base, net, run, out, sc, spk):
    """One step of neurons ``k0 .. k1`` of CubaLIF population ``p`` for sample ``b``:
    gather their input buffers into the currents, advance, append the spikes to the ring
    at ``base`` (in index order), count and record them.  Returns the number of spikes
    appended.  Needs ``pop_ip[p, IP_NPORTS] <= MAX_FAST_PORTS``."""
    n_ports = net.pop_ip[p, IP_NPORTS]
    # fused when every port is fed by exactly one unmasked projection
    bo0 = -1
    bo1 = -1
    fused = True
    for k in range(n_ports):
        nk = 0
        for a in range(net.in_ptr[p], net.in_ptr[p + 1]):
            q = net.in_proj[a]
            if net.proj_port[q] == k:
                nk += 1
                if k == 0:
                    bo0 = net.proj_boff[q]
                else:
                    bo1 = net.proj_boff[q]
                if net.proj_moff[q] >= 0:
                    fused = False
        if nk != 1:
            fused = False
    if not fused:
        _gather(p, b, k0, k1, net, run, sc)
        bo0 = 0
        bo1 = 0
    elif n_ports == 1:
        bo1 = bo0
    use_tv = run.tv_off[p] >= 0
    uniform = net.pop_ip[p, IP_UNIFORM] == 1 and not use_tv and k1 > k0
    nsp = _advance(p, t, b, k0, k1, uniform, use_tv, fused, bo0, bo1, net, run, sc, spk)
    if nsp == 0:
        return 0
    return _collect(spk, k0, k1, net.pop_site[p], b, t, net.pop_off[p], sc, base,
                    run.rec_off[p], out)


@numba.njit(**NJIT_NORT)
def _collect(spk, k0, k1, ssz, b, t, off, sc, base, rec_off, out):
    """Append the neurons flagged in ``spk[k0:k1]`` to the ring at ``base`` (in index
    order), count and record them; returns how many.  The flags are read 8 at a time
    (as uint64 words) and 64 at a time (OR of 8 words), so a step with a few spikes
    costs a fraction of the update."""
    rc = 0
    a = min(k1, (k0 + 7) & ~7)              # unaligned head, one by one
    nw = (k1 - a) >> 3
    w = spk[a:a + 8 * nw].view(np.uint64)
    for k in range(k0, a):
        if spk[k] != 0:
            rc = _append(k, rc, ssz, b, t, off, sc, base, rec_off, out)
    for i0 in range(0, nw, 8):
        i1 = min(i0 + 8, nw)
        m = np.uint64(0)
        for i in range(i0, i1):
            m |= w[i]
        if m == 0:
            continue
        for i in range(i0, i1):
            if w[i] == 0:
                continue
            for k in range(a + 8 * i, a + 8 * i + 8):
                if spk[k] != 0:
                    rc = _append(k, rc, ssz, b, t, off, sc, base, rec_off, out)
    for k in range(a + 8 * nw, k1):
        if spk[k] != 0:
            rc = _append(k, rc, ssz, b, t, off, sc, base, rec_off, out)
    return rc


@numba.njit(**NJIT_NORT)
def _append(k, rc, ssz, b, t, off, sc, base, rec_off, out):
    s = k // ssz if ssz != 1 else k
    sc.ring_idx[base + rc] = k
    sc.ring_val[base + rc] = 1
    sc.ring_site[base + rc] = s
    sc.ring_ch[base + rc] = k - s * ssz
    out.counts[b, off + k] += 1
    if rec_off >= 0:
        out.rec[b, t, rec_off + k] = 1
    return rc + 1


# ---------------------------------------------------------------------------------------
# the recurrent CubaLIF runner: one sample, a neuron range per thread
#
# The engine parallelises over the samples of a batch; one sample runs on one thread.
# For a single sample of a network made only of CubaLIF populations joined by CSR / dense
# projections with delays >= 1 (the classic CUBA benchmark and its kin), run_split uses
# ``H`` threads instead: every population's neurons are cut into ``H`` contiguous ranges
# (multiples of 64 neurons), and range ``h`` of every population is one *piece*.  A piece
# of step t delivers the events due at t to the targets in its ranges only (every thread
# walks every spike of the step, but only the part of the synapse row that lands in its
# range: rows are sorted by target, the cut points are found once per run) and then
# updates its neurons, writing their spikes to its own segment of the spike ring.
# Pieces of one step share nothing; one barrier per step (a release store per thread,
# acquire loads by the others) makes the step's spike lists visible before the next
# step's deliveries.  Each target receives its events in the same order as in the
# general engine (spike order), so the results are bit-identical.  With H = 1 (one
# thread, or a small network) it is simply a leaner loop than the general engine's: no
# per-event dispatch over projection kinds, no touched-site bookkeeping (~10 % faster).
#
# Every stage of every piece is claimed with a compare-and-swap before it runs, so it
# runs exactly once whoever runs it.  A thread that has waited long at the barrier for a
# piece nobody has claimed runs it itself (its owner is not running: a busy machine, or a
# threading layer that runs the prange iterations one after another): no deadlock, same
# results.  It does not make a 2-thread run cheap on a machine whose cores are busy with
# other work: measured with one core taken by another process, 2 threads took 2-4x the
# 1-thread time (the threads still meet every 0.1 ms step).

_ARRIVED = 0            # ctrl slots (int64), 16 apart (128 bytes): arrivals,
_STOLEN = 16            # pieces run by another thread than their owner,
_CLAIM = 32             # _CLAIM + 32*h: next step of piece h to be claimed,
_DONE = 48              # _DONE + 32*h: steps of piece h finished
#: a waiting thread spins (``pause``, ~50 ns) this many times, then yields the core at
#: every check (a thread it waits for is not running).
_SPINS = 100_000
#: after this many spins, a thread waiting for an unclaimed piece runs it itself.
_STEAL_SPINS = 2000


class SplitArrays(NamedTuple):
    """The recurrent runner's plan and shared state (:func:`run_split`)."""
    part: np.ndarray        # int64 [P, H+1] neuron range bounds per population
    split_off: np.ndarray   # int64 [Q] offset of a projection's row cut points in `split`
    split: np.ndarray       # int64 row cut points (CSR rows × (H+1))
    unsorted: np.ndarray    # uint8 [Q*H] a row of the share is not sorted by target
    ring_cnt: np.ndarray    # int64 [P, depth, H] spikes per ring slot and piece
    ctrl: np.ndarray        # int64 [ctrl_size(H)] barrier and claim counters
    adopted: np.ndarray     # uint8 [H*H] pieces a thread runs for their absent owner


def ctrl_size(H):
    """Length of the int64 control array of :func:`run_split` for ``H`` threads."""
    return _CLAIM + 32 * H + 16


@numba.njit(**NJIT_NORT)
def _split_points(h, H, net, sp):
    """Piece ``h`` finds, for its share of the rows of every CSR projection, where each
    row crosses the range bounds of the receiver (rows sorted by target), and flags
    unsorted rows (their projection then scans whole rows with a range test)."""
    for q in range(net.proj_kind.shape[0]):
        if net.proj_kind[q] != K_CSR:
            continue
        ps = net.proj_src[q]
        r = net.proj_dst[q]
        n_pre = net.pop_off[ps + 1] - net.pop_off[ps]
        io = net.proj_ioff[q]
        xo = net.proj_xoff[q]
        so = sp.split_off[q]
        for j in range(n_pre * h // H, n_pre * (h + 1) // H):
            s0 = net.indptr[io + j]
            s1 = net.indptr[io + j + 1]
            s = s0
            for hh in range(H + 1):
                bound = sp.part[r, hh]
                while s < s1 and net.indices[xo + s] < bound:
                    s += 1
                sp.split[so + j * (H + 1) + hh] = s if hh < H else s1
            for s in range(s0 + 1, s1):
                if net.indices[xo + s] < net.indices[xo + s - 1]:
                    sp.unsorted[q * H + h] = 1


@numba.njit(**NJIT_NORT)
def _split_step(t, h, H, net, run, out, sc, sp):
    """Piece ``h`` of step ``t``: deliveries into its ranges, then its neuron updates."""
    weights, indptr, indices, buf = net.weights, net.indptr, net.indices, sc.buf
    for q in range(net.proj_kind.shape[0]):
        d = net.proj_delay[q]
        if t - d < 0:
            continue
        ps = net.proj_src[q]
        r = net.proj_dst[q]
        n_ps = net.pop_off[ps + 1] - net.pop_off[ps]
        n_r = net.pop_off[r + 1] - net.pop_off[r]
        slot = (t - d) % net.pop_depth[ps]
        lo = sp.part[r, h]
        hi = sp.part[r, h + 1]
        bo = np.uint64(net.proj_boff[q])
        wo = np.uint64(net.proj_woff[q])
        xo = np.uint64(net.proj_xoff[q])
        io = net.proj_ioff[q]
        so = sp.split_off[q]
        soff = net.proj_soff[q]
        whole_rows = False
        for hh in range(H):
            if sp.unsorted[q * H + hh]:
                whole_rows = True
        for hh in range(H):
            cnt = sp.ring_cnt[ps, slot, hh]
            base = net.pop_ring_off[ps] + slot * n_ps + sp.part[ps, hh]
            for e in range(cnt):
                j = np.int64(sc.ring_idx[base + e])
                if h == 0:
                    out.sent[0, soff + j] += 1
                if net.proj_kind[q] == K_CSR:
                    if whole_rows:
                        for s in range(np.uint64(indptr[io + j]), np.uint64(indptr[io + j + 1])):
                            i = np.int64(indices[xo + s])
                            if lo <= i < hi:
                                buf[bo + np.uint64(i)] += weights[wo + s]
                    else:
                        s0 = np.uint64(sp.split[so + j * (H + 1) + h])
                        s1 = np.uint64(sp.split[so + j * (H + 1) + h + 1])
                        for s in range(s0, s1):
                            buf[bo + np.uint64(indices[xo + s])] += weights[wo + s]
                else:
                    wr = wo + np.uint64(j * n_r)
                    for i in range(np.uint64(lo), np.uint64(hi)):
                        buf[bo + i] += weights[wr + i]
    P = net.pop_off.shape[0] - 1
    for si in range(P):
        p = net.schedule[si]
        if net.pop_model[p] != M_CUBA:
            continue
        n_p = net.pop_off[p + 1] - net.pop_off[p]
        slot = t % net.pop_depth[p]
        lo = sp.part[p, h]
        base = net.pop_ring_off[p] + slot * n_p + lo
        # spike flags at global indices: threads update different populations at once
        sp.ring_cnt[p, slot, h] = cuba_population(p, t, 0, lo, sp.part[p, h + 1], base, net, run,
                                                  out, sc, sc.spk[net.pop_off[p]:])


@numba.njit(**NJIT_NORT)
def _wait(spins):
    if spins < _SPINS:
        cpu_pause()
    else:
        os_yield()


@numba.njit(**NJIT_NORT)
def _piece(st, h, H, net, run, out, sc, sp):
    """Stage ``st`` of piece ``h``: 0 finds the row cut points, st >= 1 is step st - 1."""
    if st == 0:
        _split_points(h, H, net, sp)
    else:
        _split_step(st - 1, h, H, net, run, out, sc, sp)


@numba.njit(**NJIT_NORT)
def _split_worker(T, H, net, run, out, sc, sp, stop, done):
    """One thread: stages 0 .. T of its own piece, claimed with a compare-and-swap on the
    piece's next stage.  Before stage st it waits until every piece has finished stage
    st - 1 (the barrier).  A piece still unclaimed after a while is run by the waiting
    thread (its owner is not running: a busy machine, or a threading layer that runs the
    iterations one after another); the thief keeps claiming it at once in the next stages
    until the owner comes back and claims it first.  Every stage of every piece is run
    exactly once, so the results do not depend on who runs what.

    A nonzero stop word ``stop[0]`` (read before every stage and while waiting) makes
    every thread return at once, the results incomplete; the first thread to arrive
    writes the steps all pieces have finished to ``done[0]`` (progress)."""
    ctrl = sp.ctrl
    adopted = sp.adopted
    me = fetch_add(ctrl, _ARRIVED, 1)
    if me >= H:
        return
    for st in range(T + 2):            # stage T + 1: only the final barrier
        if stop[0] != 0:
            return
        for x in range(H):             # barrier: all pieces finished stage st - 1
            spins = 0
            while load_acquire(ctrl, _DONE + 32 * x) < st:
                if stop[0] != 0:
                    return
                if spins >= _STEAL_SPINS and compare_swap(ctrl, _CLAIM + 32 * x, st - 1, st):
                    _piece(st - 1, x, H, net, run, out, sc, sp)
                    store_release(ctrl, _DONE + 32 * x, st)
                    fetch_add(ctrl, _STOLEN, 1)
                    adopted[me * H + x] = 1
                else:
                    _wait(spins)
                    spins += 1
        if me == 0 and st > 0:
            done[0] = st - 1
        if st > T:
            break
        for x in range(H):             # own piece, then adopted ones
            if x != me and adopted[me * H + x] == 0:
                continue
            if compare_swap(ctrl, _CLAIM + 32 * x, st, st + 1):
                _piece(st, x, H, net, run, out, sc, sp)
                store_release(ctrl, _DONE + 32 * x, st + 1)
                if x != me:
                    fetch_add(ctrl, _STOLEN, 1)
            elif x != me:
                adopted[me * H + x] = 0          # its owner is back


@numba.njit(**NJIT_PARALLEL)
def run_split(T, H, n_buf, max_ports, net, run, out, part, split_off, n_split, stop, done):
    """Run T steps of sample 0 of a recurrent CubaLIF network on ``H`` threads, each
    owning the neuron ranges ``part[p, h] .. part[p, h+1]`` of every population ``p``.

    Same bundles and results as :func:`.engine.run_phase` for such a network (forward
    phase, batch 1, no masks, no time-varying currents); ``out.u_out`` holds the initial
    potentials on entry.  Returns how many piece-steps a thread ran for another (0 when
    every thread kept up).  ``stop`` and ``done``: the stop word and the progress counter
    (:func:`_split_worker`, :func:`.engine.run_phase`)."""
    P = net.pop_off.shape[0] - 1
    N = net.pop_off[P]
    Q = net.proj_kind.shape[0]
    dt = net.weights.dtype
    R = net.pop_ring_off[P]
    maxd = 1
    for p in range(P):
        maxd = max(maxd, net.pop_depth[p])
    e = np.zeros(0, np.int64)
    e8 = np.zeros(0, np.uint8)
    u = np.empty(N, dt)
    for g in range(N):
        u[g] = out.u_out[0, g]
    ref = np.zeros(N, np.int32)
    isyn = np.zeros((max_ports, N), dt)
    buf = np.zeros(n_buf, dt)
    ring_idx = np.zeros(R, np.int32)
    ring_val = np.zeros(R, np.int8)
    ring_site = np.zeros(R, np.int32)
    ring_ch = np.zeros(R, np.int32)
    ring_cnt2 = np.zeros((0, 0), np.int64)
    spk = np.zeros(N, np.int8)
    none_dt = np.zeros(0, dt)
    # positional (Numba cannot build a NamedTuple from many computed keywords)
    # (the ALIF adaptation ``adapt`` is empty: this runner takes CubaLIF networks only)
    sc = Scratch(u, ref, isyn, none_dt, buf, e, e8, e, e, e8, e, e, e, e, ring_idx, ring_val,
                 ring_site, ring_ch, ring_cnt2, e8, none_dt, spk, e, none_dt, e, e,
                 np.zeros(0, np.uint64), e, e)
    split = np.zeros(max(n_split, 1), np.int64)
    unsorted = np.zeros(Q * H, np.uint8)
    ring_cnt = np.zeros((P, maxd, H), np.int64)
    ctrl = np.zeros(_CLAIM + 32 * H + 16, np.int64)
    adopted = np.zeros(H * H, np.uint8)
    sp = SplitArrays(part, split_off, split, unsorted, ring_cnt, ctrl, adopted)
    for c in numba.prange(H):
        _split_worker(T, H, net, run, out, sc, sp, stop, done)
    for g in range(N):
        out.u_out[0, g] = sc.u[g]
    return sp.ctrl[_STOLEN]
