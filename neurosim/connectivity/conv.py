"""Convolutions, and what every spatial (conv / conv-transpose / pool) projection shares.

Spatial projections have no synapse list: a synapse is a (pre neuron, kernel offset)
pair, its receiving site is found by a walk over the kernel offsets, and the kernels
scatter straight from a ``(kh, kw, C_send, C_recv)`` copy of the weight (pooling: one
shared weight).  Counts are per ``(pre neuron, kernel offset)`` -- shape
``[n_pre, kh*kw]``, summed over the receiving channels -- and per kernel weight (the
weight's own shape; pooling ``[k, k]``).

Shared here: :func:`site_table` (the per-sender-site start of the offset walk),
:func:`offset_targets`, :class:`SpatialProjection` (the base of conv, conv-transpose and
pool projections) and :class:`ConvProjection` (what Conv2d and ConvTranspose2d share).
"""
import functools

import numpy as np

from .. import _validate as V
from ..kernels.layout import (G_CR, G_CS, G_KH, G_KW, G_PAD, G_STRIDE, K_CONV_DOWN, K_CONV_UP,
                              K_POOL_DOWN, N_GEO, SPATIAL_KINDS)
from .base import KernelLayout, Projection, _empty_csr, _nonzero


def site_table(down, shape_s, stride, pad):
    """Per sender site ``y*W + x``, the start of the kernel-offset walk, int64 [H*W, 4].

    down (conv / pool forward, conv-transpose backward): ``((y+pad) % stride,
    (y+pad) // stride, (x+pad) % stride, (x+pad) // stride)``; up (transposed direction):
    ``(y*stride - pad, x*stride - pad, 0, 0)``.  Precomputing it keeps integer divisions
    out of the per-event loop."""
    _, H, W = shape_s
    y = np.repeat(np.arange(H), W)
    x = np.tile(np.arange(W), H)
    t = np.zeros((H * W, 4), np.int64)
    if down:
        t[:, 0], t[:, 1] = (y + pad) % stride, (y + pad) // stride
        t[:, 2], t[:, 3] = (x + pad) % stride, (x + pad) // stride
    else:
        t[:, 0], t[:, 1] = y * stride - pad, x * stride - pad
    return t


def receiver_table(kind, geo):
    """int64 [kh*kw, H_s*W_s]: the receiver site of every (kernel offset, sender site)
    pair of a conv (``K_CONV_DOWN``) or conv-transpose (``K_CONV_UP``) scatter, -1 where
    the offset leads outside the receiver map (or, down, between strided positions).
    The engine's offset-major conv delivery reads it (``kernels/deliver._deliver_conv``).
    Read-only, computed once per geometry."""
    return _receiver_table(int(kind), tuple(int(v) for v in geo[:N_GEO]))


@functools.lru_cache(maxsize=256)
def _receiver_table(kind, geo):
    Cs, Hs, Ws, Cr, Hr, Wr, kh, kw, st, pad = geo
    y = np.repeat(np.arange(Hs), Ws)[None, :]
    x = np.tile(np.arange(Ws), Hs)[None, :]
    ky = np.repeat(np.arange(kh), kw)[:, None]
    kx = np.tile(np.arange(kw), kh)[:, None]
    if kind == K_CONV_DOWN:          # o*st - pad + k = y
        ty, tx = y + pad - ky, x + pad - kx
        ok = (ty >= 0) & (tx >= 0) & (ty % st == 0) & (tx % st == 0)
        oy, ox = ty // st, tx // st
    elif kind == K_CONV_UP:          # o = y*st - pad + k
        oy, ox = y * st - pad + ky, x * st - pad + kx
        ok = (oy >= 0) & (ox >= 0)
    else:
        raise ValueError(f"receiver_table: kind {kind} is not a conv scatter")
    ok &= (oy < Hr) & (ox < Wr)
    out = np.where(ok, oy * Wr + ox, -1).astype(np.int64)
    out.flags.writeable = False
    return out


