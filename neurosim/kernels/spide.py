"""SPIDE's local weight update: Σ_batch (pre rate) × (post error), computed only where the
pre rate is nonzero, in each projection's kernel weight layout.

For sample ``b``, pre neuron ``j`` with rate ``a[b, j] != 0`` and post error ``d[b, :]``:
dense ``G[j, :] += a d``; CSR ``G[s] += a d[post(s)]`` for the synapses of ``j``;
conv (down walk) and conv-transpose (up walk) add ``a * d[site, :]`` to the kernel row
``G[(ky*kw + kx)*C_pre + c, :]`` of every valid offset — the same walk
(:mod:`.walk`) as the forward scatter, with the roles of weights and buffer swapped.

Conv kinds visit each receiver site's error row once per nonzero sender channel: the whole
row (one vectorised add) where many of its errors are nonzero, only the packed nonzero
entries where fewer than ``1/SPARSE_ROW`` are (receivers of ``>= SPARSE_MIN_C`` channels).
Every kernel entry receives the same nonzero terms in the same order either way, and a
skipped term is an exact zero added to a sum that is never ``-0.0``: the result is
bit-identical to the whole-row loop.

``ops[b]`` counts the multiply-accumulates whose two factors are both nonzero (the work an
event-driven learning engine must do), independent of how this kernel batches them.

**Sums over the batch do not depend on the threads (docs/decisions.md, 58).**  A batch of
``B`` samples is cut into :func:`block_bounds` ``(B)``: ``n = min(B, N_BLOCKS)`` blocks,
block ``k`` the samples ``k*B//n .. (k+1)*B//n - 1`` -- boundaries that depend on ``B``
only.  :func:`weight_grad` and :func:`batch_sum` sum each block into its own row of
``parts`` in sample order (threads take whole blocks); :func:`tree_sum` combines the rows
in one fixed pairwise tree.  Every float addition is therefore the same whatever the number
of threads, and a process that holds whole blocks of a sharded batch can compute their
rows and hand them to the same :func:`tree_sum`.
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_INLINE, NJIT_PARALLEL
from .layout import K_CONV_DOWN, K_CONV_UP, K_CSR, K_DENSE
from .walk import down_walk, up_walk

#: conv gradients: a receiver site whose nonzero errors are fewer than 1/SPARSE_ROW of its
#: channels gets only those entries added (scalar), otherwise the whole row (vectorised);
#: only for receivers of at least SPARSE_MIN_C channels (a shorter row is a few vector adds;
#: that bound is a choice, not a measurement).  SPARSE_ROW = 8 is the best of 2/4/8/16 on
#: ConvNet-F's W1 + W2 (benchmarks/README.md, "weight update").  Skipping a zero term leaves
#: every sum bit-identical.
SPARSE_ROW = 8
SPARSE_MIN_C = 32

#: sums over a batch: at most N_BLOCKS blocks of samples (:func:`block_bounds`), each with
#: its own float64 accumulator row (memory N_BLOCKS x the gradient; the threads of one
#: reduction are at most N_BLOCKS).  A choice, not a measurement; changing it changes the
#: rounding of every batch gradient (the fingerprint).
N_BLOCKS = 8


@numba.njit(**NJIT)
def block_bounds(B):
    """Sample boundaries (int64 [n + 1]) of the ``n = max(1, min(B, N_BLOCKS))`` blocks of a
    batch of ``B``: block ``k`` is samples ``bounds[k] .. bounds[k+1] - 1``,
    ``bounds[k] = k * B // n``.  A function of ``B`` only."""
    n = max(1, min(B, N_BLOCKS))
    out = np.empty(n + 1, np.int64)
    for k in range(n + 1):
        out[k] = k * B // n
    return out


