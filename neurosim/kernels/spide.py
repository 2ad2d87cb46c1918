"""SPIDE's local weight update: Σ_batch (pre rate) × (post error), computed only where the
pre rate is nonzero, in each projection's kernel weight layout.

For sample ``b``, pre neuron ``j`` with rate ``a[b, j] != 0`` and post error ``d[b, :]``:
dense ``G[j, :] += a d``; CSR ``G[s] += a d[post(s)]`` for the synapses of ``j``;
conv (down walk) and conv-transpose (up walk) add ``a * d[site, :]`` to the kernel row
``G[(ky*kw + kx)*C_pre + c, :]`` of every valid offset — the same walk
(:mod:`.walk`) as the forward scatter, with the roles of weights and buffer swapped.

``ops[b]`` counts the multiply-accumulates whose two factors are both nonzero (the work an
event-driven learning engine must do), independent of how this kernel batches them.
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_INLINE, NJIT_PARALLEL
from .layout import K_CONV_DOWN, K_CONV_UP, K_CSR, K_DENSE
from .walk import down_walk, up_walk


@numba.njit(**NJIT_INLINE)
def _acc_row(G, gb, d, db, n, a):
    g = np.uint64(gb)
    s = np.uint64(db)
    for i in range(np.uint64(n)):
        G[g + i] += a * d[s + i]


@numba.njit(**NJIT_PARALLEL)
def weight_grad(kind, geo, tab, indptr, indices, a, d, n_w, n_chunks, G_out, ops):
    """Accumulate the weight gradient of one projection into ``G_out`` (float64 [n_w]).

    a: float64 [B, n_pre] pre rates (or analog input); d: float64 [B, n_post] post
    errors; ops: int64 [B] (written).  Parallel over chunks of samples with private
    accumulators, reduced at the end."""
    B = a.shape[0]
    n_pre = a.shape[1]
    n_post = d.shape[1]
    Cs, Cr, Hr, Wr = geo[0], geo[3], geo[4], geo[5]
    kh, kw = geo[6], geo[7]
    parts = np.zeros((n_chunks, n_w), np.float64)
    for ch in numba.prange(n_chunks):
        G = parts[ch]
        if kind == K_CONV_DOWN or kind == K_CONV_UP:
            nz_site = np.zeros(Hr * Wr, np.int64)
        else:
            nz_site = np.zeros(0, np.int64)
        sites = np.zeros(max(1, kh * kw), np.int64)       # one offset walk (kernels/walk.py)
        offs = np.zeros(max(1, kh * kw), np.int64)
        chs = np.zeros(max(1, Cs), np.int64)              # one sender site's nonzero channels
        vals = np.zeros(max(1, Cs), np.float64)
        for b in range(ch * B // n_chunks, (ch + 1) * B // n_chunks):
            db = d[b]
            nnz_d = 0
            for i in range(n_post):
                nnz_d += db[i] != 0.0
            nops = 0
            if kind == K_CONV_DOWN or kind == K_CONV_UP:
                for s in range(Hr * Wr):
                    c = 0
                    for k in range(Cr):
                        c += db[s * Cr + k] != 0.0
                    nz_site[s] = c
            if nnz_d == 0:
                ops[b] = 0
                continue
            if kind == K_CONV_DOWN or kind == K_CONV_UP:
                # per sender site: one walk, then per receiving site its error row is
                # read once for all the site's nonzero channels (each kernel row still
                # receives its terms in increasing sender index: the same float sums)
                for site_s in range(n_pre // Cs):
                    nc = 0
                    for c in range(Cs):
                        v = a[b, site_s * Cs + c]
                        if v != 0.0:
                            chs[nc] = c
                            vals[nc] = v
                            nc += 1
                    if nc == 0:
                        continue
                    if kind == K_CONV_DOWN:
                        n = down_walk(geo, tab, site_s, sites, offs)
                    else:
                        n = up_walk(geo, tab, site_s, sites, offs)
                    for e in range(n):
                        site = sites[e]
                        if nz_site[site] == 0:
                            continue
                        ds = np.uint64(site * Cr)
                        for i in range(nc):
                            _acc_row(G, (offs[e] * Cs + chs[i]) * Cr, db, ds, Cr, vals[i])
                        nops += nz_site[site] * nc
                ops[b] = nops
                continue
            for j in range(n_pre):
                aj = a[b, j]
                if aj == 0.0:
                    continue
                if kind == K_DENSE:
                    _acc_row(G, j * n_post, db, 0, n_post, aj)
                    nops += nnz_d
                else:                    # CSR (conv kinds were handled above)
                    for s in range(indptr[j], indptr[j + 1]):
                        i = np.uint64(indices[s])
                        G[s] += aj * db[i]
                        nops += db[i] != 0.0
            ops[b] = nops
    for ch in range(n_chunks):
        for i in range(n_w):
            G_out[i] += parts[ch, i]