def sender_table(rt, n_recv):
    """int64 [kh*kw, n_recv]: the inverse of :func:`receiver_table` ``rt``, the sender site
    that reaches each receiver site through each kernel offset (-1: none).  A receiver
    hears at most one sender per offset (distinct offsets reach distinct senders)."""
    nk, S = rt.shape
    out = np.full((nk, n_recv), -1, np.int64)
    k, s = np.nonzero(rt >= 0)
    out[k, rt[k, s]] = s
    return out


def kernel_table(kind, geo):
    """The site table of a projection in one direction and kind code (empty for dense / CSR)."""
    if kind not in SPATIAL_KINDS:
        return np.zeros((0, 4), np.int64)
    return site_table(kind in (K_CONV_DOWN, K_POOL_DOWN), geo[G_CS:G_CS + 3], int(geo[G_STRIDE]),
                      int(geo[G_PAD]))


def offset_targets(pr):
    """int64 [n_pre, kh*kw]: receiving site ``oy*W_out + ox`` of every (pre neuron, kernel
    offset) pair of a conv / conv-transpose / pool projection, or -1 where none exists."""
    return pr.offset_targets()


def _conv_out(n, k, s, p, name):
    out = (n + 2 * p - k) // s + 1
    if out < 1:
        raise V.NeurosimError(f"{name}: input size {n} with kernel {k}, stride {s}, padding {p} gives no output")
    return out


class SpatialProjection(Projection):
    """Base of conv, conv-transpose and pool projections (``(C, H, W)`` on both sides).

    A subclass sets ``kernel_shape``, ``stride``, ``padding``, the scatter kinds
    ``_kinds = (forward K_*, backward K_*)``, whether its forward walk is the transposed
    one (``_walk_up``), and :meth:`_kernel_weights` (the flat kernel-layout weights of a
    phase)."""

    spatial = True
    padding = 0
    _walk_up = False
    _kinds = (None, None)

    def offset_targets(self):
        """int64 [n_pre, kh*kw]: receiving site ``oy*W_out + ox`` of every (pre neuron,
        kernel offset ``ky*kw + kx``) pair, or -1 where none exists (read-only; computed
        once per geometry: the engine asks for the degrees at every phase)."""
        key = (tuple(self.pre_shape), tuple(self.post_shape), tuple(self.kernel_shape),
               self.stride, self.padding, self._walk_up)
        cached = self.__dict__.get("_targets_cache")
        if cached is None or cached[0] != key:
            t = self._offset_targets()
            t.flags.writeable = False
            cached = self.__dict__["_targets_cache"] = (key, t)
        return cached[1]

    def _offset_targets(self):
        C, H, W = self.pre_shape
        _, Ho, Wo = self.post_shape
        kh, kw = self.kernel_shape
        s = self.stride
        p = self.padding
        y = np.arange(H)[:, None]
        x = np.arange(W)[:, None]
        if self._walk_up:
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

    def valid_offsets(self):
        """bool [n_pre, kh*kw]: does pre neuron j reach an output through each kernel offset?"""
        return self.offset_targets() >= 0

    def _geo(self, backward):
        geo = np.zeros(N_GEO, np.int64)
        src, dst = (self.post_shape, self.pre_shape) if backward else (self.pre_shape, self.post_shape)
        geo[G_CS:G_CS + 3], geo[G_CR:G_CR + 3] = src, dst
        geo[G_KH], geo[G_KW] = self.kernel_shape
        geo[G_STRIDE], geo[G_PAD] = self.stride, self.padding
        return geo

    def kernel_layout(self, backward=False):
        """The offset walk of the phase: kind, flat kernel weights, geometry, site table."""
        kind = self._kinds[1 if backward else 0]
        geo = self._geo(backward)
        ip, ix = _empty_csr()
        return KernelLayout(kind, self._kernel_weights(backward), ip, ix, geo,
                            kernel_table(kind, geo))

    def _channel_of_pre(self):
        return np.arange(self.n_pre) % self.pre_shape[0]


