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

from ..config import NJIT, NJIT_NORT
from .neurons import _cuba_update

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
            buf[b0 + k] = 0.0
            i0 = isyn[0, o + k]
            i0 = i0 + x0 if x0 != 0.0 else i0
            acc += i0 * p0
            isyn[0, o + k] = i0 * a0
            x1 = buf[b1 + k]
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
def _gather(p, b, off, n, in_ptr, in_proj, proj_boff, proj_moff, proj_port, masks, isyn, buf):
    """Add every incoming projection's buffer (times its mask) to the current of its
    port where nonzero, and clear the buffer (the unfused case)."""
    o = np.uint64(off)
    for a in range(in_ptr[p], in_ptr[p + 1]):
        q = in_proj[a]
        k = proj_port[q]
        bo = np.uint64(proj_boff[q])
        if proj_moff[q] >= 0:
            mo = np.uint64(proj_moff[q])
            for j in range(np.uint64(n)):
                x = buf[bo + j] * masks[b, mo + j]
                cur = isyn[k, o + j]
                isyn[k, o + j] = cur + x if x != 0.0 else cur
                buf[bo + j] = 0.0
        else:
            for j in range(np.uint64(n)):
                x = buf[bo + j]
                cur = isyn[k, o + j]
                isyn[k, o + j] = cur + x if x != 0.0 else cur
                buf[bo + j] = 0.0


@numba.njit(**NJIT_NORT)
def _cuba_population(p, t, b, off, n, ssz, fp, ip, syn, in_ptr, in_proj, proj_boff, proj_moff,
                     proj_port, masks, const, tv, tv_off, u, ref, isyn, buf, spk, ring_idx,
                     ring_val, ring_site, ring_ch, base, rec, rec_off, counts):
    """One step of the whole CubaLIF population ``p`` (neurons ``off .. off+n``, sites of
    ``ssz``) for sample ``b``: gather its input buffers into the currents, advance, append
    the spikes to the ring at ``base``, count and record them.  Returns the ring count.

    Engine helper (same contract as the per-site path of :mod:`.engine`); needs
    ``ip[p, 1] <= MAX_FAST_PORTS`` ports."""
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
        _gather(p, b, off, n, in_ptr, in_proj, proj_boff, proj_moff, proj_port, masks, isyn, buf)
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
    nsp = _advance(u, isyn, ref, crow, off, trow, t0, use_tv, off, 0, n, v_rest, v_th, v_reset,
                   alpha_mem, i_e, t_ref, a0, p0, a1, p1, n_ports, fused, buf, bo0, bo1, spk)
    if nsp == 0:
        return 0
    return _collect(spk, n, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base, rec,
                    rec_off, counts)


@numba.njit(**NJIT_NORT)
def _collect(spk, n, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch, base, rec, rec_off,
             counts):
    """Append the neurons flagged in ``spk[0:n]`` to the ring at ``base`` (in index
    order), count and record them; returns the ring count.  The flags are read 8 at a
    time (as uint64 words) and 64 at a time (OR of 8 words), so a step with a few spikes
    costs a fraction of the update."""
    rc = 0
    nw = n >> 3
    w = spk[:8 * nw].view(np.uint64)
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
            for k in range(8 * i, 8 * i + 8):
                if spk[k] != 0:
                    rc = _append(k, rc, ssz, b, t, off, ring_idx, ring_val, ring_site, ring_ch,
                                 base, rec, rec_off, counts)
    for k in range(8 * nw, n):
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
