r"""Forward spiking neurons: SPIDE's discrete IF/LIF and a classic current-based LIF.

:class:`LIF` — the discrete-time neuron of SPIDE (Xiao et al., Neural Networks 2023,
arXiv:2302.00232, section "forward"), potential :math:`u` (dimensionless), one update per
time step :math:`t = 0 \dots T-1`, starting from :math:`u = 0`:

.. math::

    u &\leftarrow u + I(t) \\
    s(t) &= [u \ge \theta] \quad\text{(inclusive; at most one spike per step)} \\
    u &\leftarrow u - \Theta\, s(t) \quad\text{(or } u \leftarrow v_{reset}\text{ with reset="value")} \\
    u &\leftarrow \lambda u \quad\text{(leak after reset; } \lambda = 1 \text{ is IF)}

With the default :math:`\Theta = 2\theta` a neuron firing exactly at threshold lands on the
"reset potential" :math:`\rho = \theta - \Theta = -\theta`; the spike count is then the
*rounded* integrated input over :math:`\Theta` and :math:`|N/T - I/\Theta| \le 1/(2T)` for a
constant input :math:`I \in [0, \Theta]`.  Conservation (exact in exact arithmetic):
:math:`\Theta N(T) + u(T) = \sum_t I(t)` for IF.

Optional refractoriness: after a spike the neuron ignores its input for ``t_ref`` steps
(it still leaks and cannot spike).

:class:`CubaLIF` — the classic current-based LIF with exponential synaptic currents (as
NEST ``iaf_psc_exp`` / Brian2's CUBA example), integrated exactly over each step ``dt``:

.. math::

    \tau_m \dot v = v_{rest} - v + \sum_k i_k + i_e, \qquad \tau_k \dot i_k = -i_k

A spike arriving on receptor port ``k`` adds its weight to :math:`i_k`.  At each step:
(1) arriving events jump the currents, (2) :math:`v` and :math:`i_k` advance by the exact
propagators over ``dt``, (3) a neuron still refractory is held at ``v_reset``,
(4) :math:`v \ge v_{th}` emits a spike, sets :math:`v = v_{reset}` and starts ``t_ref``
(ms) of refractoriness.  Potentials are in mV-like units, times in ms.
"""
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import _validate as V
from ..kernels import layout as L
from .base import NeuronModel, below

class LIFState(NamedTuple):
    """State of n :class:`LIF` neurons: potential ``v`` and refractory counter ``ref``."""
    v: np.ndarray
    ref: np.ndarray


class CubaLIFState(NamedTuple):
    """State of n :class:`CubaLIF` neurons: ``v``, ``i_syn`` (ports × n), ``ref`` (steps)."""
    v: np.ndarray
    i_syn: np.ndarray
    ref: np.ndarray


#: reset-mode codes shared with the kernels.
RESET_SUBTRACT = 0
RESET_VALUE = 1
_RESETS = {"subtract": RESET_SUBTRACT, "value": RESET_VALUE}