class ConvProjection(SpatialProjection):
    """What conv and conv-transpose projections share: every sender channel reaches every
    receiver channel through a ``(C_send, C_recv, kh, kw)`` kernel ("scr" below) whose
    user layout differs by kind (:meth:`_user_from_scr`, :meth:`_scr_from_user`)."""

    stored_arrays = ("weight",)
    #: geometry keys besides pre_shape, stride and padding that :meth:`from_stored` passes on.
    stored_options = ()

    @property
    def kernel_shape(self):
        return self.weight.shape[2:]

    @classmethod
    def from_stored(cls, geometry, arrays, *, delay=0, port=0):
        return cls(arrays["weight"], pre_shape=tuple(geometry["pre_shape"]),
                   stride=geometry["stride"], padding=geometry["padding"],
                   **{k: geometry[k] for k in cls.stored_options}, bias=arrays.get("bias"),
                   delay=delay, port=port)

    def params(self):
        return dict(super().params(), stride=self.stride, padding=self.padding,
                    kernel=list(self.kernel_shape))

    def set_weight(self, w):
        self.weight = V.check_array(w, f"{self.kind} weight", shape=self.weight.shape, dtype=np.float64)

    # layout of the kernel by (pre channel, post channel); user layout per kind
    def _scr_from_user(self, a):
        raise NotImplementedError  # pragma: no cover

    _user_from_scr = _scr_from_user

    def kernel_weights(self):
        """(forward, backward) kernel layouts: (kh, kw, C_pre, C_post) and (kh, kw, C_post, C_pre)."""
        scr = self._scr_from_user(self.weight)
        return (np.ascontiguousarray(scr.transpose(2, 3, 0, 1)),
                np.ascontiguousarray(scr.transpose(2, 3, 1, 0)))

    def _kernel_weights(self, backward):
        return self.kernel_weights()[1 if backward else 0].ravel()

    # -- degrees ----------------------------------------------------------------------
    def out_degree(self):
        return self.valid_offsets().sum(1).astype(np.int64) * self.post_shape[0]

    def in_degree(self):
        tg = self.offset_targets()
        Cr, Ho, Wo = self.post_shape
        per_site = np.bincount(tg[tg >= 0], minlength=Ho * Wo).astype(np.int64)
        return np.repeat(per_site, Cr)

    def _nz(self, dtype):
        """int64 [C_pre, kh*kw, C_post]: is weight (pre channel, offset, post channel) nonzero?"""
        kh, kw = self.kernel_shape
        nz = self._scr_from_user(_nonzero(self.weight, dtype)).transpose(0, 2, 3, 1)
        return nz.reshape(self.pre_shape[0], kh * kw, -1).astype(np.int64)

    def nonzero_out_degree(self, dtype=np.float64):
        """Over the valid kernel offsets and the receiving channels."""
        tg = self.offset_targets()
        nz = self._nz(dtype).sum(2)                                     # [Cs, K]
        return np.where(tg >= 0, nz[self._channel_of_pre()], 0).sum(1).astype(np.int64)

    def nonzero_in_degree(self, dtype=np.float64):
        # A receiving site gets at most one sender position per kernel offset; cover[site, o]
        # says whether it gets one.  Then in-degree = cover @ (nonzero weights summed over the
        # sender channels, per offset and receiving channel).
        tg = self.offset_targets()
        Cs = self.pre_shape[0]
        Cr, Ho, Wo = self.post_shape
        first = tg[::Cs]                                                  # channel-0 senders
        rows, offs = np.nonzero(first >= 0)
        cover = np.zeros((Ho * Wo, tg.shape[1]), np.int64)
        cover[first[rows, offs], offs] = 1
        per = cover @ self._nz(dtype).sum(0)                              # [sites, Cr]
        return per.reshape(-1).astype(np.int64)

    # -- counts -----------------------------------------------------------------------
    def synapse_counts(self, sent, backward=False):
        """``[n_pre, kh*kw]`` per (pre neuron, kernel offset), summed over the receiving
        channels: forward ``C_post * sent[j]``; backward the events of the post neurons at
        the receiving site."""
        tg = self.offset_targets()
        if backward:
            site_sum = sent.reshape(-1, self.post_shape[0]).sum(1)
            return np.where(tg >= 0, site_sum[np.maximum(tg, 0)], 0)
        return np.where(tg >= 0, sent[:, None], 0) * self.post_shape[0]

    def kernel_weight_counts(self, sent, backward=False):
        """Events per kernel weight, in the weight's layout.

        Forward: ``Σ_{pre j in channel c_pre, offset valid} sent[j]`` (the same for every
        post channel); backward: the events of the post neurons at the receiving
        positions, per post channel."""
        tg = self.offset_targets()
        Cs = self.pre_shape[0]
        Cr = self.post_shape[0]
        kh, kw = self.kernel_shape
        ch = self._channel_of_pre()
        valid = tg >= 0
        if not backward:
            per = np.where(valid, sent[:, None], 0)                       # [n_pre, K]
            by_ch = np.zeros((Cs, kh * kw), np.int64)
            np.add.at(by_ch, ch, per)
            scr = np.broadcast_to(by_ch.reshape(Cs, 1, kh, kw), (Cs, Cr, kh, kw))
            return self._user_from_scr(scr).copy()
        sp = sent.reshape(-1, Cr)                                         # [sites, Cr]
        out = np.zeros((Cs, kh * kw, Cr), np.int64)
        for o in range(kh * kw):
            m = valid[:, o]
            np.add.at(out[:, o, :], ch[m], sp[tg[m, o]])
        return self._user_from_scr(out.reshape(Cs, kh, kw, Cr).transpose(0, 3, 1, 2)).copy()

    def kernel_count_maps(self, per_kernel_weight):
        """(per offset [kh, kw], per channel pair [C_post, C_pre])."""
        scr = self._scr_from_user(per_kernel_weight)
        return scr.sum((0, 1)), scr.sum((2, 3)).T

    # -- gradient -----------------------------------------------------------------------
    def sparse_matrix(self):
        import scipy.sparse as sp
        site = self.offset_targets()                    # [n_pre, kh*kw], -1: no target
        c_pre, c_post = self.pre_shape[0], self.post_shape[0]
        ch = self._channel_of_pre()
        j, k = np.nonzero(site >= 0)
        kern = self.kernel_weights()[0].reshape(-1, c_pre, c_post)   # (kh*kw, C_pre, C_post)
        rows = np.repeat(j, c_post)
        cols = (site[j, k][:, None] * c_post + np.arange(c_post)[None, :]).ravel()
        return sp.csr_matrix((kern[k, ch[j], :].ravel(), (rows, cols)),
                             shape=(self.n_pre, self.n_post))

    def grad_to_user(self, G):
        """From the forward kernel layout (kh, kw, C_pre, C_post) to the user layout."""
        kh, kw = self.kernel_shape
        g = G.reshape(kh, kw, self.pre_shape[0], self.post_shape[0])
        return {"weight": np.ascontiguousarray(self._user_from_scr(g.transpose(2, 3, 0, 1)))}


class Conv2d(ConvProjection):
    """2-D convolution between (C_in, H, W) and (C_out, H_out, W_out) populations.

    ``weight`` has PyTorch's layout (C_out, C_in, kh, kw); post neuron
    ``(co, oy, ox)`` receives ``weight[co, ci, ky, kx]`` from pre neuron
    ``(ci, oy*stride - padding + ky, ox*stride - padding + kx)``.  No synapse list is
    built: the kernels scatter straight from the (kh, kw, C_in, C_out) copy of the weight.
    """

    kind = "conv2d"
    _kinds = (K_CONV_DOWN, K_CONV_UP)
    count_layout = ("[n_pre, kh*kw] per (pre neuron, kernel offset ky*kw+kx), summed over receiving "
                    "channels; per kernel weight: [C_out, C_in, kh, kw]")

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

    def _scr_from_user(self, a):
        """(C_out, C_in, kh, kw) <-> (C_in, C_out, kh, kw)."""
        return a.transpose(1, 0, 2, 3)

    _user_from_scr = _scr_from_user

    @property
    def dense_macs(self):
        Cout, Ho, Wo = self.post_shape
        kh, kw = self.kernel_shape
        return Cout * Ho * Wo * self.pre_shape[0] * kh * kw
