"""Event scatter: what one spike adds to the input buffer of the receiving population.

Each function handles one event of sender neuron ``j`` with value ``val`` on one
projection.  ``weighted`` False means ``val == 1`` and the inner loop is a pure
contiguous add (SIMD).  When ``do_mark`` is set, the receiving *sites* touched are
recorded (see :mod:`.engine`); receivers that are updated densely anyway skip it.

Geometry ``geo`` = (Cs, Hs, Ws, Cr, Hr, Wr, kh, kw, stride, pad) of sender and receiver;
neurons are channel-last: ``(c, y, x) -> (y*W + x)*C + c``.  Conv weights are laid out
``(kh, kw, C_sender, C_receiver)`` so the innermost loop runs over receiver channels.
Spatial events arrive already split into sender site ``s = y*Ws + x`` and channel ``c``;
``tab`` holds per sender site the precomputed start of the offset walk (no integer
division per event: a 64-bit division costs more than a 64-channel SIMD row add):
down (conv / pool): ``((y+pad) % st, (y+pad) // st, (x+pad) % st, (x+pad) // st)``;
up (transposed): ``(y*st - pad, x*st - pad, 0, 0)``.
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_NORT


@numba.njit(**NJIT_NORT)
def _mark(site, mark, tlist, tcount, p, site_off):
    """Append ``site`` to population p's touched list unless already marked.

    Branch-free (the list slot is written unconditionally and the count advances by
    1 - mark): a data-dependent branch here stopped LLVM from vectorising the row adds
    around it and cost ~30 ns per call.  p's list starts at ``site_off + p`` (one slack
    slot per population for the unconditional write)."""
    g = site_off + site
    n = tcount[p]
    tlist[site_off + p + n] = site
    tcount[p] = n + 1 - mark[g]
    mark[g] = 1


@numba.njit(**NJIT_NORT)
def _row_add(buf, tb, W, wb, n, val, weighted):
    """buf[tb:tb+n] += (val *) W[wb:wb+n].  Unsigned indices: Numba then emits no
    negative-index wrap-around, and LLVM vectorises the loop (about 6x faster)."""
    t = np.uint64(tb)
    w = np.uint64(wb)
    if weighted:
        for i in range(np.uint64(n)):
            buf[t + i] += val * W[w + i]
    else:
        for i in range(np.uint64(n)):
            buf[t + i] += W[w + i]


@numba.njit(**NJIT_NORT)
def dense_scatter(buf, boff, W, woff, j, n_r, val, weighted):
    _row_add(buf, boff, W, woff + j * n_r, n_r, val, weighted)


@numba.njit(**NJIT_NORT)
def csr_scatter(buf, boff, W, woff, indptr, ioff, indices, xoff, j, val, weighted,
                do_mark, mark, tlist, tcount, p, site_off, ssz):
    """Sparse scatter; the receiver's sites hold ``ssz`` neurons each."""
    s0 = np.uint64(indptr[ioff + j])
    s1 = np.uint64(indptr[ioff + j + 1])
    bo = np.uint64(boff)
    wo = np.uint64(woff)
    xo = np.uint64(xoff)
    for s in range(s0, s1):
        i = np.uint64(indices[xo + s])
        if weighted:
            buf[bo + i] += val * W[wo + s]
        else:
            buf[bo + i] += W[wo + s]
        if do_mark:
            _mark(np.int64(i) // ssz, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT_NORT)
def _rows_add(buf, tb, W, wbase, Cr, gch, gval, ng, weighted):
    """buf[tb:tb+Cr] += (gval[i] *) W[wbase + gch[i]*Cr : ... + Cr], for i = 0 .. ng-1 in turn.

    The rows of events from one sender site (same kernel offset, different channels) are
    added four at a time in registers before one store to ``buf``: a quarter of the
    buffer loads and stores, and one offset walk per site instead of one per event.  The
    additions stay in event order, ``(((buf + r0) + r1) + r2) + r3``, each rounded in the
    dtype: exactly what adding the events one by one gives."""
    t = np.uint64(tb)
    n = np.uint64(Cr)
    i = 0
    if weighted:
        while i + 4 <= ng:
            a = np.uint64(wbase + gch[i] * Cr)
            b = np.uint64(wbase + gch[i + 1] * Cr)
            c = np.uint64(wbase + gch[i + 2] * Cr)
            d = np.uint64(wbase + gch[i + 3] * Cr)
            va, vb, vc, vd = gval[i], gval[i + 1], gval[i + 2], gval[i + 3]
            for k in range(n):
                buf[t + k] = (((buf[t + k] + va * W[a + k]) + vb * W[b + k]) + vc * W[c + k]) \
                    + vd * W[d + k]
            i += 4
        while i < ng:
            a = np.uint64(wbase + gch[i] * Cr)
            va = gval[i]
            for k in range(n):
                buf[t + k] += va * W[a + k]
            i += 1
    else:
        while i + 4 <= ng:
            a = np.uint64(wbase + gch[i] * Cr)
            b = np.uint64(wbase + gch[i + 1] * Cr)
            c = np.uint64(wbase + gch[i + 2] * Cr)
            d = np.uint64(wbase + gch[i + 3] * Cr)
            for k in range(n):
                buf[t + k] = (((buf[t + k] + W[a + k]) + W[b + k]) + W[c + k]) + W[d + k]
            i += 4
        while i < ng:
            a = np.uint64(wbase + gch[i] * Cr)
            for k in range(n):
                buf[t + k] += W[a + k]
            i += 1


@numba.njit(**NJIT_NORT)
def conv_down_scatter_group(buf, boff, W, woff, geo, tab, site_s, gch, gval, ng, weighted,
                            do_mark, mark, tlist, tcount, p, site_off):
    """Conv-style scatter of ``ng`` events of one sender site (channels ``gch``, values
    ``gval``): receiver (oy, ox) with oy*stride - pad + ky = y, walking the valid ky from
    (y+pad) % stride in steps of stride; one walk, rows summed in registers
    (:func:`_rows_add`)."""
    Cs, Cr, Hr, Wr = geo[0], geo[3], geo[4], geo[5]
    kh, kw, st = geo[6], geo[7], geo[8]
    ky = tab[site_s, 0]
    oy = tab[site_s, 1]
    kx0 = tab[site_s, 2]
    ox0 = tab[site_s, 3]
    while ky < kh and oy >= 0:
        if oy < Hr:
            kx = kx0
            ox = ox0
            while kx < kw and ox >= 0:
                if ox < Wr:
                    site = oy * Wr + ox
                    _rows_add(buf, boff + site * Cr, W, woff + (ky * kw + kx) * Cs * Cr, Cr,
                              gch, gval, ng, weighted)
                    if do_mark:
                        _mark(site, mark, tlist, tcount, p, site_off)
                kx += st
                ox -= 1
        ky += st
        oy -= 1


@numba.njit(**NJIT_NORT)
def conv_up_scatter_group(buf, boff, W, woff, geo, tab, site_s, gch, gval, ng, weighted,
                          do_mark, mark, tlist, tcount, p, site_off):
    """Transposed-conv-style scatter of ``ng`` events of one sender site: receiver
    (y*stride - pad + ky, x*stride - pad + kx) (see :func:`conv_down_scatter_group`)."""
    Cs, Cr, Hr, Wr = geo[0], geo[3], geo[4], geo[5]
    kh, kw = geo[6], geo[7]
    oy0 = tab[site_s, 0]
    ox0 = tab[site_s, 1]
    for ky in range(kh):
        oy = oy0 + ky
        if oy < 0:
            continue
        if oy >= Hr:
            break
        for kx in range(kw):
            ox = ox0 + kx
            if ox < 0:
                continue
            if ox >= Wr:
                break
            site = oy * Wr + ox
            _rows_add(buf, boff + site * Cr, W, woff + (ky * kw + kx) * Cs * Cr, Cr,
                      gch, gval, ng, weighted)
            if do_mark:
                _mark(site, mark, tlist, tcount, p, site_off)


@numba.njit(**NJIT_NORT)
def pool_down_scatter_group(buf, boff, w, geo, tab, site_s, gch, gval, ng, weighted, do_mark,
                            mark, tlist, tcount, p, site_off):
    """Average-pool forward for ``ng`` events of one sender site (channels ``gch``): one
    add of ``val * w`` per pooling window containing the sender; one walk and one mark
    per receiving site."""
    C, Hr, Wr = geo[0], geo[4], geo[5]
    k, st = geo[6], geo[8]
    ky = tab[site_s, 0]
    oy = tab[site_s, 1]
    while ky < k and oy >= 0:
        if oy < Hr:
            kx = tab[site_s, 2]
            ox = tab[site_s, 3]
            while kx < k and ox >= 0:
                if ox < Wr:
                    site = oy * Wr + ox
                    base = boff + site * C
                    if weighted:
                        for i in range(ng):
                            buf[base + gch[i]] += gval[i] * w
                    else:
                        for i in range(ng):
                            buf[base + gch[i]] += w
                    if do_mark:
                        _mark(site, mark, tlist, tcount, p, site_off)
                kx += st
                ox -= 1
        ky += st
        oy -= 1


@numba.njit(**NJIT_NORT)
def pool_up_scatter_group(buf, boff, w, geo, tab, site_s, gch, gval, ng, weighted, do_mark,
                          mark, tlist, tcount, p, site_off):
    """Average-pool transpose for ``ng`` events of one sender site (channels ``gch``):
    window (oy, ox) sends ``val * w`` to each of its inputs."""
    C, Hr, Wr = geo[0], geo[4], geo[5]
    k = geo[6]
    y0 = tab[site_s, 0]
    x0 = tab[site_s, 1]
    for ky in range(k):
        y = y0 + ky
        if y >= Hr:
            break
        for kx in range(k):
            x = x0 + kx
            if x >= Wr:
                break
            site = y * Wr + x
            base = boff + site * C
            if weighted:
                for i in range(ng):
                    buf[base + gch[i]] += gval[i] * w
            else:
                for i in range(ng):
                    buf[base + gch[i]] += w
            if do_mark:
                _mark(site, mark, tlist, tcount, p, site_off)


# ---------------------------------------------------------------------------------------
# Stand-alone propagation kernels (one step, one sample): used by benchmarks and tests.
@numba.njit(**NJIT)
def csr_propagate(spike_idx, indptr, indices, weights, out):
    """out[indices[s]] += weights[s] for every synapse s of every spiking neuron.

    Returns the number of synaptic events.  The row is walked with an unsigned offset
    from its start: Numba then emits no negative-index wrap-around for ``indices`` and
    ``weights`` (with a signed ``s`` it did, twice per synapse, and ran ~1.4x slower)."""
    n = 0
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        s0 = indptr[j]
        s1 = indptr[j + 1]
        if s1 > s0:
            base = np.uint64(s0)
            for k in range(np.uint64(s1 - s0)):
                out[indices[base + k]] += weights[base + k]
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
    potentials.  Returns the number of synaptic events.

    Receiver (oy, ox) gets offset (ky, kx) when ``oy*st + ky = y + pad`` (same in x): the
    valid offsets are walked by stepping ky by ``st`` from ``(y + pad) % st`` while oy
    steps down by one, so each event costs a few integer divisions instead of two per
    offset.  The row add uses unsigned offsets (no wrap-around checks), so LLVM
    vectorises it; together ~5x faster than a division-per-offset loop on a 5x5 kernel."""
    Cs, Ws, Cr, Hr, Wr = geo[0], geo[2], geo[3], geo[4], geo[5]
    kh, kw, st, pad = geo[6], geo[7], geo[8], geo[9]
    ncr = np.uint64(Cr)
    n = 0
    for e in range(spike_idx.shape[0]):
        j = spike_idx[e]
        c = j % Cs
        pos = j // Cs
        y = pos // Ws
        x = pos - y * Ws
        kx0 = (x + pad) % st
        ox0 = (x + pad) // st
        ky = (y + pad) % st
        oy = (y + pad) // st
        while ky < kh and oy >= 0:
            if oy < Hr:
                kx = kx0
                ox = ox0
                while kx < kw and ox >= 0:
                    if ox < Wr:
                        tb = np.uint64((oy * Wr + ox) * Cr)
                        wb = np.uint64(((ky * kw + kx) * Cs + c) * Cr)
                        for co in range(ncr):
                            out[tb + co] += wf[wb + co]
                        n += Cr
                    kx += st
                    ox -= 1
            ky += st
            oy -= 1
    return n