@dataclass(frozen=True)
class LIF(NeuronModel):
    """SPIDE-style discrete IF/LIF neuron parameters (dimensionless potential, steps).

    Parameters
    ----------
    v_th : float
        Threshold θ (> 0).  Default 1.0 (SPIDE ``vth``).
    subtract : float or None
        Θ, subtracted from the potential at each spike (> 0).  ``None`` means 2θ,
        SPIDE's "reset potential −θ".
    leak : float
        λ in (0, 1], multiplies the potential after the reset of every step.  1 is IF.
    reset : {"subtract", "value"}
        "subtract" removes Θ per spike (SPIDE); "value" sets the potential to ``v_reset``.
    v_reset : float
        Potential after a spike when ``reset="value"``.
    t_ref : int
        Refractory period in steps (>= 0): input is ignored and no spike is emitted for
        that many steps after a spike.
    """

    kind = "lif"
    code = L.M_LIF
    State = LIFState

    v_th: float = 1.0
    subtract: float = None
    leak: float = 1.0
    reset: str = "subtract"
    v_reset: float = 0.0
    t_ref: int = 0

    def __post_init__(self):
        object.__setattr__(self, "v_th", V.check_real(self.v_th, "LIF.v_th", positive=True))
        sub = 2.0 * self.v_th if self.subtract is None else self.subtract
        object.__setattr__(self, "subtract", V.check_real(sub, "LIF.subtract", positive=True))
        lk = V.check_real(self.leak, "LIF.leak", positive=True, high=1.0)
        object.__setattr__(self, "leak", lk)
        V.check_choice(self.reset, "LIF.reset", set(_RESETS))
        object.__setattr__(self, "v_reset", V.check_real(self.v_reset, "LIF.v_reset"))
        object.__setattr__(self, "t_ref", V.check_int(self.t_ref, "LIF.t_ref", low=0))
        if self.reset == "value" and self.v_reset >= self.v_th:
            raise V.NeurosimError(
                f"LIF.v_reset must be below v_th={self.v_th} with reset='value', got {self.v_reset}")

    @property
    def dense_baseline(self):
        """The dense baseline runs LIF without refractoriness."""
        return self.t_ref == 0

    @property
    def rho(self):
        """Reset potential θ − Θ reached by a neuron firing exactly at threshold."""
        return self.v_th - self.subtract

    @property
    def reset_code(self):
        return _RESETS[self.reset]

    def pack(self, fp, ip, syn):
        """Write the kernel parameters (columns of :mod:`neurosim.kernels.layout`) into
        one population's rows: ``fp`` (the network's dtype: every value is rounded to it
        once, here), ``ip`` (int64), ``syn`` (unused)."""
        fp[L.FP_VTH], fp[L.FP_SUB], fp[L.FP_LEAK], fp[L.FP_VRESET] = (
            self.v_th, self.subtract, self.leak, self.v_reset)
        ip[L.IP_RESET], ip[L.IP_TREF] = self.reset_code, self.t_ref
        return L.M_LIF

    def summary(self):
        keep = {"v_th": self.v_th, "subtract": self.subtract, "leak": self.leak}
        if self.reset != "subtract":
            keep.update(reset=self.reset, v_reset=self.v_reset)
        if self.t_ref:
            keep["t_ref"] = self.t_ref
        return keep

    def init_state(self, n, dtype=np.float64):
        """Resting state of ``n`` neurons (potential 0)."""
        n = V.check_int(n, "n", low=0)
        dtype = V.check_dtype(dtype)
        return LIFState(np.zeros(n, dtype), np.zeros(n, np.int32))

    def step(self, state, current):
        """Advance ``state`` by one step under input ``current`` (length n); returns
        (spikes, state), the state updated in place."""
        from ..kernels.neurons import lif_step
        fp, ip, _ = _packed(self, state.v.dtype)
        spikes = np.zeros(state.v.shape, np.bool_)
        cur = V.check_array(current, "current", shape=state.v.shape, dtype=state.v.dtype)
        lif_step(state.v, state.ref, cur, fp[L.FP_VTH], fp[L.FP_SUB], fp[L.FP_LEAK],
                 ip[L.IP_RESET], fp[L.FP_VRESET], ip[L.IP_TREF], spikes)
        return spikes, state

    def to_nir(self, dt, dtype):
        """IF (λ = 1) or LIF (``tau = -dt/ln λ``, ``r = tau/dt``, ``v_leak = 0``); the
        subtractive reset becomes a reset to θ − Θ, refractoriness is dropped."""
        notes = []
        if self.reset == "subtract":
            notes.append(f"subtractive reset by {self.subtract} written as reset to "
                         f"{self.v_th - self.subtract}")
            vr = self.v_th - self.subtract
        else:
            vr = self.v_reset
        if self.t_ref:
            notes.append(f"refractory period of {self.t_ref} steps dropped")
        th = below(self.v_th, dtype)
        if self.leak == 1.0:
            return "IF", dict(r=1.0, v_threshold=th, v_reset=vr), 1.0, notes
        tau = -dt / math.log(self.leak)
        return ("LIF", dict(tau=tau, r=tau / dt, v_leak=0.0, v_threshold=th, v_reset=vr),
                (tau / dt) * dt / tau, notes)


