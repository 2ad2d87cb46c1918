r"""Ternary neuron couples: the spiking units of SPIDE's backward phase.

One couple per forward neuron, simulated as a single potential :math:`w` (dimensionless),
starting at 0, for :math:`t = 0 \dots T_b - 1`:

.. math::

    w &\leftarrow w + I_b(t) \\
    q(t) &= +1 \text{ if } w \ge \theta_b, \; -1 \text{ if } w \le -\theta_b, \; 0 \text{ otherwise (both inclusive)} \\
    w &\leftarrow w - \Theta_b\, q(t) \\
    w &\leftarrow \lambda w \quad\text{(optional leak)}

The transmitted spike value is :math:`\Theta_b q(t)`; with the defaults
(:math:`\theta_b = 0.5, \Theta_b = 2\theta_b = 1`) it is -1, 0 or +1.  The average spike
value :math:`\beta = (\Theta_b / T_b) \sum_t q(t)` satisfies
:math:`|\beta - I_b| \le \Theta_b / (2 T_b)` for a constant :math:`|I_b| \le \Theta_b`.
Conservation: :math:`\Theta_b \sum_t q(t) + w(T_b) = \sum_t I_b(t)`.

Reference: Xiao et al., "SPIDE", Neural Networks 2023, arXiv:2302.00232.
"""
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _validate as V
from ..kernels import layout as L
from .base import NeuronModel


class TernaryState(NamedTuple):
    """State of n ternary couples: potential ``w``."""
    w: np.ndarray


@dataclass(frozen=True)
class Ternary(NeuronModel):
    """Ternary couple parameters (dimensionless potential).

    Parameters
    ----------
    v_th : float
        θ_b (> 0), default 0.5 (SPIDE ``vth_back``).
    subtract : float or None
        Θ_b, subtracted per spike and the spike's magnitude; ``None`` means 2θ_b.
    leak : float
        λ in (0, 1] applied after the reset; 1 (default) is no leak.
    """

    kind = "ternary"
    code = L.M_TERNARY
    role = "backward"
    State = TernaryState

    v_th: float = 0.5
    subtract: float = None
    leak: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "v_th", V.check_real(self.v_th, "Ternary.v_th", positive=True))
        sub = 2.0 * self.v_th if self.subtract is None else self.subtract
        object.__setattr__(self, "subtract", V.check_real(sub, "Ternary.subtract", positive=True))
        object.__setattr__(self, "leak", V.check_real(self.leak, "Ternary.leak", positive=True, high=1.0))

    def pack(self, fp, ip, syn):
        """Write the kernel parameters into one population's rows of the backward phase
        (columns of :mod:`neurosim.kernels.layout`; ``fp`` in the network's dtype)."""
        fp[L.FP_VTH], fp[L.FP_SUB], fp[L.FP_LEAK] = self.v_th, self.subtract, self.leak
        return L.M_TERNARY

    def init_state(self, n, dtype=np.float64):
        """Zero state of ``n`` couples."""
        n = V.check_int(n, "n", low=0)
        return TernaryState(np.zeros(n, V.check_dtype(dtype)))

    def step(self, state, current):
        """Advance by one step; returns (q in {-1, 0, +1} as int8, state).  In place."""
        from ..kernels.neurons import ternary_step
        cur = V.check_array(current, "current", shape=state.w.shape, dtype=state.w.dtype)
        q = np.zeros(state.w.shape, np.int8)
        dt = state.w.dtype.type
        ternary_step(state.w, cur, dt(self.v_th), dt(self.subtract), dt(self.leak), q)
        return q, state


def init_state(n, params=None, dtype=np.float64):
    """Zero state of ``n`` couples."""
    return (params or Ternary()).init_state(n, dtype)


def step(state, current, params):
    """Advance by one step (:meth:`Ternary.step`)."""
    return params.step(state, current)