@numba.njit(**NJIT_PARALLEL)
def tree_sum(parts, out):
    """``out[:] =`` the sum of the rows of ``parts`` (float64 [n, m], overwritten) in one
    fixed pairwise tree: for ``s = 1, 2, 4, ...``, row ``k`` (a multiple of ``2s``) adds
    row ``k + s`` (where it exists); the result is row 0.  Parallel over column ranges
    (each column's additions are the same whatever the threads)."""
    n, m = parts.shape
    n_ch = max(1, min(m // 4096, 64))
    for c in numba.prange(n_ch):
        i0, i1 = c * m // n_ch, (c + 1) * m // n_ch
        s = 1
        while s < n:
            for k in range(0, n - s, 2 * s):
                for i in range(i0, i1):
                    parts[k, i] += parts[k + s, i]
            s *= 2
        for i in range(i0, i1):
            out[i] = parts[0, i] if n > 0 else 0.0


@numba.njit(**NJIT_PARALLEL)
def batch_sum(d, bounds, parts):
    """``parts[k] =`` the sum of the rows ``d[b]`` (float64 [B, m]) of block ``k``
    (``bounds`` from :func:`block_bounds`), added in sample order; parallel over blocks.
    :func:`tree_sum` of ``parts`` is the batch sum."""
    m = d.shape[1]
    for k in numba.prange(bounds.shape[0] - 1):
        acc = parts[k]
        for i in range(m):
            acc[i] = 0.0
        for b in range(bounds[k], bounds[k + 1]):
            for i in range(m):
                acc[i] += d[b, i]


@numba.njit(**NJIT_INLINE)
def _acc_row(G, gb, d, db, n, a):
    g = np.uint64(gb)
    s = np.uint64(db)
    for i in range(np.uint64(n)):
        G[g + i] += a * d[s + i]


@numba.njit(**NJIT_INLINE)
def _site_rows(G, n, sites, offs, nz_site, chs, vals, nc, Cs, Cr, db):
    """One sender site's walk of ``n`` (receiver site, offset) pairs: per pair and nonzero
    sender channel, the receiver's whole error row times the rate.  Returns the MACs with
    two nonzero factors."""
    nops = 0
    for e in range(n):
        site = sites[e]
        nzs = nz_site[site]
        if nzs == 0:
            continue
        ds = np.uint64(site * Cr)
        for i in range(nc):
            _acc_row(G, (offs[e] * Cs + chs[i]) * Cr, db, ds, Cr, vals[i])
        nops += nzs * nc
    return nops


@numba.njit(**NJIT_INLINE)
def _site_rows_sparse(G, n, sites, offs, nz_site, chs, vals, nc, Cs, Cr, db, dk, dv):
    """As :func:`_site_rows`, but a receiver with fewer than ``Cr / SPARSE_ROW`` nonzero
    errors gets only those entries (``dk``/``dv``: its nonzero channels and values, packed
    from ``site * Cr``)."""
    nops = 0
    for e in range(n):
        site = sites[e]
        nzs = nz_site[site]
        if nzs == 0:
            continue
        ds = np.uint64(site * Cr)
        if nzs * SPARSE_ROW < Cr:
            for i in range(nc):
                gb = np.uint64((offs[e] * Cs + chs[i]) * Cr)
                v = vals[i]
                for k in range(ds, ds + np.uint64(nzs)):
                    G[gb + np.uint64(dk[k])] += v * dv[k]
        else:
            for i in range(nc):
                _acc_row(G, (offs[e] * Cs + chs[i]) * Cr, db, ds, Cr, vals[i])
        nops += nzs * nc
    return nops


@numba.njit(**NJIT_PARALLEL)
def weight_grad(kind, geo, tab, indptr, indices, a, d, bounds, parts, ops):
    """The weight gradient of one projection, per block of samples: ``parts[k]`` (float64
    [n_blocks, n_w], overwritten) the sum over the samples of block ``k`` (``bounds`` from
    :func:`block_bounds`), added in sample order; :func:`tree_sum` of ``parts`` is the
    gradient.

    a: float64 [B, n_pre] pre rates (or analog input); d: float64 [B, n_post] post
    errors; ops: int64 [B] (written).  Parallel over blocks (a thread takes whole
    blocks, so no sum depends on the threads)."""
    n_pre = a.shape[1]
    n_post = d.shape[1]
    n_w = parts.shape[1]
    Cs, Cr, Hr, Wr = geo[0], geo[3], geo[4], geo[5]
    kh, kw = geo[6], geo[7]
    for ch in numba.prange(bounds.shape[0] - 1):
        G = parts[ch]
        for i in range(n_w):
            G[i] = 0.0
        if kind == K_CONV_DOWN or kind == K_CONV_UP:
            nz_site = np.zeros(Hr * Wr, np.int64)
        else:
            nz_site = np.zeros(0, np.int64)
        sites = np.zeros(max(1, kh * kw), np.int64)       # one offset walk (kernels/walk.py)
        offs = np.zeros(max(1, kh * kw), np.int64)
        chs = np.zeros(max(1, Cs), np.int64)              # one sender site's nonzero channels
        vals = np.zeros(max(1, Cs), np.float64)
        # per receiver site: its nonzero errors (channel, value), for sparse rows
        sparse = (kind == K_CONV_DOWN or kind == K_CONV_UP) and Cr >= SPARSE_MIN_C
        dk = np.zeros(max(1, n_post) if sparse else 1, np.int64)
        dv = np.zeros(dk.shape[0], np.float64)
        for b in range(bounds[ch], bounds[ch + 1]):
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
                    if sparse and c > 0 and c * SPARSE_ROW < Cr:
                        c = 0                      # pack the site's nonzero errors
                        for k in range(Cr):
                            x = db[s * Cr + k]
                            if x != 0.0:
                                dk[s * Cr + c] = k
                                dv[s * Cr + c] = x
                                c += 1
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
                    if sparse:
                        nops += _site_rows_sparse(G, n, sites, offs, nz_site, chs, vals, nc,
                                                  Cs, Cr, db, dk, dv)
                    else:
                        nops += _site_rows(G, n, sites, offs, nz_site, chs, vals, nc, Cs, Cr, db)
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


@numba.njit(**NJIT)
def post_error(cpos, cneg, cfwd, c0, c1, f0, gate, mode, T, scale_b, steps_b, theta, b0, b1,
               out):
    """SPIDE's post error of one population for samples ``b0 .. b1-1``, in one pass:
    ``out = (m * ((Θ_b * (n₊ - n₋)) / T_b)) / Θ`` in float64, the operations (and
    roundings) of the numpy expression it replaces (:func:`neurosim.training.spide.
    post_errors`): ``n₊``, ``n₋`` the backward counts, columns ``c0`` (``c1``) on of
    ``cpos`` (``cneg``), ``m`` 1.0 or 0.0 from ``mode`` -- 0: ``1 <= c <= T-1`` for the
    forward counts ``cfwd`` from column ``f0``, 1: ``gate != 0``, 2: 1.  The count arrays
    are C-contiguous [B, N] (the engine's own, a population a column range), so each row
    is a contiguous slice and the loop vectorises (two float64 divisions per neuron).
    Not parallel itself: the caller runs sample ranges on threads."""
    n = out.shape[1]
    for b in range(b0, b1):
        _post_error_row(cpos[b, c0:c0 + n], cneg[b, c1:c1 + n], cfwd[b, f0:f0 + n],
                        gate[b] if mode == 1 else gate[0], mode, T, scale_b, steps_b, theta,
                        out[b])


@numba.njit(**NJIT_INLINE)
def _post_error_row(cp, cn, cf, g, mode, T, scale_b, steps_b, theta, o):
    for i in range(cp.shape[0]):
        r = np.float64(cp[i]) - np.float64(cn[i])
        r = scale_b * r
        r = r / steps_b
        if mode == 0:
            c = cf[i]
            m = (c >= 1) & (c <= T - 1)
        elif mode == 1:
            m = g[i] != 0
        else:
            m = True
        d = (1.0 if m else 0.0) * r
        o[i] = d / theta
