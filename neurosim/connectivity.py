"""Projections: the synapses between two populations.

Neuron order.  A population of shape ``(n,)`` numbers its neurons 0..n-1.  A population
of shape ``(C, H, W)`` is stored **channel-last**: neuron ``(c, y, x)`` has flat index
``(y * W + x) * C + c``.  This makes every per-event inner loop of the conv scatter run
over contiguous channels.  Use :func:`chw_to_flat` / :func:`flat_to_chw` to convert
PyTorch-style ``(C, H, W)`` arrays.

Every projection knows
- its forward scatter (what one spike of pre neuron ``j`` adds to which post neurons),
- its transpose (what one backward event of post neuron ``i`` adds to which pre neurons),
- its synapse layout for counting (:meth:`out_degree`, and for conv/pool the
  ``(pre neuron, kernel offset)`` validity map),
- its dense-equivalent multiply-accumulates per step (:attr:`dense_macs`).

Weights are kept in the user-facing layout (dense ``W[n_pre, n_post]``; CSR
``indptr/indices/weights`` by pre neuron; conv ``(C_out, C_in, kh, kw)`` and
conv-transpose ``(C_in, C_out, kh, kw)`` as in PyTorch).  Kernel layouts are derived.
"""
import numpy as np

from . import _validate as V
from . import config


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


