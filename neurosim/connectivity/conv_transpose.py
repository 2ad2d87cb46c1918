"""Transposed 2-D convolutions (PyTorch semantics and weight layout)."""
import numpy as np

from .. import _validate as V
from ..kernels.layout import K_CONV_DOWN, K_CONV_UP
from .conv import ConvProjection


class ConvTranspose2d(ConvProjection):
    """Transposed 2-D convolution, PyTorch semantics and weight layout (C_in, C_out, kh, kw).

    Pre neuron ``(ci, y, x)`` sends ``weight[ci, co, ky, kx]`` to post neuron
    ``(co, y*stride - padding + ky, x*stride - padding + kx)`` when that lies inside the
    output, whose size is ``(H-1)*stride - 2*padding + kh + output_padding``.
    """

    kind = "conv_transpose2d"
    stored_options = ("output_padding",)
    _kinds = (K_CONV_UP, K_CONV_DOWN)
    _walk_up = True
    count_layout = ("[n_pre, kh*kw] per (pre neuron, kernel offset ky*kw+kx), summed over "
                    "receiving channels; per kernel weight: [C_in, C_out, kh, kw]")

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

    def _scr_from_user(self, a):
        """The user layout (C_in, C_out, kh, kw) already is (C_pre, C_post, kh, kw)."""
        return a

    _user_from_scr = _scr_from_user

    def params(self):
        return dict(super().params(), output_padding=self.output_padding)

    @property
    def dense_macs(self):
        # a dense implementation multiplies every input by every kernel weight
        Cin, H, W = self.pre_shape
        kh, kw = self.kernel_shape
        return Cin * H * W * self.post_shape[0] * kh * kw
