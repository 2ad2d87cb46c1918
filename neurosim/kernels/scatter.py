"""Event scatter: what one spike adds to the input buffer of the receiving population.

Each function handles one event of sender neuron ``j`` with value ``val`` on one
projection and marks the receiving *sites* it touched (see :mod:`.engine`).  ``weighted``
False means ``val == 1`` and the inner loop is a pure contiguous add (SIMD-friendly).

Geometry ``geo`` = (Cs, Hs, Ws, Cr, Hr, Wr, kh, kw, stride, pad) of sender and receiver;
neurons are channel-last: ``(c, y, x) -> (y*W + x)*C + c``.  Conv weights are laid out
``(kh, kw, C_sender, C_receiver)`` so the innermost loop runs over receiver channels.
"""
import numba
import numpy as np

from ..config import NJIT


@numba.njit(**NJIT)
def _mark(site, mark, tlist, tcount, p, site_off):
    g = site_off + site
    if mark[g] == 0:
        mark[g] = 1
        tlist[site_off + tcount[p]] = site
        tcount[p] += 1


@numba.njit(**NJIT)
def dense_scatter(buf, boff, W, woff, j, n_r, val, weighted):
    base = woff + j * n_r
    if weighted:
        for i in range(n_r):
            buf[boff + i] += val * W[base + i]
    else:
        for i in range(n_r):
            buf[boff + i] += W[base + i]


