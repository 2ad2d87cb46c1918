"""Vectorised CubaLIF update: a whole population per step in flat loops (SIMD).

The engine updates CubaLIF populations densely at every step (their currents decay
whether or not events arrive).  The per-neuron path (:func:`.neurons._cuba_update`
called site by site) costs far more than the arithmetic; here one population is
updated in three flat loops that LLVM vectorises:

1. per incoming projection: ``i_syn[port] += buf`` (times the mask, if any) where the
   buffer is nonzero, and clear the buffer;
2. the exact-integration step of every neuron, branch-free (selects), with a count of
   the spikes (a reduction);
3. only when something spiked: the spike list, found block by block (an OR over 64
   flags first, so a quiet block costs one vector pass, not 64 branches).

The arithmetic is that of :func:`.neurons._cuba_update`, operation by operation and in
the same types (float64 propagators applied to potentials and currents of the network's
dtype), so the results are bit-identical to the per-neuron path and to the dense twin
(``tests/reference.py``).  Specialised for one and two receptor ports (the common cases:
one current, or excitatory + inhibitory); populations with more ports keep the
per-neuron path.
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_NORT
from .neurons import _cuba_update

#: receptor ports handled by the vectorised path.
MAX_FAST_PORTS = 2
#: spike-flag block scanned at once when collecting spikes.
_BLOCK = 64


@numba.njit(**NJIT_NORT)
def _cuba_advance(u, isyn, ref, crow, c0, trow, t0, use_tv, off, n, v_rest, v_th, v_reset,
                  alpha_mem, i_e, t_ref, a0, p0, a1, p1, n_ports, spk):
    """Advance neurons ``off .. off+n`` by one step (events already in ``isyn``).

    Drive of neuron ``off+k``: ``i_e + (crow[c0+k] (+ trow[t0+k]))``.  Writes the spike
    flags to ``spk[0:n]``; returns the number of spikes."""
    o = np.uint64(off)
    cc = np.uint64(c0)
    tt = np.uint64(t0)
    one_m = 1.0 - alpha_mem
    nsp = 0
    if n_ports == 1:
        for k in range(np.uint64(n)):
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
    else:
        for k in range(np.uint64(n)):
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
def _cuba_population(p, t, b, off, n, ssz, fp, ip, syn, in_ptr, in_proj, proj_boff, proj_moff,
                     proj_port, masks, const, tv, tv_off, u, ref, isyn, buf, spk, ring_idx,
                     ring_val, ring_site, ring_ch, base, rec, rec_off, counts):
    """One step of the whole CubaLIF population ``p`` (neurons ``off .. off+n``, sites of
    ``ssz``) for sample ``b``: gather its input buffers into the currents, advance, append
    the spikes to the ring at ``base``.  Returns the number of spikes (the ring count).

    Engine helper (same contract as the per-site path of :mod:`.engine`); needs
    ``ip[p, 1] <= MAX_FAST_PORTS`` ports."""
    o = np.uint64(off)
    for a in range(in_ptr[p], in_ptr[p + 1]):
        q = in_proj[a]
        k = proj_port[q]
        bo = np.uint64(proj_boff[q])
        if proj_moff[q] >= 0:
            mo = np.uint64(proj_moff[q])
            for j in range(np.uint64(n)):
                x = buf[bo + j] * masks[b, mo + j]
                # the per-neuron path skips x == 0 (keeps the sign of a zero current)
                cur = isyn[k, o + j]
                isyn[k, o + j] = cur + x if x != 0.0 else cur
                buf[bo + j] = 0.0
        else:
            for j in range(np.uint64(n)):
                x = buf[bo + j]
                cur = isyn[k, o + j]
                isyn[k, o + j] = cur + x if x != 0.0 else cur
                buf[bo + j] = 0.0
    use_tv = tv_off[p] >= 0
    crow = const[b]
    trow = tv[b, t] if use_tv else crow
    t0 = tv_off[p] if use_tv else 0
    nsp = _cuba_advance(u, isyn, ref, crow, off, trow, t0, use_tv, off, n, fp[p, 0], fp[p, 1],
                        fp[p, 2], fp[p, 3], fp[p, 4], ip[p, 0], syn[p, 0, 0], syn[p, 1, 0],
                        syn[p, 0, 1], syn[p, 1, 1], ip[p, 1], spk)
    rc = 0
    if nsp == 0:
        return rc
    for k0 in range(0, n, _BLOCK):
        k1 = min(k0 + _BLOCK, n)
        anyf = 0
        for k in range(k0, k1):
            anyf |= spk[k]
        if anyf == 0:
            continue
        for k in range(k0, k1):
            if spk[k] != 0:
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
                rc += 1
                counts[b, off + k] += 1
                if rec_off >= 0:
                    rec[b, t, rec_off + k] = 1
    return rc


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
    m = _cuba_advance(v, i_syn, ref, const, 0, const, 0, False, 0, n, v_rest, v_th, v_reset,
                      alpha_mem, i_e, t_ref, alpha_syn[0], p_syn[0], a1, p1, n_ports, flags)
    for j in range(n):
        spikes[j] = flags[j]
    return m
