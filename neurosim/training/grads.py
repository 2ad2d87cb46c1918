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
        G = np.zeros(w.size, np.float64)
        n_chunks = max(1, min(B, _th.get_threads()))
        weight_grad(k, geo, tab, ip, ix.astype(np.uint32), a, d, w.size, n_chunks, G, ops)
        out.update(pr.grad_to_user(G))
    if pr.bias is not None:
        s = d.sum(0)
        out["bias"] = s.reshape(-1, pr.post_shape[0]).sum(0) if len(pr.post_shape) == 3 else s
        ops += np.count_nonzero(d, axis=1)
    return out, ops
