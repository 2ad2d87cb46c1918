"""Local SPIDE gradients of one projection from pre rates and post errors.

``projection_grads(pr, a_pre, d_post)`` returns the gradient of every learnable array of
the projection, in its user-facing layout, summed over the batch:

* weight: ``Σ_b a_pre[b] ⊗ d_post[b]`` mapped through the projection's connectivity
  (dense outer product, per CSR synapse, or a conv weight gradient summed over positions);
* bias: ``Σ_b d_post[b]`` (conv: also summed over positions, per output channel);

and the number of multiply-accumulates with two nonzero factors per sample (``ops``).
Only nonzero pre rates are visited (:func:`neurosim.kernels.spide.weight_grad`).
"""
import numpy as np

from .. import _pool
from .. import _validate as V
from ..kernels import threads as _th
from ..kernels.spide import weight_grad


def projection_grads(pr, a_pre, d_post):
    """Gradients of projection ``pr`` (dict name -> array) and ops per sample [B]."""
    a = V.check_array(a_pre, "pre rates", shape=(None, pr.n_pre), dtype=np.float64)
    d = V.check_array(d_post, "post errors", shape=(a.shape[0], pr.n_post), dtype=np.float64)
    B = a.shape[0]
    out = {}
    ops = np.zeros(B, np.int64)
    if pr.has_weights:
        k, w, ip, ix, geo, tab = pr.kernel_layout(backward=False)
        nth = _th.get_threads()
        parts = _pool.chunks(B, nth)
        acc = np.zeros((len(parts), w.size), np.float64)     # one accumulator per chunk
        ix = ix.astype(np.uint32)

        def chunk(c, b0, b1):
            weight_grad(k, geo, tab, ip, ix, a, d, b0, b1, acc[c], ops)
        _pool.run_chunks(chunk, B, nth, len(parts))
        G = np.zeros(w.size, np.float64)
        for c in range(len(parts)):       # chunk order: the sums do not depend on timing
            G += acc[c]
        out.update(pr.grad_to_user(G))
    if pr.bias is not None:
        s = d.sum(0)
        out["bias"] = s.reshape(-1, pr.post_shape[0]).sum(0) if len(pr.post_shape) == 3 else s
        ops += np.count_nonzero(d, axis=1)
    return out, ops
