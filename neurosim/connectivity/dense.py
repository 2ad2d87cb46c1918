"""Dense (all-to-all) projections: weight matrix ``W[n_pre, n_post]``."""
import numpy as np

from .. import _validate as V
from ..kernels.layout import K_DENSE, N_GEO
from .base import KernelLayout, Projection, _empty_csr, _nonzero


class Dense(Projection):
    """All-to-all projection with weight matrix ``W[n_pre, n_post]``.

    Synapse ``(j, i)`` goes from pre neuron ``j`` to post neuron ``i`` with weight
    ``weight[j, i]``; per-synapse counts have the weight's shape ``[n_pre, n_post]``.
    """

    kind = "dense"
    stored_arrays = ("weight",)
    count_layout = "[n_pre, n_post], like weight"

    def __init__(self, weight, *, pre_shape=None, post_shape=None, bias=None, delay=0, port=0):
        w = V.check_array(weight, "dense weight", ndim=2, dtype=np.float64)
        self.pre_shape = V.check_shape(pre_shape or w.shape[0], "pre_shape")
        self.post_shape = V.check_shape(post_shape or w.shape[1], "post_shape")
        if w.shape != (self.n_pre, self.n_post):
            raise V.NeurosimError(
                f"dense weight must have shape (n_pre, n_post) = ({self.n_pre}, {self.n_post}), "
                f"got {w.shape}")
        self.weight = w
        self._init_common(bias, delay, port)

    # -- kernel layout ----------------------------------------------------------------
    def kernel_layout(self, backward=False):
        """``K_DENSE`` with the row-major ``[n_send, n_recv]`` matrix of the phase
        (backward: ``W.T``)."""
        ip, ix = _empty_csr()
        return KernelLayout(K_DENSE, (self.weight.T if backward else self.weight).ravel(), ip, ix,
                            np.zeros(N_GEO, np.int64), np.zeros((0, 4), np.int64))

    # -- degrees ----------------------------------------------------------------------
    def out_degree(self):
        return np.full(self.n_pre, self.n_post, np.int64)

    def in_degree(self):
        return np.full(self.n_post, self.n_pre, np.int64)

    def nonzero_out_degree(self, dtype=np.float64):
        """Nonzero entries of each row of ``W``."""
        return _nonzero(self.weight, dtype).sum(1).astype(np.int64)

    def nonzero_in_degree(self, dtype=np.float64):
        """Nonzero entries of each column of ``W``."""
        return _nonzero(self.weight, dtype).sum(0).astype(np.int64)

    @property
    def dense_macs(self):
        return self.n_pre * self.n_post

    # -- counts -----------------------------------------------------------------------
    def synapse_counts(self, sent, backward=False):
        """``[n_pre, n_post]``: forward ``sent[j]`` on row j; backward ``sent[i]`` on column i."""
        if backward:
            return np.broadcast_to(sent[None, :], (self.n_pre, self.n_post)).copy()
        return np.broadcast_to(sent[:, None], (self.n_pre, self.n_post)).copy()

    # -- gradient, dense form, stored form --------------------------------------------
    def sparse_matrix(self):
        import scipy.sparse as sp
        return sp.csr_matrix(np.asarray(self.weight, np.float64))

    def grad_to_user(self, G):
        return {"weight": G.reshape(self.n_pre, self.n_post)}

    def to_dense(self):
        return self.weight.copy()

    def set_weight(self, w):
        self.weight = V.check_array(w, "dense weight", shape=self.weight.shape, dtype=np.float64)

    @classmethod
    def from_stored(cls, geometry, arrays, *, delay=0, port=0):
        return cls(arrays["weight"], pre_shape=tuple(geometry["pre_shape"]),
                   post_shape=tuple(geometry["post_shape"]), bias=arrays.get("bias"),
                   delay=delay, port=port)