@numba.njit(**NJIT)
def csr_scatter(buf, boff, W, woff, indptr, ioff, indices, xoff, j, val, weighted,
                mark, tlist, tcount, p, site_off, ssz):
    """Sparse scatter; the receiver's sites hold ``ssz`` neurons each."""
    s0 = indptr[ioff + j]
    s1 = indptr[ioff + j + 1]
    for s in range(s0, s1):
        i = np.int64(indices[xoff + s])
        if weighted:
            buf[boff + i] += val * W[woff + s]
        else:
            buf[boff + i] += W[woff + s]
        _mark(i // ssz, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT)
def conv_down_scatter(buf, boff, W, woff, geo, j, val, weighted, mark, tlist, tcount, p, site_off):
    """Conv-style scatter: receiver (oy, ox) with oy*stride - pad + ky = y."""
    Cs, Ws, Cr, Hr, Wr = geo[0], geo[2], geo[3], geo[4], geo[5]
    kh, kw, st, pad = geo[6], geo[7], geo[8], geo[9]
    c = j % Cs
    pos = j // Cs
    y = pos // Ws
    x = pos - y * Ws
    for ky in range(kh):
        ny = y + pad - ky
        if ny < 0:
            break
        if ny % st != 0:
            continue
        oy = ny // st
        if oy >= Hr:
            continue
        for kx in range(kw):
            nx = x + pad - kx
            if nx < 0:
                break
            if nx % st != 0:
                continue
            ox = nx // st
            if ox >= Wr:
                continue
            site = oy * Wr + ox
            tb = boff + site * Cr
            wb = woff + ((ky * kw + kx) * Cs + c) * Cr
            if weighted:
                for co in range(Cr):
                    buf[tb + co] += val * W[wb + co]
            else:
                for co in range(Cr):
                    buf[tb + co] += W[wb + co]
            _mark(site, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT)
def conv_up_scatter(buf, boff, W, woff, geo, j, val, weighted, mark, tlist, tcount, p, site_off):
    """Transposed-conv-style scatter: receiver (y*stride - pad + ky, x*stride - pad + kx)."""
    Cs, Ws, Cr, Hr, Wr = geo[0], geo[2], geo[3], geo[4], geo[5]
    kh, kw, st, pad = geo[6], geo[7], geo[8], geo[9]
    c = j % Cs
    pos = j // Cs
    y = pos // Ws
    x = pos - y * Ws
    for ky in range(kh):
        oy = y * st - pad + ky
        if oy < 0:
            continue
        if oy >= Hr:
            break
        for kx in range(kw):
            ox = x * st - pad + kx
            if ox < 0:
                continue
            if ox >= Wr:
                break
            site = oy * Wr + ox
            tb = boff + site * Cr
            wb = woff + ((ky * kw + kx) * Cs + c) * Cr
            if weighted:
                for co in range(Cr):
                    buf[tb + co] += val * W[wb + co]
            else:
                for co in range(Cr):
                    buf[tb + co] += W[wb + co]
            _mark(site, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT)
def pool_down_scatter(buf, boff, w, geo, j, val, mark, tlist, tcount, p, site_off):
    """Average-pool forward: one add of ``val * w`` per pooling window containing j."""
    C, Ws, Hr, Wr = geo[0], geo[2], geo[4], geo[5]
    k, st = geo[6], geo[8]
    c = j % C
    pos = j // C
    y = pos // Ws
    x = pos - y * Ws
    v = val * w
    for ky in range(k):
        ny = y - ky
        if ny < 0:
            break
        if ny % st != 0:
            continue
        oy = ny // st
        if oy >= Hr:
            continue
        for kx in range(k):
            nx = x - kx
            if nx < 0:
                break
            if nx % st != 0:
                continue
            ox = nx // st
            if ox >= Wr:
                continue
            site = oy * Wr + ox
            buf[boff + site * C + c] += v
            _mark(site, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT)
def pool_up_scatter(buf, boff, w, geo, j, val, mark, tlist, tcount, p, site_off):
    """Average-pool transpose: window (oy, ox) sends ``val * w`` to each of its inputs."""
    C, Ws, Hr, Wr = geo[0], geo[2], geo[4], geo[5]
    k, st = geo[6], geo[8]
    c = j % C
    pos = j // C
    oy0 = (pos // Ws) * st
    ox0 = (pos - (pos // Ws) * Ws) * st
    v = val * w
    for ky in range(k):
        y = oy0 + ky
        if y >= Hr:
            break
        for kx in range(k):
            x = ox0 + kx
            if x >= Wr:
                break
            site = y * Wr + x
            buf[boff + site * C + c] += v
            _mark(site, mark, tlist, tcount, p, site_off)


# ---------------------------------------------------------------------------------------
# Stand-alone propagation kernels (one step, one sample): used by benchmarks and tests.
@numba.njit(**NJIT)
def csr_propagate(spike_idx, indptr, indices, weights, out):
    """out[indices[s]] += weights[s] for every synapse s of every spiking neuron.

    Returns the number of synaptic events."""
    n = 0
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        s0 = indptr[j]
        s1 = indptr[j + 1]
        for s in range(s0, s1):
            out[indices[s]] += weights[s]
        n += s1 - s0
    return n


@numba.njit(**NJIT)
def dense_propagate(spike_idx, W, out):
    """out += W[j, :] for every spiking neuron j (W is [n_pre, n_post]); returns #events."""
    n_r = W.shape[1]
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        for i in range(n_r):
            out[i] += W[j, i]
    return spike_idx.shape[0] * n_r


@numba.njit(**NJIT)
def conv_propagate(spike_idx, wf, geo, out):
    """Channel-contiguous conv scatter of a list of spikes (pre in channel-last order).

    ``wf`` is the flat (kh, kw, C_in, C_out) weight; ``out`` the flat channel-last post
    potentials.  Returns the number of synaptic events."""
    Cs, Ws, Cr, Hr, Wr = geo[0], geo[2], geo[3], geo[4], geo[5]
    kh, kw, st, pad = geo[6], geo[7], geo[8], geo[9]
    n = 0
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        c = j % Cs
        pos = j // Cs
        y = pos // Ws
        x = pos - y * Ws
        for ky in range(kh):
            ny = y + pad - ky
            if ny < 0:
                break
            if ny % st != 0:
                continue
            oy = ny // st
            if oy >= Hr:
                continue
            for kx in range(kw):
                nx = x + pad - kx
                if nx < 0:
                    break
                if nx % st != 0:
                    continue
                ox = nx // st
                if ox >= Wr:
                    continue
                tb = (oy * Wr + ox) * Cr
                wb = ((ky * kw + kx) * Cs + c) * Cr
                for co in range(Cr):
                    out[tb + co] += wf[wb + co]
                n += Cr
    return n
