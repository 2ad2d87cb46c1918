"""Vectorised CubaLIF update: a whole population per step in flat loops (SIMD).

The engine updates CubaLIF populations densely at every step (their currents decay
whether or not events arrive).  Calling :func:`.neurons._cuba_update` neuron by neuron
costs far more than the arithmetic (~160 ns per neuron update for the CUBA benchmark
network, against < 1 ns here); instead a population is updated in one flat loop that
LLVM vectorises:

* the input buffers of the incoming projections are added to the currents where they
  are nonzero and cleared, in the same pass as the update when every receptor port is
  fed by exactly one unmasked projection (the usual case: one current, or excitatory +
  inhibitory), else in a separate pass first (:func:`_gather`);
* the exact-integration step is branch-free (selects) and counts the spikes (a
  reduction); one explicit loop per case, since a loop-invariant test inside the loop
  cost ~15 %;
* only when something spiked are the flags searched, 8 at a time (uint64 words) and
  64 at a time (OR of 8 words): a per-flag scan of the whole population every step cost
  more than the update itself when a few neurons fire at almost every step (an
  asynchronous network such as CUBA).

The arithmetic is that of :func:`.neurons._cuba_update`, operation by operation and in
the same types (float64 propagators applied to potentials and currents of the network's
dtype), so the results are bit-identical to the per-neuron path and to the dense twin
in ``tests/reference.py``.  Specialised for one and two receptor ports; populations
with more ports keep the per-neuron path (:data:`MAX_FAST_PORTS`).
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_NORT, NJIT_PARALLEL
from .neurons import _cuba_update
from .sync import compare_swap, cpu_pause, fetch_add, load_acquire, os_yield, store_release

#: receptor ports handled by the vectorised path.
MAX_FAST_PORTS = 2


@numba.njit(**NJIT_NORT)
def _advance(u, isyn, ref, crow, c0, trow, t0, use_tv, off, k0, k1, v_rest, v_th, v_reset,
             alpha_mem, i_e, t_ref, a0, p0, a1, p1, n_ports, fused, buf, bo0, bo1, spk):
    """Advance neurons ``off+k0 .. off+k1`` by one step; flags in ``spk[k0:k1]``.

    Drive of neuron ``off+k``: ``i_e + (crow[c0+k] (+ trow[t0+k]))``.  With ``fused``,
    port ``i`` is fed by the single unmasked input buffer at ``bo_i``: its events are
    added to the current where nonzero (as the per-neuron path does) and the buffer is
    cleared in the same pass; else the events are already in ``isyn``.  Returns the
    number of spikes."""
    o = np.uint64(off)
    cc = np.uint64(c0)
    tt = np.uint64(t0)
    b0 = np.uint64(bo0)
    b1 = np.uint64(bo1)
    one_m = 1.0 - alpha_mem
    nsp = 0
    if n_ports == 1 and fused:
        for k in range(np.uint64(k0), np.uint64(k1)):
            I = crow[cc + k]
            if use_tv:
                I += trow[tt + k]
            drive = i_e + I
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + drive * one_m
            x0 = buf[b0 + k]
            if x0 != 0.0:                # a masked store: clean cache lines stay clean
                buf[b0 + k] = 0.0
            i0 = isyn[0, o + k]
            i0 = i0 + x0 if x0 != 0.0 else i0
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    elif n_ports == 1:
        for k in range(np.uint64(k0), np.uint64(k1)):
            I = crow[cc + k]
            if use_tv:
                I += trow[tt + k]
            drive = i_e + I
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + drive * one_m
            i0 = isyn[0, o + k]
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    elif fused:
        for k in range(np.uint64(k0), np.uint64(k1)):
            I = crow[cc + k]
            if use_tv:
                I += trow[tt + k]
            drive = i_e + I
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + drive * one_m
            x0 = buf[b0 + k]
            if x0 != 0.0:                # a masked store: clean cache lines stay clean
                buf[b0 + k] = 0.0
            i0 = isyn[0, o + k]
            i0 = i0 + x0 if x0 != 0.0 else i0
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            x1 = buf[b1 + k]
            if x1 != 0.0:
                buf[b1 + k] = 0.0
            i1 = isyn[1, o + k]
            i1 = i1 + x1 if x1 != 0.0 else i1
            acc += i1 * p1
            isyn[1, o + k] = i1 * a1
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    else:
        for k in range(np.uint64(k0), np.uint64(k1)):
            I = crow[cc + k]
            if use_tv:
                I += trow[tt + k]
            drive = i_e + I
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + drive * one_m
            i0 = isyn[0, o + k]
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            i1 = isyn[1, o + k]
            acc += i1 * p1
            isyn[1, o + k] = i1 * a1
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    return nsp


@numba.njit(**NJIT_NORT)
def _advance_uniform(u, isyn, ref, dterm, off, k0, k1, v_rest, v_th, v_reset, alpha_mem, t_ref,
                     a0, p0, a1, p1, n_ports, fused, buf, bo0, bo1, spk):
    """:func:`_advance` for a population whose constant drive is the same for every
    neuron (no time-varying current): ``dterm = (i_e + I) * (1 - alpha_mem)`` is computed
    once, the per-neuron constant is not read (8 bytes per neuron less traffic: ~5 %
    at 16,000 neurons); the same operations, so the same results."""
    o = np.uint64(off)
    b0 = np.uint64(bo0)
    b1 = np.uint64(bo1)
    nsp = 0
    if n_ports == 1 and fused:
        for k in range(np.uint64(k0), np.uint64(k1)):
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + dterm
            x0 = buf[b0 + k]
            if x0 != 0.0:                # a masked store: clean cache lines stay clean
                buf[b0 + k] = 0.0
            i0 = isyn[0, o + k]
            i0 = i0 + x0 if x0 != 0.0 else i0
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    elif n_ports == 1:
        for k in range(np.uint64(k0), np.uint64(k1)):
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + dterm
            i0 = isyn[0, o + k]
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    elif fused:
        for k in range(np.uint64(k0), np.uint64(k1)):
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + dterm
            x0 = buf[b0 + k]
            if x0 != 0.0:                # a masked store: clean cache lines stay clean
                buf[b0 + k] = 0.0
            i0 = isyn[0, o + k]
            i0 = i0 + x0 if x0 != 0.0 else i0
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            x1 = buf[b1 + k]
            if x1 != 0.0:
                buf[b1 + k] = 0.0
            i1 = isyn[1, o + k]
            i1 = i1 + x1 if x1 != 0.0 else i1
            acc += i1 * p1
            isyn[1, o + k] = i1 * a1
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    else:
        for k in range(np.uint64(k0), np.uint64(k1)):
            acc = v_rest + (u[o + k] - v_rest) * alpha_mem + dterm
            i0 = isyn[0, o + k]
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            i1 = isyn[1, o + k]
            acc += i1 * p1
            isyn[1, o + k] = i1 * a1
            r = ref[o + k]
            hold = r > 0
            f = (not hold) and acc >= v_th
            u[o + k] = v_reset if (hold or f) else acc
            ref[o + k] = (r - 1) if hold else (t_ref if f else r)
            spk[k] = f
            nsp += f
    return nsp


@numba.njit(**NJIT_NORT)
def _gather(p, b, off, k0, k1, in_ptr, in_proj, proj_boff, proj_moff, proj_port, masks, isyn,
            buf):
    """Add every incoming projection's buffer (times its mask) to the current of its
    port where nonzero, and clear it, for neurons ``k0 .. k1`` (the unfused case)."""
    o = np.uint64(off)
    for a in range(in_ptr[p], in_ptr[p + 1]):
        q = in_proj[a]
        k = proj_port[q]
        bo = np.uint64(proj_boff[q])
        if proj_moff[q] >= 0:
            mo = np.uint64(proj_moff[q])
            for j in range(np.uint64(k0), np.uint64(k1)):
                y = buf[bo + j]
                x = y * masks[b, mo + j]
                cur = isyn[k, o + j]
                isyn[k, o + j] = cur + x if x != 0.0 else cur
                if y != 0.0:
                    buf[bo + j] = 0.0
        else:
            for j in range(np.uint64(k0), np.uint64(k1)):
                x = buf[bo + j]
                cur = isyn[k, o + j]
                isyn[k, o + j] = cur + x if x != 0.0 else cur
                if x != 0.0:
                    buf[bo + j] = 0.0


@numba.njit(**NJIT_NORT)
def _cuba_range(p, t, b, k0, k1, off, ssz, fp, ip, syn, in_ptr, in_proj, proj_boff, proj_moff,
                proj_port, masks, const, tv, tv_off, u, ref, isyn, buf, spk, ring_idx, ring_val,
                ring_site, ring_ch, base, rec, rec_off, counts):
    """One step of neurons ``k0 .. k1`` of CubaLIF population ``p`` (first neuron ``off``,
    sites of ``ssz``) for sample ``b``: gather their input buffers into the currents,
    advance, append the spikes to the ring at ``base``, count and record them.  Returns
    the number of spikes appended."""
    n_ports = ip[p, 1]
    # fused when every port is fed by exactly one unmasked projection
    bo0 = -1
    bo1 = -1
    fused = True
    for k in range(n_ports):
        nk = 0
        for a in range(in_ptr[p], in_ptr[p + 1]):
            q = in_proj[a]
            if proj_port[q] == k:
                nk += 1
                if k == 0:
                    bo0 = proj_boff[q]
                else:
                    bo1 = proj_boff[q]
                if proj_moff[q] >= 0:
                    fused = False
        if nk != 1:
            fused = False
    if not fused:
        _gather(p, b, off, k0, k1, in_ptr, in_proj, proj_boff, proj_moff, proj_port, masks, isyn,
                buf)
        bo0 = 0
        bo1 = 0
    elif n_ports == 1:
        bo1 = bo0
    use_tv = tv_off[p] >= 0
    crow = const[b]
    trow = tv[b, t] if use_tv else crow
    t0 = tv_off[p] if use_tv else 0
    v_rest, v_th, v_reset, alpha_mem, i_e = fp[p, 0], fp[p, 1], fp[p, 2], fp[p, 3], fp[p, 4]
    t_ref = ip[p, 0]
    a0, p0, a1, p1 = syn[p, 0, 0], syn[p, 1, 0], syn[p, 0, 1], syn[p, 1, 1]
    if fp[p, 5] == 1.0 and not use_tv and k1 > k0:      # uniform drive (engine._alloc_run)
        dterm = (i_e + crow[off]) * (1.0 - alpha_mem)
        nsp = _advance_uniform(u, isyn, ref, dterm, off, k0, k1, v_rest, v_th, v_reset,
                               alpha_mem, t_ref, a0, p0, a1, p1, n_ports, fused, buf, bo0, bo1,
                               spk)
    else:
        nsp = _advance(u, isyn, ref, crow, off, trow, t0, use_tv, off, k0, k1, v_rest, v_th,
                       v_reset, alpha_mem, i_e, t_ref, a0, p0, a1, p1, n_ports, fused, buf, bo0,
                       bo1, spk)
    if nsp == 0:
        return 0
    return _collect(spk, k0, k1, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base,
                    rec, rec_off, counts)


@numba.njit(**NJIT_NORT)
def _cuba_population(p, t, b, off, n, ssz, fp, ip, syn, in_ptr, in_proj, proj_boff, proj_moff,
                     proj_port, masks, const, tv, tv_off, u, ref, isyn, buf, spk, ring_idx,
                     ring_val, ring_site, ring_ch, base, rec, rec_off, counts):
    """One step of the whole CubaLIF population ``p`` (``n`` neurons from ``off``) for
    sample ``b``; returns the ring count.  Engine helper (same contract as the per-site
    path of :mod:`.engine`); needs ``ip[p, 1] <= MAX_FAST_PORTS`` ports."""
    return _cuba_range(p, t, b, 0, n, off, ssz, fp, ip, syn, in_ptr, in_proj, proj_boff,
                       proj_moff, proj_port, masks, const, tv, tv_off, u, ref, isyn, buf, spk,
                       ring_idx, ring_val, ring_site, ring_ch, base, rec, rec_off, counts)


@numba.njit(**NJIT_NORT)
def _collect(spk, k0, k1, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base, rec,
             rec_off, counts):
    """Append the neurons flagged in ``spk[k0:k1]`` to the ring at ``base`` (in index
    order), count and record them; returns how many.  The flags are read 8 at a time
    (as uint64 words) and 64 at a time (OR of 8 words), so a step with a few spikes
    costs a fraction of the update."""
    rc = 0
    a = min(k1, (k0 + 7) & ~7)              # unaligned head, one by one
    for k in range(k0, a):
        if spk[k] != 0:
            rc = _append(k, rc, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base,
                         rec, rec_off, counts)
    nw = (k1 - a) >> 3
    w = spk[a:a + 8 * nw].view(np.uint64)
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
                    rc = _append(k, rc, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch,
                                 base, rec, rec_off, counts)
    for k in range(a + 8 * nw, k1):
        if spk[k] != 0:
            rc = _append(k, rc, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base,
                         rec, rec_off, counts)
    return rc


@numba.njit(**NJIT_NORT)
def _append(k, rc, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base, rec, rec_off,
            counts):
    if ssz == 1:
        s = k
        c = 0
    else:
        s = k // ssz
        c = k - s * ssz
    ring_idx[base + rc] = k
    ring_val[base + rc] = 1
    ring_site[base + rc] = s
    ring_ch[base + rc] = c
    counts[b, off + k] += 1
    if rec_off >= 0:
        rec[b, t, rec_off + k] = 1
    return rc + 1


@numba.njit(**NJIT)
def cuba_block_step(v, i_syn, ref, events, const, v_rest, v_th, v_reset, alpha_mem, alpha_syn,
                    p_syn, i_e, t_ref, spikes):
    """Dense CubaLIF step of every neuron, vectorised (same contract and results as
    :func:`.neurons.cuba_step`): ``events`` (ports × n) jump ``i_syn`` first, then the
    exact step; ``spikes`` receives the flags.  Returns the number of spikes."""
    n = v.shape[0]
    n_ports = i_syn.shape[0]
    for k in range(n_ports):
        for j in range(n):
            i_syn[k, j] += events[k, j]
    if n_ports > MAX_FAST_PORTS:
        m = 0
        for j in range(n):
            s = _cuba_update(v, i_syn, ref, j, i_e + const[j], v_rest, v_th, v_reset,
                             alpha_mem, alpha_syn, p_syn, t_ref)
            spikes[j] = s
            m += s
        return m
    a1 = alpha_syn[1] if n_ports > 1 else 0.0
    p1 = p_syn[1] if n_ports > 1 else 0.0
    flags = np.zeros(n, np.int8)
    m = _advance(v, i_syn, ref, const, 0, const, 0, False, 0, 0, n, v_rest, v_th, v_reset,
                 alpha_mem, i_e, t_ref, alpha_syn[0], p_syn[0], a1, p1, n_ports, False, const, 0,
                 0, flags)
    for j in range(n):
        spikes[j] = flags[j]
    return m


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
K_DENSE, K_CSR = 0, 1   # engine projection kinds used here
M_CUBA = 2


def ctrl_size(H):
    """Length of the int64 control array of :func:`run_split` for ``H`` threads."""
    return _CLAIM + 32 * H + 16


@numba.njit(**NJIT_NORT)
def _split_points(h, H, pop_off, part, proj_kind, proj_src, proj_dst, proj_ioff, proj_xoff,
                  indptr, indices, split_off, split, unsorted):
    """Piece ``h`` finds, for its share of the rows of every CSR projection, where each
    row crosses the range bounds of the receiver (rows sorted by target), and flags
    unsorted rows (their projection then scans whole rows with a range test)."""
    Q = proj_kind.shape[0]
    for q in range(Q):
        if proj_kind[q] != K_CSR:
            continue
        ps = proj_src[q]
        r = proj_dst[q]
        n_pre = pop_off[ps + 1] - pop_off[ps]
        io = proj_ioff[q]
        xo = proj_xoff[q]
        so = split_off[q]
        for j in range(n_pre * h // H, n_pre * (h + 1) // H):
            s0 = indptr[io + j]
            s1 = indptr[io + j + 1]
            s = s0
            for hh in range(H + 1):
                bound = part[r, hh]
                while s < s1 and indices[xo + s] < bound:
                    s += 1
                split[so + j * (H + 1) + hh] = s if hh < H else s1
            for s in range(s0 + 1, s1):
                if indices[xo + s] < indices[xo + s - 1]:
                    unsorted[q * H + h] = 1


@numba.njit(**NJIT_NORT)
def _split_step(t, h, H, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth, pop_ring_off,
                pop_model, schedule, in_ptr, in_proj, proj_kind, proj_src, proj_dst, proj_delay,
                proj_port, proj_woff, proj_ioff, proj_xoff, proj_boff, proj_soff, proj_moff,
                weights, indptr, indices, const, tv, tv_off, masks, part, split_off, split,
                unsorted, u, ref, isyn, buf, spk, ring_idx, ring_val, ring_site, ring_ch,
                ring_cnt, counts, sent, rec, rec_off):
    """Piece ``h`` of step ``t``: deliveries into its ranges, then its neuron updates."""
    Q = proj_kind.shape[0]
    for q in range(Q):
        d = proj_delay[q]
        if t - d < 0:
            continue
        ps = proj_src[q]
        r = proj_dst[q]
        n_ps = pop_off[ps + 1] - pop_off[ps]
        n_r = pop_off[r + 1] - pop_off[r]
        slot = (t - d) % pop_depth[ps]
        lo = part[r, h]
        hi = part[r, h + 1]
        bo = np.uint64(proj_boff[q])
        wo = np.uint64(proj_woff[q])
        xo = np.uint64(proj_xoff[q])
        io = proj_ioff[q]
        so = split_off[q]
        soff = proj_soff[q]
        whole_rows = False
        for hh in range(H):
            if unsorted[q * H + hh]:
                whole_rows = True
        for hh in range(H):
            cnt = ring_cnt[ps, slot, hh]
            base = pop_ring_off[ps] + slot * n_ps + part[ps, hh]
            for e in range(cnt):
                j = np.int64(ring_idx[base + e])
                if h == 0:
                    sent[0, soff + j] += 1
                if proj_kind[q] == K_CSR:
                    if whole_rows:
                        for s in range(np.uint64(indptr[io + j]), np.uint64(indptr[io + j + 1])):
                            i = np.int64(indices[xo + s])
                            if lo <= i < hi:
                                buf[bo + np.uint64(i)] += weights[wo + s]
                    else:
                        s0 = np.uint64(split[so + j * (H + 1) + h])
                        s1 = np.uint64(split[so + j * (H + 1) + h + 1])
                        for s in range(s0, s1):
                            buf[bo + np.uint64(indices[xo + s])] += weights[wo + s]
                else:
                    wr = wo + np.uint64(j * n_r)
                    for i in range(np.uint64(lo), np.uint64(hi)):
                        buf[bo + i] += weights[wr + i]
    P = pop_off.shape[0] - 1
    for si in range(P):
        p = schedule[si]
        if pop_model[p] != M_CUBA:
            continue
        n_p = pop_off[p + 1] - pop_off[p]
        slot = t % pop_depth[p]
        lo = part[p, h]
        base = pop_ring_off[p] + slot * n_p + lo
        # spike flags at global indices: threads update different populations at once
        ring_cnt[p, slot, h] = _cuba_range(
            p, t, 0, lo, part[p, h + 1], pop_off[p], pop_site[p], pop_fp, pop_ip, pop_syn,
            in_ptr, in_proj, proj_boff, proj_moff, proj_port, masks, const, tv, tv_off, u, ref,
            isyn, buf, spk[pop_off[p]:], ring_idx, ring_val, ring_site, ring_ch, base, rec,
            rec_off[p], counts)


@numba.njit(**NJIT_NORT)
def _wait(spins):
    if spins < _SPINS:
        cpu_pause()
    else:
        os_yield()


@numba.njit(**NJIT_NORT)
def _piece(st, h, H, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth, pop_ring_off,
           pop_model, schedule, in_ptr, in_proj, proj_kind, proj_src, proj_dst, proj_delay,
           proj_port, proj_woff, proj_ioff, proj_xoff, proj_boff, proj_soff, proj_moff, weights,
           indptr, indices, const, tv, tv_off, masks, part, split_off, split, unsorted, u, ref,
           isyn, buf, spk, ring_idx, ring_val, ring_site, ring_ch, ring_cnt, counts, sent, rec,
           rec_off):
    """Stage ``st`` of piece ``h``: 0 finds the row cut points, st >= 1 is step st - 1."""
    if st == 0:
        _split_points(h, H, pop_off, part, proj_kind, proj_src, proj_dst, proj_ioff, proj_xoff,
                      indptr, indices, split_off, split, unsorted)
    else:
        _split_step(st - 1, h, H, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth,
                    pop_ring_off, pop_model, schedule, in_ptr, in_proj, proj_kind, proj_src,
                    proj_dst, proj_delay, proj_port, proj_woff, proj_ioff, proj_xoff, proj_boff,
                    proj_soff, proj_moff, weights, indptr, indices, const, tv, tv_off, masks,
                    part, split_off, split, unsorted, u, ref, isyn, buf, spk, ring_idx,
                    ring_val, ring_site, ring_ch, ring_cnt, counts, sent, rec, rec_off)


@numba.njit(**NJIT_NORT)
def _split_worker(T, H, ctrl, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth,
                  pop_ring_off, pop_model, schedule, in_ptr, in_proj, proj_kind, proj_src,
                  proj_dst, proj_delay, proj_port, proj_woff, proj_ioff, proj_xoff, proj_boff,
                  proj_soff, proj_moff, weights, indptr, indices, const, tv, tv_off, masks, part,
                  split_off, split, unsorted, u, ref, isyn, buf, spk, ring_idx, ring_val,
                  ring_site, ring_ch, ring_cnt, counts, sent, rec, rec_off, adopted):
    """One thread: stages 0 .. T of its own piece, claimed with a compare-and-swap on the
    piece's next stage.  Before stage st it waits until every piece has finished stage
    st - 1 (the barrier).  A piece still unclaimed after a while is run by the waiting
    thread (its owner is not running: a busy machine, or a threading layer that runs the
    iterations one after another); the thief keeps claiming it at once in the next stages
    until the owner comes back and claims it first.  Every stage of every piece is run
    exactly once, so the results do not depend on who runs what."""
    me = fetch_add(ctrl, _ARRIVED, 1)
    if me >= H:
        return
    for st in range(T + 2):            # stage T + 1: only the final barrier
        for x in range(H):             # barrier: all pieces finished stage st - 1
            spins = 0
            while load_acquire(ctrl, _DONE + 32 * x) < st:
                if spins >= _STEAL_SPINS and compare_swap(ctrl, _CLAIM + 32 * x, st - 1, st):
                    _piece(st - 1, x, H, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth,
                           pop_ring_off, pop_model, schedule, in_ptr, in_proj, proj_kind,
                           proj_src, proj_dst, proj_delay, proj_port, proj_woff, proj_ioff,
                           proj_xoff, proj_boff, proj_soff, proj_moff, weights, indptr, indices,
                           const, tv, tv_off, masks, part, split_off, split, unsorted, u, ref,
                           isyn, buf, spk, ring_idx, ring_val, ring_site, ring_ch, ring_cnt,
                           counts, sent, rec, rec_off)
                    store_release(ctrl, _DONE + 32 * x, st)
                    fetch_add(ctrl, _STOLEN, 1)
                    adopted[me * H + x] = 1
                else:
                    _wait(spins)
                    spins += 1
        if st > T:
            break
        for x in range(H):             # own piece, then adopted ones
            if x != me and adopted[me * H + x] == 0:
                continue
            if compare_swap(ctrl, _CLAIM + 32 * x, st, st + 1):
                _piece(st, x, H, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth,
                       pop_ring_off, pop_model, schedule, in_ptr, in_proj, proj_kind, proj_src,
                       proj_dst, proj_delay, proj_port, proj_woff, proj_ioff, proj_xoff,
                       proj_boff, proj_soff, proj_moff, weights, indptr, indices, const, tv,
                       tv_off, masks, part, split_off, split, unsorted, u, ref, isyn, buf, spk,
                       ring_idx, ring_val, ring_site, ring_ch, ring_cnt, counts, sent, rec,
                       rec_off)
                store_release(ctrl, _DONE + 32 * x, st + 1)
                if x != me:
                    fetch_add(ctrl, _STOLEN, 1)
            elif x != me:
                adopted[me * H + x] = 0          # its owner is back


@numba.njit(**NJIT_PARALLEL)
def run_split(T, H, rec_off, pop_off, pop_site, pop_model, pop_fp, pop_ip, pop_syn, pop_depth,
              pop_ring_off, schedule, in_ptr, in_proj, proj_kind, proj_src, proj_dst, proj_delay,
              proj_port, proj_woff, proj_ioff, proj_xoff, proj_boff, proj_soff, proj_moff,
              weights, indptr, indices, const, n_buf, max_ports, part, split_off, n_split, ctrl,
              counts, u_out, sent, rec):
    """Run T steps of sample 0 of a recurrent CubaLIF network on ``H`` threads, each
    owning the neuron ranges ``part[p, h] .. part[p, h+1]`` of every population ``p``.

    Same arrays and results as :func:`.engine.run_phase` for such a network (forward
    phase, batch 1, no masks, no time-varying currents); ``u_out`` holds the initial
    potentials on entry.  ``ctrl``: zeros of length :func:`ctrl_size`.  Returns how many
    piece-steps a thread ran for another (0 when every thread kept up)."""
    P = pop_off.shape[0] - 1
    N = pop_off[P]
    Q = proj_kind.shape[0]
    dt = weights.dtype
    u = np.empty(N, dt)
    for g in range(N):
        u[g] = u_out[0, g]
    ref = np.zeros(N, np.int32)
    isyn = np.zeros((max_ports, N), dt)
    buf = np.zeros(n_buf, dt)
    spk = np.zeros(N, np.int8)
    ring_idx = np.zeros(pop_ring_off[P], np.int32)
    ring_val = np.zeros(pop_ring_off[P], np.int8)
    ring_site = np.zeros(pop_ring_off[P], np.int32)
    ring_ch = np.zeros(pop_ring_off[P], np.int32)
    maxd = 1
    for p in range(P):
        maxd = max(maxd, pop_depth[p])
    ring_cnt = np.zeros((P, maxd, H), np.int64)
    split = np.zeros(max(n_split, 1), np.int64)
    unsorted = np.zeros(Q * H, np.uint8)
    tv = np.zeros((1, 1, 1), dt)
    tv_off = np.full(P, -1, np.int64)
    masks = np.zeros((1, 1), dt)
    adopted = np.zeros(H * H, np.uint8)
    for c in numba.prange(H):
        _split_worker(T, H, ctrl, pop_off, pop_site, pop_fp, pop_ip, pop_syn, pop_depth,
                      pop_ring_off, pop_model, schedule, in_ptr, in_proj, proj_kind, proj_src,
                      proj_dst, proj_delay, proj_port, proj_woff, proj_ioff, proj_xoff,
                      proj_boff, proj_soff, proj_moff, weights, indptr, indices, const, tv,
                      tv_off, masks, part, split_off, split, unsorted, u, ref, isyn, buf, spk,
                      ring_idx, ring_val, ring_site, ring_ch, ring_cnt, counts, sent, rec,
                      rec_off, adopted)
    for g in range(N):
        u_out[0, g] = u[g]
    return ctrl[_STOLEN]
