"""The projection interface shared by every kind, neuron order, and the kernel layout tuple.

Neuron order.  A population of shape ``(n,)`` numbers its neurons 0..n-1.  A population
of shape ``(C, H, W)`` is stored **channel-last**: neuron ``(c, y, x)`` has flat index
``(y * W + x) * C + c``.  This makes every per-event inner loop of the conv scatter run
over contiguous channels.  Use :func:`chw_to_flat` / :func:`flat_to_chw` to convert
PyTorch-style ``(C, H, W)`` arrays.

Every projection kind lives in one module of this package (``dense``, ``sparse``,
``conv``, ``conv_transpose``, ``pool``) and answers, as methods of its class, every
question the rest of neurosim asks about it (see :class:`Projection`).  Code outside the
package never tests a projection's class; it calls these methods, or looks a kind up by
its stored name in :data:`neurosim.connectivity.PROJECTION_KINDS`.
"""
from typing import NamedTuple

import numpy as np

from .. import _validate as V
from .. import config


def chw_to_flat(a):
    """(..., C, H, W) -> (..., H*W*C) in neurosim's channel-last neuron order."""
    a = np.asarray(a)
    return np.ascontiguousarray(np.moveaxis(a, -3, -1)).reshape(a.shape[:-3] + (-1,))


def flat_to_chw(a, shape):
    """(..., n) in neurosim order -> (..., C, H, W) for a population of ``shape``."""
    a = np.asarray(a)
    if len(shape) == 1:
        return a.reshape(a.shape[:-1] + tuple(shape))
    C, H, W = shape
    return np.moveaxis(a.reshape(a.shape[:-1] + (H, W, C)), -1, -3)


def _size(shape):
    return int(np.prod(shape))


def _nonzero(w, dtype):
    """Nonzero in the compute dtype (a float64 weight that underflows to 0 carries nothing)."""
    return np.asarray(w).astype(dtype) != 0


class KernelLayout(NamedTuple):
    """One projection in one phase, as the scatter kernels take it.

    Attributes
    ----------
    kind : int
        Scatter kind, a ``K_*`` code of :mod:`neurosim.kernels.layout`.
    weights : ndarray of float64
        Flat weights in kernel layout for this phase (dense: ``[n_send, n_recv]``; CSR:
        aligned with ``indices``; conv: ``(kh, kw, C_send, C_recv)``; pooling: one shared
        weight, ``[weight_value]``).
    indptr : ndarray of int64
        CSR row pointers by sender (empty unless ``kind`` is ``K_CSR``).
    indices : ndarray of ``config.INDEX_DTYPE``
        CSR receivers (empty unless ``kind`` is ``K_CSR``).
    geo : ndarray of int64 [N_GEO]
        Sender and receiver geometry, columns ``G_*`` of :mod:`neurosim.kernels.layout`
        (zeros for dense / CSR).
    table : ndarray of int64 [R, 4]
        Per sender site, the start of the kernel-offset walk (conv / pool; ``R = 0``
        otherwise).
    """
    kind: int
    weights: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    geo: np.ndarray
    table: np.ndarray


