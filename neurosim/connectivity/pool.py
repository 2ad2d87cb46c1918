"""Pooling as spiking projections: one fixed weight shared by every synapse.

:class:`AvgPool2d` (weight 1/k², the LeNet case) and :class:`SumPool2d` (weight 1, NIR's
``SumPool2d``) differ only in that weight; both map to the pool scatter kernels
(``K_POOL_DOWN`` forward, ``K_POOL_UP`` backward), which read one shared weight.
Pooling is channel-wise: post ``(c, oy, ox)`` receives from every pre
``(c, oy*stride + ky, ox*stride + kx)``, ``0 <= ky, kx < k``.  No padding.
"""
import numpy as np

from .. import _validate as V
from ..kernels.layout import K_POOL_DOWN, K_POOL_UP
from .conv import SpatialProjection, _conv_out


class Pool2d(SpatialProjection):
    """Base of the pooling kinds: a k×k window, stride (default k), no padding, no
    learnable weight; subclasses set ``kind`` and :meth:`_weight_value`."""

    has_weights = False
    _kinds = (K_POOL_DOWN, K_POOL_UP)

    def __init__(self, kernel, *, pre_shape, stride=None, delay=0, port=0):
        self.pre_shape = V.check_shape(pre_shape, "pre_shape")
        if len(self.pre_shape) != 3:
            raise V.NeurosimError(f"{self.kind} needs a (C, H, W) pre population, got {self.pre_shape}")
        self.kernel = V.check_int(kernel, f"{self.kind} kernel", low=1)
        self.stride = V.check_int(self.kernel if stride is None else stride, f"{self.kind} stride", low=1)
        C, H, W = self.pre_shape
        self.post_shape = (C, _conv_out(H, self.kernel, self.stride, 0, self.kind),
                           _conv_out(W, self.kernel, self.stride, 0, self.kind))
        self.weight_value = self._weight_value(self.kernel)
        self._init_common(None, delay, port)

    @staticmethod
    def _weight_value(k):
        raise NotImplementedError  # pragma: no cover

    @property
    def kernel_shape(self):
        return (self.kernel, self.kernel)

    def params(self):
        return dict(super().params(), kernel=self.kernel, stride=self.stride)

    def _kernel_weights(self, backward):
        return np.array([self.weight_value])

    # -- degrees (the shared weight is never 0) ------------------------------------------
    def out_degree(self):
        return self.valid_offsets().sum(1).astype(np.int64)

    def in_degree(self):
        tg = self.offset_targets()
        C = self.pre_shape[0]
        rows, cols = np.nonzero(tg >= 0)
        post = tg[rows, cols] * C + self._channel_of_pre()[rows]
        return np.bincount(post, minlength=self.n_post).astype(np.int64)

    def nonzero_out_degree(self, dtype=np.float64):
        return self.out_degree()

    def nonzero_in_degree(self, dtype=np.float64):
        return self.in_degree()

    @property
    def dense_macs(self):
        C, Ho, Wo = self.post_shape
        return C * Ho * Wo * self.kernel * self.kernel

    # -- counts -----------------------------------------------------------------------
    def _post_of_offset(self, tg):
        """int64 [n_pre, K]: post neuron of each (pre, offset), clipped to 0 where invalid."""
        C = self.pre_shape[0]
        return np.maximum(tg, 0) * C + self._channel_of_pre()[:, None]

    def synapse_counts(self, sent, backward=False):
        """``[n_pre, k*k]`` per (pre neuron, kernel offset): forward ``sent[j]``; backward
        the events of the post neuron that offset reaches."""
        tg = self.offset_targets()
        if backward:
            return np.where(tg >= 0, sent[self._post_of_offset(tg)], 0)
        return np.where(tg >= 0, sent[:, None], 0)

    def kernel_weight_counts(self, sent, backward=False):
        """``[k, k]``: events through each window offset, over all channels and positions."""
        tg = self.offset_targets()
        k = self.kernel
        if backward:
            v = np.where(tg >= 0, sent[self._post_of_offset(tg)], 0)
            return v.sum(0).reshape(k, k)
        per = np.where(tg >= 0, sent[:, None], 0)
        by_ch = np.zeros((self.pre_shape[0], k * k), np.int64)
        np.add.at(by_ch, self._channel_of_pre(), per)
        return by_ch.sum(0).reshape(k, k)

    def kernel_count_maps(self, per_kernel_weight):
        """(the ``[k, k]`` array itself, None): pooling mixes no channels."""
        return per_kernel_weight, None

    # -- gradient, stored form ------------------------------------------------------------
    def sparse_matrix(self):
        import scipy.sparse as sp
        site = self.offset_targets()                    # [n_pre, k*k], -1: no target
        j, k = np.nonzero(site >= 0)
        cols = site[j, k] * self.post_shape[0] + self._channel_of_pre()[j]
        return sp.csr_matrix((np.full(len(j), float(self.weight_value)), (j, cols)),
                             shape=(self.n_pre, self.n_post))

    def grad_to_user(self, G):
        return {}

    def to_stored(self):
        geo, arrays = super().to_stored()
        geo["weight_value"] = self.weight_value
        return geo, arrays

    @classmethod
    def from_stored(cls, geometry, arrays, *, delay=0, port=0):
        return cls(geometry["kernel"], pre_shape=tuple(geometry["pre_shape"]),
                   stride=geometry["stride"], delay=delay, port=port)


class AvgPool2d(Pool2d):
    """Average pooling as a spiking projection (the LeNet case): fixed weight 1/(k*k).

    Post neuron ``(c, oy, ox)`` receives 1/k² from every pre neuron
    ``(c, oy*stride + ky, ox*stride + kx)``, ``0 <= ky, kx < k``.  No padding."""

    kind = "avgpool2d"
    count_layout = "[n_pre, k*k] per (pre neuron, kernel offset); per kernel weight: [k, k]"

    @staticmethod
    def _weight_value(k):
        return 1.0 / (k * k)


class SumPool2d(Pool2d):
    """Sum pooling as a spiking projection (NIR's ``SumPool2d``): fixed weight 1.

    Post neuron ``(c, oy, ox)`` receives 1 from every pre neuron
    ``(c, oy*stride + ky, ox*stride + kx)``, ``0 <= ky, kx < k``.  No padding."""

    kind = "sumpool2d"
    count_layout = "[n_pre, k*k] per (pre neuron, kernel offset); per kernel weight: [k, k]"

    @staticmethod
    def _weight_value(k):
        return 1.0