@dataclass(frozen=True)
class CubaLIF(NeuronModel):
    """Classic current-based LIF with exponential synapses (ms, mV-like units).

    Parameters
    ----------
    v_rest : float
        Resting potential.
    v_th : float
        Threshold (must exceed ``v_reset``).
    v_reset : float
        Potential after a spike and during refractoriness.
    tau_mem : float
        Membrane time constant τ_m in ms (> 0).
    tau_syn : tuple of float
        Time constant of each receptor port's current in ms (> 0); projections name
        the port they drive by index.
    t_ref : float
        Refractory period in ms (>= 0), rounded to whole steps of ``dt``.
    i_e : float
        Constant input current (potential units: the drive it adds to ``v_rest``).
    dt : float
        Time step in ms (> 0).
    """

    kind = "cuba_lif"
    code = L.M_CUBA
    State = CubaLIFState
    forward_only = True          # no ternary backward phase for CubaLIF populations
    accepts_v_init = True

    v_rest: float = 0.0
    v_th: float = 1.0
    v_reset: float = 0.0
    tau_mem: float = 20.0
    tau_syn: tuple = (5.0,)
    t_ref: float = 0.0
    i_e: float = 0.0
    dt: float = 1.0

    def __post_init__(self):
        for f in ("v_rest", "v_th", "v_reset", "i_e"):
            object.__setattr__(self, f, V.check_real(getattr(self, f), f"CubaLIF.{f}"))
        object.__setattr__(self, "tau_mem", V.check_real(self.tau_mem, "CubaLIF.tau_mem", positive=True))
        object.__setattr__(self, "dt", V.check_real(self.dt, "CubaLIF.dt", positive=True))
        object.__setattr__(self, "t_ref", V.check_real(self.t_ref, "CubaLIF.t_ref", nonneg=True))
        ts = self.tau_syn
        if isinstance(ts, (int, float)):
            ts = (ts,)
        ts = tuple(V.check_real(t, "CubaLIF.tau_syn", positive=True) for t in ts)
        if not 1 <= len(ts) <= 4:
            raise V.NeurosimError(f"CubaLIF.tau_syn must list 1 to 4 time constants, got {len(ts)}")
        object.__setattr__(self, "tau_syn", ts)
        if self.v_reset >= self.v_th:
            raise V.NeurosimError(
                f"CubaLIF.v_reset must be below v_th={self.v_th}, got {self.v_reset}")

    @property
    def alpha_mem(self):
        """exp(−dt/τ_m): membrane decay over one step."""
        return math.exp(-self.dt / self.tau_mem)

    @property
    def alpha_syn(self):
        """exp(−dt/τ_k) per port."""
        return tuple(math.exp(-self.dt / t) for t in self.tau_syn)

    @property
    def p_syn(self):
        """Exact propagator from i_k(t) to v(t+dt) per port (NEST iaf_psc_exp)."""
        am = self.alpha_mem
        out = []
        for tau, a in zip(self.tau_syn, self.alpha_syn):
            if abs(tau - self.tau_mem) < 1e-12 * self.tau_mem:
                out.append(self.dt / self.tau_mem * am)
            else:
                out.append(tau / (tau - self.tau_mem) * (a - am))
        return tuple(out)

    @property
    def ref_steps(self):
        return int(round(self.t_ref / self.dt))

    @property
    def n_ports(self):
        return len(self.tau_syn)

    def pack(self, fp, ip, syn):
        """Write the kernel parameters into one population's rows (see :meth:`LIF.pack`):
        the propagators α_m, α_k, p_k are computed in float64 and rounded once to the
        network's dtype; ``1 - α_m`` is then computed in that dtype."""
        one = fp.dtype.type(1)
        fp[L.FP_VTH], fp[L.FP_VRESET], fp[L.FP_VREST], fp[L.FP_IE] = (
            self.v_th, self.v_reset, self.v_rest, self.i_e)
        fp[L.FP_AMEM] = self.alpha_mem
        fp[L.FP_DMEM] = one - fp[L.FP_AMEM]
        fp[L.FP_LEAK] = 1.0          # no lazy leak: CubaLIF populations update every step
        ip[L.IP_TREF], ip[L.IP_NPORTS] = self.ref_steps, self.n_ports
        syn[L.SYN_ALPHA, :self.n_ports] = self.alpha_syn
        syn[L.SYN_P, :self.n_ports] = self.p_syn
        return L.M_CUBA

    def to_dict(self):
        d = super().to_dict()
        d["tau_syn"] = list(self.tau_syn)
        return d

    def init_state(self, n, dtype=np.float64):
        """Resting state of ``n`` neurons (potential ``v_rest``, no current)."""
        n = V.check_int(n, "n", low=0)
        dtype = V.check_dtype(dtype)
        return CubaLIFState(np.full(n, self.v_rest, dtype), np.zeros((self.n_ports, n), dtype),
                            np.zeros(n, np.int32))

    def step(self, state, current):
        """Advance ``state`` by one step; ``current`` has shape (ports, n): the summed
        weights of the events arriving on each port this step.  Returns (spikes, state),
        the state updated in place."""
        from ..kernels.neurons import cuba_step
        fp, ip, syn = _packed(self, state.v.dtype)
        spikes = np.zeros(state.v.shape, np.bool_)
        cur = V.check_array(current, "current", shape=state.i_syn.shape, dtype=state.v.dtype)
        n = self.n_ports
        cuba_step(state.v, state.i_syn, state.ref, cur, np.zeros_like(state.v), fp[L.FP_VREST],
                  fp[L.FP_VTH], fp[L.FP_VRESET], fp[L.FP_AMEM], fp[L.FP_DMEM],
                  syn[L.SYN_ALPHA, :n].copy(), syn[L.SYN_P, :n].copy(), fp[L.FP_IE],
                  ip[L.IP_TREF], spikes)
        return spikes, state

    def to_nir(self, dt, dtype):
        """CubaLIF (one port only; ``t_ref`` and ``i_e`` are dropped)."""
        if self.n_ports != 1:
            raise V.NeurosimError(f"CubaLIF with {self.n_ports} receptor ports; NIR's "
                                  "CubaLIF has one synaptic current")
        notes = ["t_ref / i_e dropped"] if self.t_ref or self.i_e else []
        s = self.dt / dt      # neurosim ms per NIR time unit
        return ("CubaLIF", dict(tau_syn=self.tau_syn[0] / s, tau_mem=self.tau_mem / s, r=1.0,
                                v_leak=self.v_rest, v_threshold=below(self.v_th, dtype),
                                v_reset=self.v_reset, w_in=1.0), 1.0, notes)


def _packed(params, dtype):
    """The parameters as the engine holds them: (fp, ip, syn) rows of one population."""
    fp = np.zeros(L.N_FP, dtype)
    ip = np.zeros(L.N_IP, np.int64)
    syn = np.zeros((2, L.MAX_PORTS), dtype)
    params.pack(fp, ip, syn)
    return fp, ip, syn


def init_state(n, params, dtype=np.float64):
    """Resting state of ``n`` neurons of ``params`` (see ``params.init_state``)."""
    _check_model(params)
    return params.init_state(n, dtype)


def step(state, current, params):
    """Advance ``state`` by one step under input ``current``; returns (spikes, state).
    See ``params.step``: :meth:`LIF.step`, :meth:`CubaLIF.step`."""
    _check_model(params)
    return params.step(state, current)


def _check_model(params):
    if not isinstance(params, NeuronModel) or params.role != "forward":
        raise TypeError(f"params must be LIF or CubaLIF, got {type(params).__name__}")
