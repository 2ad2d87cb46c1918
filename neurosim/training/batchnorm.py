r"""Batch normalisation of an input map in SPIDE training (``[training] batch_norm``).

IDE's Fashion-MNIST network (Xiao et al., NeurIPS 2021) normalises the output of its input
map over the batch before it becomes the constant input current of the spiking layer.  In
neurosim this is an analog operation on the input map ``F`` of a constant input ``x``
(docs/training.md, "FC400"; docs/decisions.md): per post neuron ``i`` and sample ``b``,
every operation in float64,

* training (batch statistics, biased variance):
  :math:`z = F x + b`, :math:`\mu = \mathrm{mean}_b z`,
  :math:`\sigma^2 = \mathrm{mean}_b (z - \mu)^2`, :math:`r = 1 / \sqrt{\sigma^2 + \epsilon}`,
  :math:`\hat z = (z - \mu) r`, current :math:`c = \gamma \hat z + \beta` (then the dropout
  mask of ``F``);
* running statistics after every training step (PyTorch's ``BatchNorm1d``, momentum 0.1):
  :math:`\bar\mu \leftarrow (1 - m) \bar\mu + m \mu`,
  :math:`\bar\sigma^2 \leftarrow (1 - m) \bar\sigma^2 + m \sigma^2 B / (B - 1)` (unbiased);
* inference (test pass, stored ``/network``): folded into the map,
  :math:`s = \gamma / \sqrt{\bar\sigma^2 + \epsilon}`, :math:`F'_{ji} = F_{ji} s_i`,
  :math:`b'_i = (b_i - \bar\mu_i) s_i + \beta_i` (:func:`fold`), an ordinary dense map;
* backward, from :math:`g = \partial L / \partial c` (SPIDE's post error of ``F``):
  :math:`\partial L/\partial\beta = \sum_b g`,
  :math:`\partial L/\partial\gamma = \sum_b g \hat z`, and with :math:`g' = \gamma g`,
  :math:`\partial L/\partial z = r (g' - \mathrm{mean}_b g' - \hat z\, \mathrm{mean}_b(g' \hat z))`
  (the exact gradient through the batch statistics), which takes the place of the post
  error in ``F``'s local update.
"""
import numpy as np

from .. import _validate as V

#: running-statistics momentum and variance epsilon (PyTorch's BatchNorm1d defaults, IDE's).
MOMENTUM = 0.1
EPS = 1e-5
#: MACs per post neuron and sample: training forward (mean, variance, normalise, scale and
#: shift) and backward (g', its two batch means, dL/dz's two terms, dγ, dβ).
FORWARD_MACS = 4
BACKWARD_MACS = 7
#: the per-map arrays, in the order checkpoints write them.
STATE = ("gamma", "beta", "running_mean", "running_var")


def init_state(n):
    """A fresh state of a map with ``n`` outputs: γ = 1, β = 0, mean 0, variance 1."""
    return {"gamma": np.ones(n), "beta": np.zeros(n), "running_mean": np.zeros(n),
            "running_var": np.ones(n)}


def forward_batch(z, gamma, beta):
    """``(c, (z_hat, r, mu, var))``: the normalised current of ``z`` [B, n] with batch
    statistics, and what :func:`backward` and :func:`update_running` need."""
    z = np.asarray(z, np.float64)
    if z.shape[0] < 2:
        raise V.NeurosimError(f"batch normalisation needs at least 2 samples per batch, got "
                              f"{z.shape[0]}")
    mu = z.mean(0)
    zc = z - mu
    var = (zc * zc).mean(0)
    r = 1.0 / np.sqrt(var + EPS)
    z_hat = zc * r
    return gamma * z_hat + beta, (z_hat, r, mu, var)


def backward(g, z_hat, r, gamma):
    """``(dL/dz [B, n], dL/dγ [n], dL/dβ [n])`` from ``g = dL/dc`` [B, n] (sums over the
    batch; :func:`forward_batch`'s ``z_hat`` and ``r``)."""
    g = np.asarray(g, np.float64)
    dbeta = g.sum(0)
    dgamma = (g * z_hat).sum(0)
    gp = g * gamma
    dz = r * (gp - gp.mean(0) - z_hat * (gp * z_hat).mean(0))
    return dz, dgamma, dbeta


def update_running(state, mu, var, B):
    """Update ``state``'s running mean and (unbiased) variance in place from a batch of
    ``B`` samples' ``mu`` and biased ``var``."""
    m = MOMENTUM
    state["running_mean"] = (1.0 - m) * state["running_mean"] + m * mu
    state["running_var"] = (1.0 - m) * state["running_var"] + m * (var * (B / (B - 1.0)))


def fold(weight, bias, state):
    """``(F', b')`` of a dense map ``weight`` [n_pre, n_post] and ``bias`` [n_post] with
    the running statistics folded in (float64, the module docstring's order)."""
    s = state["gamma"] / np.sqrt(state["running_var"] + EPS)
    return weight * s[None, :], (bias - state["running_mean"]) * s + state["beta"]