class Projection:
    """Base class of every projection kind: the shared interface.

    A subclass sets the class attributes and implements the methods below; code outside
    :mod:`neurosim.connectivity` uses only these.

    Class attributes
    ----------------
    kind : str
        Name of the kind, as model files and run files store it (``"dense"``...).
    has_weights : bool
        The projection has a learnable ``weight`` array (pooling has not).
    spatial : bool
        Conv / pool: pre and post are ``(C, H, W)`` populations of exactly the declared
        shapes, the synapses are (pre neuron, kernel offset) pairs and there are
        per-kernel-weight counts.  Dense / sparse: any shapes of the right sizes, and a
        dense matrix (:meth:`to_dense`).
    stored_arrays : tuple of str
        Datasets :meth:`from_stored` needs besides the optional ``bias``.
    count_layout : str
        One line describing the layout of :meth:`synapse_counts` (and of
        :meth:`kernel_weight_counts` where there are any), for tables and ``neurosim ops``.

    Methods every kind implements
    -----------------------------
    kernel_layout(backward) -> KernelLayout
        The projection in kernel layout for the forward or the backward (transposed)
        phase.
    out_degree() -> int64 [n_pre], in_degree() -> int64 [n_post]
        Synapses leaving each pre / arriving at each post neuron.
    nonzero_out_degree(dtype), nonzero_in_degree(dtype) -> int64 arrays
        The same, counting only synapses whose weight is nonzero in ``dtype``.
    dense_macs -> int
        Multiply-accumulates per step of a clock-driven dense implementation.
    synapse_counts(sent, backward) -> int64 array
        Per-synapse event counts from per-sender event counts: forward, ``sent`` is per
        pre neuron; backward (the transposed phase), per post neuron.
    kernel_weight_counts(sent, backward) -> int64 array
        Spatial kinds: events per kernel weight, in the weight's own shape (pooling:
        ``[k, k]``).
    kernel_count_maps(per_kernel_weight) -> (offset map [kh, kw], channel map or None)
        Spatial kinds: a per-kernel-weight array summed over channels, and over offsets
        as ``[C_recv, C_send]`` (None for pooling, which has no channel mixing).
    grad_to_user(G) -> dict
        The weight gradient accumulated in the forward kernel layout, back in the user
        layout: ``{"weight": array}`` (empty for kinds without weights).
    to_stored() -> (geometry, arrays)
        A JSON-able dict of geometry and options, and the arrays to store (``weight``,
        ``bias``, kind-specific ones), in the order run files write them.
    from_stored(geometry, arrays, *, delay, port) (classmethod) -> Projection
        The inverse of :meth:`to_stored`.
    """

    kind = None
    has_weights = True
    spatial = False
    stored_arrays = ()
    count_layout = ""

    def _init_common(self, bias, delay, port):
        self.delay = V.check_delay(delay, f"{self.kind} projection delay")
        self.port = V.check_int(port, f"{self.kind} projection port", low=0, high=3)
        nb = self.bias_shape
        if bias is None or bias is False:
            self.bias = None
        else:
            self.bias = V.check_array(bias, f"{self.kind} bias", shape=nb, dtype=np.float64)

    # -- sizes ------------------------------------------------------------------------
    @property
    def n_pre(self):
        return _size(self.pre_shape)

    @property
    def n_post(self):
        return _size(self.post_shape)

    @property
    def bias_shape(self):
        return (self.post_shape[0],) if len(self.post_shape) == 3 else (self.n_post,)

    def bias_per_neuron(self):
        """The bias broadcast to every post neuron (neurosim order), or None."""
        if self.bias is None:
            return None
        if len(self.post_shape) == 3:
            C, H, W = self.post_shape
            return np.tile(self.bias, H * W)
        return self.bias.copy()

    @property
    def n_synapses(self):
        return int(self.out_degree().sum())

    # -- the per-kind interface (documented in the class docstring) ----------------------
    def kernel_layout(self, backward=False):
        raise NotImplementedError(f"{type(self).__name__} does not define kernel_layout")

    def out_degree(self):
        raise NotImplementedError(f"{type(self).__name__} does not define out_degree")

    def in_degree(self):
        raise NotImplementedError(f"{type(self).__name__} does not define in_degree")

    def nonzero_out_degree(self, dtype=np.float64):
        raise NotImplementedError(f"{type(self).__name__} does not define nonzero_out_degree")

    def nonzero_in_degree(self, dtype=np.float64):
        raise NotImplementedError(f"{type(self).__name__} does not define nonzero_in_degree")

    def synapse_counts(self, sent, backward=False):
        raise NotImplementedError(f"{type(self).__name__} does not define synapse_counts")

    def kernel_weight_counts(self, sent, backward=False):
        """Events per kernel weight; only spatial kinds have kernel weights."""
        raise V.NeurosimError(f"per-kernel-weight counts need a conv or pool projection; "
                              f"{getattr(self, 'name', '?')!r} is {self.kind}")

    def kernel_count_maps(self, per_kernel_weight):
        """(offset map, channel map); only spatial kinds have kernel weights."""
        raise V.NeurosimError(f"kernel count maps need a conv or pool projection; "
                              f"{getattr(self, 'name', '?')!r} is {self.kind}")

    def synapse_csr(self):
        """``(indptr, indices, pre_index)`` of a kind that stores a synapse list, else None."""
        return None

    def sparse_matrix(self):
        """scipy.sparse CSR ``W[n_pre, n_post]`` in neurosim neuron order (the current into
        post i is ``Σ_j a_j W[j, i]``; duplicate synapses add up).  For exact linear solves
        on small networks (:mod:`neurosim.training.diagnose`)."""
        raise NotImplementedError(f"{type(self).__name__} does not define sparse_matrix")

    def grad_to_user(self, G):
        """``{"weight": ...}`` in the user layout from the flat kernel-layout gradient ``G``."""
        raise NotImplementedError(f"{type(self).__name__} does not define grad_to_user")

    # -- stored form ------------------------------------------------------------------------
    def params(self):
        """Geometry and options as a JSON-able dict (weights excluded)."""
        return dict(kind=self.kind, pre_shape=list(self.pre_shape),
                    post_shape=list(self.post_shape), delay=self.delay, port=self.port)

    def weight_arrays(self):
        """name -> array of every learnable array of this projection."""
        out = {}
        if self.has_weights:
            out["weight"] = self.weight
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def to_stored(self):
        """``(geometry, arrays)``: JSON-able geometry and options (:meth:`params`), and
        name -> array of what a run file stores (learnable arrays first, then any
        connectivity arrays, in writing order)."""
        return self.params(), self.weight_arrays()

    @classmethod
    def from_stored(cls, geometry, arrays, *, delay=0, port=0):
        """Rebuild from :meth:`to_stored`'s ``geometry`` and ``arrays`` (``bias`` optional);
        ``delay`` and ``port`` as stored beside them."""
        raise NotImplementedError(f"{cls.__name__} does not define from_stored")

    def __repr__(self):
        return (f"{type(self).__name__}({self.pre_shape} -> {self.post_shape}, "
                f"synapses={self.n_synapses}, delay={self.delay})")


def _empty_csr():
    """Empty (indptr, indices) of a kind without a synapse list."""
    return np.zeros(0, np.int64), np.zeros(0, config.INDEX_DTYPE)
