"""Sparse projections: CSR by pre neuron (scipy names ``indptr``, ``indices``, weights)."""
import numpy as np

from .. import _validate as V
from .. import config
from ..kernels.layout import K_CSR, N_GEO
from .base import KernelLayout, Projection, _nonzero, _size


def check_csr(indptr, indices, n_pre, n_post, name="CSR"):
    """Structural check of a CSR matrix; raises NeurosimError naming the defect."""
    indptr = np.asarray(indptr)
    indices = np.asarray(indices)
    if indptr.ndim != 1 or indptr.shape[0] != n_pre + 1:
        raise V.NeurosimError(f"{name}: indptr must have n_pre + 1 = {n_pre + 1} entries, got shape {indptr.shape}")
    if indptr[0] != 0:
        raise V.NeurosimError(f"{name}: indptr[0] must be 0, got {indptr[0]}")
    if np.any(np.diff(indptr) < 0):
        raise V.NeurosimError(f"{name}: indptr must be non-decreasing")
    if indptr[-1] != indices.shape[0]:
        raise V.NeurosimError(f"{name}: indptr[-1] = {indptr[-1]} must equal nnz = {indices.shape[0]}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_post):
        raise V.NeurosimError(
            f"{name}: indices must lie in [0, {n_post}), got range [{indices.min()}, {indices.max()}]")


class Sparse(Projection):
    """Sparse projection in CSR form by pre neuron (scipy names).

    Synapse ``s`` goes from the pre neuron ``j`` with ``indptr[j] <= s < indptr[j+1]`` to
    post neuron ``indices[s]`` with weight ``weights[s]``.  Within a row, synapses keep the
    order given (sorted by post index by the constructors); duplicate pairs are allowed
    and count as separate synapses.  Per-synapse counts are aligned with ``indices``.
    """

    kind = "sparse"
    stored_arrays = ("indptr", "indices", "weight")
    count_layout = "[nnz], aligned with the CSR indices (synapse order of indptr/indices)"

    def __init__(self, indptr, indices, weights, *, pre_shape, post_shape, bias=None, delay=0, port=0):
        self.pre_shape = V.check_shape(pre_shape, "pre_shape")
        self.post_shape = V.check_shape(post_shape, "post_shape")
        indptr = V.check_array(indptr, "CSR indptr", ndim=1)
        indices = V.check_array(indices, "CSR indices", ndim=1)
        if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
            raise TypeError(f"CSR indptr/indices must be integer arrays, got {indptr.dtype}/{indices.dtype}")
        check_csr(indptr, indices, self.n_pre, self.n_post)
        w = V.check_array(weights, "CSR weights", shape=(indices.shape[0],), dtype=np.float64)
        self.indptr = indptr.astype(config.INDPTR_DTYPE)
        self.indices = indices.astype(config.INDEX_DTYPE)
        self.weight = w
        self._init_common(bias, delay, port)
        self._transpose = None

    # -- constructors -------------------------------------------------------
    @classmethod
    def from_edges(cls, pre, post, weights, *, pre_shape, post_shape, **kw):
        """From parallel arrays of (pre, post, weight); sorted by (pre, post), stable."""
        pre_shape = V.check_shape(pre_shape, "pre_shape")
        post_shape = V.check_shape(post_shape, "post_shape")
        n_pre, n_post = _size(pre_shape), _size(post_shape)
        pre = V.check_array(pre, "edge pre", ndim=1)
        post = V.check_array(post, "edge post", shape=pre.shape)
        w = np.broadcast_to(np.asarray(weights, np.float64), pre.shape)
        w = V.check_array(w, "edge weights")
        if pre.size and (pre.min() < 0 or pre.max() >= n_pre):
            raise V.NeurosimError(f"edge pre indices must lie in [0, {n_pre}), got [{pre.min()}, {pre.max()}]")
        if post.size and (post.min() < 0 or post.max() >= n_post):
            raise V.NeurosimError(f"edge post indices must lie in [0, {n_post}), got [{post.min()}, {post.max()}]")
        order = np.lexsort((post, pre))
        indptr = np.zeros(n_pre + 1, np.int64)
        np.cumsum(np.bincount(pre, minlength=n_pre), out=indptr[1:])
        return cls(indptr, post[order], w[order], pre_shape=pre_shape, post_shape=post_shape, **kw)

    @classmethod
    def from_dense(cls, W, *, pre_shape=None, post_shape=None, **kw):
        """Keep the nonzero entries of ``W[n_pre, n_post]``."""
        W = V.check_array(W, "dense matrix", ndim=2, dtype=np.float64)
        pre, post = np.nonzero(W)
        return cls.from_edges(pre, post, W[pre, post], pre_shape=pre_shape or W.shape[0],
                              post_shape=post_shape or W.shape[1], **kw)

    @classmethod
    def fixed_probability(cls, n_pre, n_post, p, weight=1.0, *, seed=0, allow_self=True, **kw):
        """Each (pre, post) pair is connected independently with probability ``p``.

        ``weight`` is a scalar, or a callable ``weight(rng, n)`` returning n weights."""
        n_pre = V.check_int(n_pre, "n_pre", low=1)
        n_post = V.check_int(n_post, "n_post", low=1)
        p = V.check_real(p, "p", low=0.0, high=1.0)
        rng = np.random.default_rng(seed)
        counts = rng.binomial(n_post, p, size=n_pre)
        pre = np.repeat(np.arange(n_pre), counts)
        post = np.concatenate([np.sort(rng.choice(n_post, c, replace=False)) for c in counts]) \
            if n_pre else np.zeros(0, np.int64)
        if not allow_self:
            keep = pre != post
            pre, post = pre[keep], post[keep]
        w = weight(rng, pre.size) if callable(weight) else weight
        return cls.from_edges(pre, post.astype(np.int64), w, pre_shape=kw.pop("pre_shape", n_pre),
                              post_shape=kw.pop("post_shape", n_post), **kw)

    @classmethod
    def fixed_fan_in(cls, n_pre, n_post, k, weight=1.0, *, seed=0, **kw):
        """Each post neuron receives exactly ``k`` synapses from distinct random pre neurons."""
        n_pre = V.check_int(n_pre, "n_pre", low=1)
        n_post = V.check_int(n_post, "n_post", low=1)
        k = V.check_int(k, "k", low=0, high=n_pre)
        rng = np.random.default_rng(seed)
        pre = np.concatenate([rng.choice(n_pre, k, replace=False) for _ in range(n_post)]) \
            if k else np.zeros(0, np.int64)
        post = np.repeat(np.arange(n_post), k)
        w = weight(rng, pre.size) if callable(weight) else weight
        return cls.from_edges(pre, post, w, pre_shape=kw.pop("pre_shape", n_pre),
                              post_shape=kw.pop("post_shape", n_post), **kw)

    # -- kernel layout ------------------------------------------------------------
    def kernel_layout(self, backward=False):
        """``K_CSR``: forward the CSR by pre neuron as stored; backward the CSR by post
        neuron (:meth:`transpose`) with the weights permuted to match."""
        geo = np.zeros(N_GEO, np.int64)
        tab = np.zeros((0, 4), np.int64)
        if backward:
            indptrT, indicesT, perm = self.transpose()
            return KernelLayout(K_CSR, self.weight[perm], indptrT, indicesT, geo, tab)
        return KernelLayout(K_CSR, self.weight, self.indptr, self.indices, geo, tab)

    # -- degrees --------------------------------------------------------------------
    def out_degree(self):
        return np.diff(self.indptr).astype(np.int64)

    def in_degree(self):
        return np.bincount(self.indices.astype(np.int64), minlength=self.n_post).astype(np.int64)

    def nonzero_out_degree(self, dtype=np.float64):
        """Synapses with a nonzero weight in each CSR row."""
        keep = _nonzero(self.weight, dtype)
        return np.bincount(self.pre_index()[keep], minlength=self.n_pre).astype(np.int64)

    def nonzero_in_degree(self, dtype=np.float64):
        """Synapses with a nonzero weight into each post neuron."""
        keep = _nonzero(self.weight, dtype)
        return np.bincount(self.indices.astype(np.int64)[keep], minlength=self.n_post).astype(np.int64)

    @property
    def dense_macs(self):
        return self.n_pre * self.n_post

    def pre_index(self):
        """Pre neuron of every synapse (length nnz)."""
        return np.repeat(np.arange(self.n_pre, dtype=np.int64), self.out_degree())

    def transpose(self):
        """(indptrT, indicesT, perm): CSR by post neuron; ``perm[s']`` is the synapse id."""
        if self._transpose is None:
            post = self.indices.astype(np.int64)
            perm = np.lexsort((self.pre_index(), post)).astype(np.int64)
            indptrT = np.zeros(self.n_post + 1, np.int64)
            np.cumsum(np.bincount(post, minlength=self.n_post), out=indptrT[1:])
            indicesT = self.pre_index()[perm].astype(config.INDEX_DTYPE)
            self._transpose = (indptrT, indicesT, perm)
        return self._transpose

    # -- counts -----------------------------------------------------------------------
    def synapse_counts(self, sent, backward=False):
        """``[nnz]`` aligned with ``indices``: the sender's count of every synapse (forward
        the pre neuron's, backward the post neuron's)."""
        if backward:
            return sent[self.indices.astype(np.int64)]
        return sent[self.pre_index()]

    def synapse_csr(self):
        return self.indptr, self.indices, self.pre_index()

    # -- gradient, dense form, stored form ---------------------------------------------
    def sparse_matrix(self):
        import scipy.sparse as sp
        # built from COO so that duplicate synapses add up
        return sp.csr_matrix((np.asarray(self.weight, np.float64),
                              (self.pre_index(), self.indices.astype(np.int64))),
                             shape=(self.n_pre, self.n_post))

    def grad_to_user(self, G):
        return {"weight": G}

    def to_dense(self):
        W = np.zeros((self.n_pre, self.n_post))
        np.add.at(W, (self.pre_index(), self.indices.astype(np.int64)), self.weight)
        return W

    def set_weight(self, w):
        self.weight = V.check_array(w, "CSR weights", shape=self.weight.shape, dtype=np.float64)

    def to_stored(self):
        geo, arrays = super().to_stored()
        arrays["indptr"] = self.indptr.astype(np.int64)
        arrays["indices"] = self.indices.astype(np.int32)
        return geo, arrays

    @classmethod
    def from_stored(cls, geometry, arrays, *, delay=0, port=0):
        return cls(arrays["indptr"], arrays["indices"], arrays["weight"],
                   pre_shape=tuple(geometry["pre_shape"]), post_shape=tuple(geometry["post_shape"]),
                   bias=arrays.get("bias"), delay=delay, port=port)
