r"""Adaptive-threshold LIF: SPIDE's discrete LIF whose threshold rises with its own spikes.

:class:`ALIF` — potential :math:`u` and adaptation :math:`a`, both dimensionless, one
update per time step :math:`t = 0 \dots T-1`, starting from :math:`u = a = 0`:

.. math::

    u &\leftarrow u + I(t) \\
    \vartheta(t) &= \theta + \beta a \\
    s(t) &= [u \ge \vartheta(t)] \quad\text{(inclusive; at most one spike per step)} \\
    u &\leftarrow u - \Theta\, s(t) \\
    a &\leftarrow \rho a + s(t) \\
    u &\leftarrow \lambda u \quad\text{(leak after reset; } \lambda = 1 \text{: none)}

Each spike raises the threshold by :math:`\beta` (potential units per unit of
adaptation); the rise decays by :math:`\rho` per step.  With :math:`\beta = 0` the model
is :class:`neurosim.neurons.LIF` with a subtractive reset, bit for bit.

Floating point: every operation is rounded in the network's dtype ``D`` (parameters are
rounded to ``D`` once, when the network is compiled), in this order::

    u = u + I
    th = v_th + (beta * a)
    s = u >= th
    u = u - subtract        (only if s)
    a = (a * rho) + s       (s is 0 or 1)
    u = u * leak            (skipped when leak = 1)

The engine updates only the neurons that receive input (or were left at or above
``v_th``); a neuron left untouched for ``n`` steps gets ``n`` multiplications of ``u`` by
λ and of ``a`` by ρ when next touched, bit-identical to stepping it.  That is exact
because an untouched neuron below the base threshold :math:`\theta` cannot fire
(:math:`\vartheta \ge \theta`, :math:`\lambda \le 1`), while one at or above it may fire
as :math:`a` decays, so it is updated every step.

Forward only: SPIDE training and the backward phase refuse ALIF populations; no NIR
export.
"""
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _validate as V
from ..kernels import layout as L
from .base import NeuronModel


class ALIFState(NamedTuple):
    """State of n :class:`ALIF` neurons: potential ``v`` and adaptation ``a``."""
    v: np.ndarray
    a: np.ndarray


def _in_range(value, name, low, high, low_open, high_open=False):
    """``value`` as a float in the interval (or one-line error naming it and the range)."""
    v = V.check_real(value, name)
    if (v <= low if low_open else v < low) or (high is not None and
                                               (v >= high if high_open else v > high)):
        lo = f"({low:g}" if low_open else f"[{low:g}"
        hi = "inf)" if high is None else (f"{high:g})" if high_open else f"{high:g}]")
        raise V.NeurosimError(f"{name} must be in {lo}, {hi}, got {v}")
    return v


@dataclass(frozen=True)
class ALIF(NeuronModel):
    """Adaptive-threshold LIF parameters (dimensionless potential and adaptation, steps).

    Parameters
    ----------
    v_th : float
        Base threshold θ (> 0).  Default 1.0.
    subtract : float or None
        Θ, subtracted from the potential at each spike (> 0).  ``None`` means 2θ
        (SPIDE's convention: a neuron firing exactly at θ lands on −θ).
    leak : float
        λ in (0, 1], multiplies the potential after the reset of every step.  1: none.
    beta : float
        β >= 0, threshold increase (potential units) per unit of adaptation; 0 is LIF.
    rho : float
        ρ in (0, 1], decay of the adaptation per step (1: it never decays).
    """

    kind = "alif"
    code = L.M_ALIF
    State = ALIFState
    forward_only = True          # no ternary backward phase (SPIDE) for ALIF populations

    v_th: float = 1.0
    subtract: float = None
    leak: float = 1.0
    beta: float = 0.5
    rho: float = 0.9

    def __post_init__(self):
        th = _in_range(self.v_th, "ALIF.v_th", 0.0, None, True)
        object.__setattr__(self, "v_th", th)
        sub = 2.0 * th if self.subtract is None else self.subtract
        object.__setattr__(self, "subtract", _in_range(sub, "ALIF.subtract", 0.0, None, True))
        object.__setattr__(self, "leak", _in_range(self.leak, "ALIF.leak", 0.0, 1.0, True))
        object.__setattr__(self, "beta", _in_range(self.beta, "ALIF.beta", 0.0, None, False))
        object.__setattr__(self, "rho", _in_range(self.rho, "ALIF.rho", 0.0, 1.0, True))

    def pack(self, fp, ip, syn):
        """Write the kernel parameters (columns of :mod:`neurosim.kernels.layout`) into
        one population's rows: ``fp`` (the network's dtype: each value rounded once);
        ``ip`` and ``syn`` unused."""
        fp[L.FP_VTH], fp[L.FP_SUB], fp[L.FP_LEAK], fp[L.FP_BETA], fp[L.FP_RHO] = (
            self.v_th, self.subtract, self.leak, self.beta, self.rho)
        return L.M_ALIF

    def init_state(self, n, dtype=np.float64):
        """Resting state of ``n`` neurons (potential and adaptation 0)."""
        n = V.check_int(n, "n", low=0)
        dtype = V.check_dtype(dtype)
        return ALIFState(np.zeros(n, dtype), np.zeros(n, dtype))

    def step(self, state, current):
        """Advance ``state`` by one step under input ``current`` (length n); returns
        (spikes, state), the state updated in place."""
        from ..kernels.neurons import alif_step
        dt = state.v.dtype
        fp = np.zeros(L.N_FP, dt)
        self.pack(fp, np.zeros(L.N_IP, np.int64), None)
        a = state.a
        if not (isinstance(a, np.ndarray) and a.dtype == dt and a.shape == state.v.shape):
            raise V.NeurosimError(f"state.a must be a {dt.name} array of shape {state.v.shape} "
                                  f"(like state.v), got {getattr(a, 'dtype', type(a).__name__)} "
                                  f"{getattr(a, 'shape', '')}")
        cur = V.check_array(current, "current", shape=state.v.shape, dtype=dt)
        spikes = np.zeros(state.v.shape, np.bool_)
        alif_step(state.v, state.a, cur, fp[L.FP_VTH], fp[L.FP_SUB], fp[L.FP_LEAK],
                  fp[L.FP_BETA], fp[L.FP_RHO], spikes)
        return spikes, state