def offset_targets(pr):
    """int64 [n_pre, kh*kw]: receiving site ``oy*W_out + ox`` of every (pre neuron, kernel
    offset) pair of a conv / conv-transpose / pool projection, or -1 where none exists."""
    C, H, W = pr.pre_shape
    _, Ho, Wo = pr.post_shape
    kh, kw = pr.kernel_shape
    s = pr.stride
    p = getattr(pr, "padding", 0)
    y = np.arange(H)[:, None]
    x = np.arange(W)[:, None]
    if isinstance(pr, ConvTranspose2d):
        oy = y * s - p + np.arange(kh)[None, :]
        ox = x * s - p + np.arange(kw)[None, :]
        vy, vx = (oy >= 0) & (oy < Ho), (ox >= 0) & (ox < Wo)
    else:
        ny = y + p - np.arange(kh)[None, :]
        nx = x + p - np.arange(kw)[None, :]
        vy = (ny >= 0) & (ny % s == 0) & (ny // s < Ho)
        vx = (nx >= 0) & (nx % s == 0) & (nx // s < Wo)
        oy, ox = ny // s, nx // s
    site = oy[:, None, :, None] * Wo + ox[None, :, None, :]          # [H, W, kh, kw]
    valid = vy[:, None, :, None] & vx[None, :, None, :]
    site = np.where(valid, site, -1)
    site = np.broadcast_to(site[:, :, None], (H, W, C, kh, kw))
    return site.reshape(H * W * C, kh * kw).astype(np.int64)


class Projection:
    """Base class.  Subclasses set ``kind``, ``pre_shape``, ``post_shape``, weights."""

    kind = None
    has_weights = True

    def _init_common(self, bias, delay, port):
        self.delay = V.check_int(delay, f"{self.kind} projection delay", low=0)
        self.port = V.check_int(port, f"{self.kind} projection port", low=0, high=3)
        nb = self.bias_shape
        if bias is None or bias is False:
            self.bias = None
        else:
            self.bias = V.check_array(bias, f"{self.kind} bias", shape=nb, dtype=np.float64)

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

    def valid_offsets(self):
        """bool [n_pre, kh*kw] (conv / pool): does pre neuron j reach an output through
        each kernel offset?"""
        return offset_targets(self) >= 0

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

    def __repr__(self):
        return (f"{type(self).__name__}({self.pre_shape} -> {self.post_shape}, "
                f"synapses={self.n_synapses}, delay={self.delay})")


class Dense(Projection):
    """All-to-all projection with weight matrix ``W[n_pre, n_post]``."""

    kind = "dense"

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

    def out_degree(self):
        return np.full(self.n_pre, self.n_post, np.int64)

    def in_degree(self):
        return np.full(self.n_post, self.n_pre, np.int64)

    @property
    def dense_macs(self):
        return self.n_pre * self.n_post

    def to_dense(self):
        return self.weight.copy()

    def set_weight(self, w):
        self.weight = V.check_array(w, "dense weight", shape=self.weight.shape, dtype=np.float64)


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
    and count as separate synapses.
    """

    kind = "sparse"

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

    # -- layout -----------------------------------------------------------------
    def out_degree(self):
        return np.diff(self.indptr).astype(np.int64)

    def in_degree(self):
        return np.bincount(self.indices.astype(np.int64), minlength=self.n_post).astype(np.int64)

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

    def to_dense(self):
        W = np.zeros((self.n_pre, self.n_post))
        np.add.at(W, (self.pre_index(), self.indices.astype(np.int64)), self.weight)
        return W

    def set_weight(self, w):
        self.weight = V.check_array(w, "CSR weights", shape=self.weight.shape, dtype=np.float64)


class _Conv(Projection):
    """What conv and conv-transpose projections share: kernel shape, degrees, weight setter."""

    @property
    def kernel_shape(self):
        return self.weight.shape[2:]

    def params(self):
        return dict(super().params(), stride=self.stride, padding=self.padding,
                    kernel=list(self.kernel_shape))

    def out_degree(self):
        return self.valid_offsets().sum(1).astype(np.int64) * self.post_shape[0]

    def set_weight(self, w):
        self.weight = V.check_array(w, f"{self.kind} weight", shape=self.weight.shape, dtype=np.float64)


def _conv_out(n, k, s, p, name):
    out = (n + 2 * p - k) // s + 1
    if out < 1:
        raise V.NeurosimError(f"{name}: input size {n} with kernel {k}, stride {s}, padding {p} gives no output")
    return out


class Conv2d(_Conv):
    """2-D convolution between (C_in, H, W) and (C_out, H_out, W_out) populations.

    ``weight`` has PyTorch's layout (C_out, C_in, kh, kw); post neuron
    ``(co, oy, ox)`` receives ``weight[co, ci, ky, kx]`` from pre neuron
    ``(ci, oy*stride - padding + ky, ox*stride - padding + kx)``.  No synapse list is
    built: the kernels scatter straight from the (kh, kw, C_in, C_out) copy of the weight.
    """

    kind = "conv2d"

    def __init__(self, weight, *, pre_shape, stride=1, padding=0, bias=None, delay=0, port=0):
        w = V.check_array(weight, "conv2d weight", ndim=4, dtype=np.float64)
        self.pre_shape = V.check_shape(pre_shape, "pre_shape")
        if len(self.pre_shape) != 3:
            raise V.NeurosimError(f"conv2d needs a (C, H, W) pre population, got shape {self.pre_shape}")
        Cout, Cin, kh, kw = w.shape
        if Cin != self.pre_shape[0]:
            raise V.NeurosimError(f"conv2d weight has C_in={Cin} but the pre population has {self.pre_shape[0]} channels")
        self.stride = V.check_int(stride, "conv2d stride", low=1)
        self.padding = V.check_int(padding, "conv2d padding", low=0)
        if self.padding >= max(kh, kw):
            raise V.NeurosimError(f"conv2d padding must be < kernel size {max(kh, kw)}, got {self.padding}")
        H, W = self.pre_shape[1:]
        self.post_shape = (Cout, _conv_out(H, kh, self.stride, self.padding, "conv2d"),
                           _conv_out(W, kw, self.stride, self.padding, "conv2d"))
        self.weight = w
        self._init_common(bias, delay, port)

    @property
    def dense_macs(self):
        Cout, Ho, Wo = self.post_shape
        kh, kw = self.kernel_shape
        return Cout * Ho * Wo * self.pre_shape[0] * kh * kw

    def kernel_weights(self):
        """(forward, backward) kernel layouts: (kh, kw, C_in, C_out) and (kh, kw, C_out, C_in)."""
        return (np.ascontiguousarray(self.weight.transpose(2, 3, 1, 0)),
                np.ascontiguousarray(self.weight.transpose(2, 3, 0, 1)))



class ConvTranspose2d(_Conv):
    """Transposed 2-D convolution, PyTorch semantics and weight layout (C_in, C_out, kh, kw).

    Pre neuron ``(ci, y, x)`` sends ``weight[ci, co, ky, kx]`` to post neuron
    ``(co, y*stride - padding + ky, x*stride - padding + kx)`` when that lies inside the
    output, whose size is ``(H-1)*stride - 2*padding + kh + output_padding``.
    """

    kind = "conv_transpose2d"

    def __init__(self, weight, *, pre_shape, stride=1, padding=0, output_padding=0, bias=None,
                 delay=0, port=0):
        w = V.check_array(weight, "conv_transpose2d weight", ndim=4, dtype=np.float64)
        self.pre_shape = V.check_shape(pre_shape, "pre_shape")
        if len(self.pre_shape) != 3:
            raise V.NeurosimError(f"conv_transpose2d needs a (C, H, W) pre population, got {self.pre_shape}")
        Cin, Cout, kh, kw = w.shape
        if Cin != self.pre_shape[0]:
            raise V.NeurosimError(f"conv_transpose2d weight has C_in={Cin} but the pre population has {self.pre_shape[0]} channels")
        self.stride = V.check_int(stride, "conv_transpose2d stride", low=1)
        self.padding = V.check_int(padding, "conv_transpose2d padding", low=0)
        self.output_padding = V.check_int(output_padding, "conv_transpose2d output_padding", low=0)
        if self.output_padding >= max(self.stride, 1) and self.output_padding > 0:
            raise V.NeurosimError(
                f"conv_transpose2d output_padding must be < stride={self.stride}, got {self.output_padding}")
        H, W = self.pre_shape[1:]
        Ho = (H - 1) * self.stride - 2 * self.padding + kh + self.output_padding
        Wo = (W - 1) * self.stride - 2 * self.padding + kw + self.output_padding
        if Ho < 1 or Wo < 1:
            raise V.NeurosimError(f"conv_transpose2d output would be {Ho}x{Wo}")
        self.post_shape = (Cout, Ho, Wo)
        self.weight = w
        self._init_common(bias, delay, port)

    def params(self):
        return dict(super().params(), output_padding=self.output_padding)

    @property
    def dense_macs(self):
        # a dense implementation multiplies every input by every kernel weight
        Cin, H, W = self.pre_shape
        kh, kw = self.kernel_shape
        return Cin * H * W * self.post_shape[0] * kh * kw

    def kernel_weights(self):
        """(forward, backward): (kh, kw, C_in, C_out) and (kh, kw, C_out, C_in)."""
        return (np.ascontiguousarray(self.weight.transpose(2, 3, 0, 1)),
                np.ascontiguousarray(self.weight.transpose(2, 3, 1, 0)))



class AvgPool2d(Projection):
    """Average pooling as a spiking projection (the LeNet case): fixed weight 1/(k*k).

    Post neuron ``(c, oy, ox)`` receives 1/k² from every pre neuron
    ``(c, oy*stride + ky, ox*stride + kx)``, ``0 <= ky, kx < k``.  No padding."""

    kind = "avgpool2d"
    has_weights = False

    def __init__(self, kernel, *, pre_shape, stride=None, delay=0, port=0):
        self.pre_shape = V.check_shape(pre_shape, "pre_shape")
        if len(self.pre_shape) != 3:
            raise V.NeurosimError(f"avgpool2d needs a (C, H, W) pre population, got {self.pre_shape}")
        self.kernel = V.check_int(kernel, "avgpool2d kernel", low=1)
        self.stride = V.check_int(self.kernel if stride is None else stride, "avgpool2d stride", low=1)
        C, H, W = self.pre_shape
        self.post_shape = (C, _conv_out(H, self.kernel, self.stride, 0, "avgpool2d"),
                           _conv_out(W, self.kernel, self.stride, 0, "avgpool2d"))
        self.weight_value = 1.0 / (self.kernel * self.kernel)
        self._init_common(None, delay, port)

    @property
    def kernel_shape(self):
        return (self.kernel, self.kernel)

    def params(self):
        return dict(super().params(), kernel=self.kernel, stride=self.stride)

    def out_degree(self):
        return self.valid_offsets().sum(1).astype(np.int64)

    @property
    def dense_macs(self):
        C, Ho, Wo = self.post_shape
        return C * Ho * Wo * self.kernel * self.kernel


KINDS = {c.kind: c for c in (Dense, Sparse, Conv2d, ConvTranspose2d, AvgPool2d)}
