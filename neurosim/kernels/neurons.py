"""The neuron arithmetic: one scalar function per model and operation.

Every path of the engine that updates a neuron — a touched site, a vectorised block, a
refractory neuron, the lazy catch-up of an untouched site, the final state, the
neuron-parallel CubaLIF runner and the dense one-step kernels below — calls these
functions, so each model's arithmetic is written exactly once.  The engine's update of a
model goes through its pair ``update_site_<kind>`` (a touched site, refractoriness
included) / ``update_block_<kind>`` (a vectorised block), which return the spike and the
*carry* (whether the neuron must be updated next step without input: ``carry_<kind>``),
so the threshold test is written here only (:mod:`.update`).  They are small and
compiled into their callers (LLVM inlines them, and the block loops still vectorise:
the branches are selects).

Types: every argument is a scalar of the network's dtype (potentials, currents and the
parameters of :mod:`.layout`'s ``pop_fp`` are all stored in it), so every operation is
rounded in that dtype — float32 networks never compute an intermediate in float64.
Python float literals are kept out of the arithmetic for the same reason (Numba would
promote a float32 operand to float64).

Units: dimensionless potentials; one call is one step ``dt``.
"""
import numba
import numpy as np

from ..config import NJIT, NJIT_NORT


# -- SPIDE IF / LIF (neurosim.neurons.LIF) -----------------------------------------------
@numba.njit(**NJIT_NORT)
def lif_fire(u, I, v_th, sub, by_value, v_reset):
    """Integrate, threshold (inclusive) and reset: ``u += I``; spike when ``u >= v_th``,
    then ``u -= sub`` (``by_value`` False) or ``u = v_reset``.  Returns (u, spiked).
    The leak is applied by the caller (:func:`leak`), after the reset."""
    u = u + I
    f = u >= v_th
    if by_value:
        u = v_reset if f else u
    else:
        u = u - sub if f else u
    return u, f


@numba.njit(**NJIT_NORT)
def leak(u, lam):
    """``u * λ`` (λ = 1: no leak, no operation)."""
    return u * lam if lam != 1 else u


@numba.njit(**NJIT_NORT)
def leak_steps(u, lam, n):
    """``n`` steps of leak without input: ``n`` multiplications in the dtype, so that a
    site left untouched is bit-identical to one leaked at every step."""
    if lam != 1:
        for _ in range(n):
            u = u * lam
    return u


@numba.njit(**NJIT_NORT)
def lif_update(u, ref, I, v_th, sub, lam, by_value, v_reset, t_ref):
    """One LIF step with refractoriness: a refractory neuron (``ref > 0``) ignores its
    input and counts down; otherwise :func:`lif_fire`, and a spike sets ``ref = t_ref``.
    Then the leak.  Returns (u, ref, spiked)."""
    s = False
    if ref > 0:
        ref -= 1
    else:
        u, s = lif_fire(u, I, v_th, sub, by_value, v_reset)
        if s:
            ref = t_ref
    return leak(u, lam), ref, s


@numba.njit(**NJIT_NORT)
def carry_lif(u, v_th):
    """Whether an LIF neuron at ``u`` must be updated next step without input (the
    engine's carry test): left at or above threshold."""
    return u >= v_th


@numba.njit(**NJIT_NORT)
def update_site_lif(u, ref, I, v_th, sub, lam, by_value, v_reset, t_ref):
    """The engine's LIF update of one neuron of a touched site (refractoriness included):
    :func:`lif_update`.  Returns (u, ref, spiked, carry): ``carry`` when the neuron is left
    at/above threshold (:func:`carry_lif`) or refractory."""
    u, ref, s = lif_update(u, ref, I, v_th, sub, lam, by_value, v_reset, t_ref)
    return u, ref, s, carry_lif(u, v_th) or ref > 0


@numba.njit(**NJIT_NORT)
def update_block_lif(u, I, v_th, sub, by_value, v_reset, lam):
    """The engine's LIF update of one neuron of a vectorised block (no refractoriness):
    :func:`lif_fire`, then the leak.  Returns (u, spiked, carry) (:func:`carry_lif`).
    Branch-free, so that the block loop vectorises."""
    u, f = lif_fire(u, I, v_th, sub, by_value, v_reset)
    u = leak(u, lam)
    return u, f, carry_lif(u, v_th)


# -- ternary neuron couple (neurosim.neurons.Ternary) ------------------------------------
@numba.njit(**NJIT_NORT)
def ternary_fire(w, I, v_th, sub):
    """``w += I``; ``q = +1`` if ``w >= v_th``, ``-1`` if ``w <= -v_th``, else 0;
    ``w -= sub * q``.  Returns (w, q) with q an int8.  Leak by the caller."""
    w = w + I
    up = w >= v_th
    dn = w <= -v_th
    q = np.int8(up) - np.int8(dn)
    w = w - sub if up else (w + sub if dn else w)
    return w, q


@numba.njit(**NJIT_NORT)
def ternary_update(w, I, v_th, sub, lam):
    """One ternary-couple step: :func:`ternary_fire`, then the leak.  Returns (w, q)."""
    w, q = ternary_fire(w, I, v_th, sub)
    return leak(w, lam), q


@numba.njit(**NJIT_NORT)
def carry_ternary(w, v_th):
    """Whether a ternary couple at ``w`` must be updated next step without input (the
    engine's carry test): ``w >= v_th`` or ``w <= -v_th``."""
    return (w >= v_th) | (w <= -v_th)


@numba.njit(**NJIT_NORT)
def update_site_ternary(w, I, v_th, sub, lam):
    """The engine's ternary update of one couple of a touched site: :func:`ternary_update`.
    Returns (w, q, carry) (:func:`carry_ternary`)."""
    w, q = ternary_update(w, I, v_th, sub, lam)
    return w, q, carry_ternary(w, v_th)


@numba.njit(**NJIT_NORT)
def update_block_ternary(w, I, v_th, sub, lam):
    """The engine's ternary update of one couple of a vectorised block: :func:`ternary_fire`,
    then the leak (the same operations as :func:`update_site_ternary`).  Returns
    (w, q, carry)."""
    w, q = ternary_fire(w, I, v_th, sub)
    w = leak(w, lam)
    return w, q, carry_ternary(w, v_th)


# -- adaptive-threshold LIF (neurosim.neurons.ALIF) --------------------------------------
@numba.njit(**NJIT_NORT)
def alif_update(u, a, I, v_th, sub, lam, beta, rho):
    """One ALIF step, in this order: ``u = u + I``; ``th = v_th + beta * a``; spike when
    ``u >= th`` (inclusive), then ``u = u - sub``; ``a = a * rho + s`` (the spike ``s``
    adds 0 or 1: Numba types bool + float as the float's type, so no float64
    intermediate); ``u = u * lam`` (:func:`leak`).  Returns (u, a, spiked)."""
    u = u + I
    th = v_th + beta * a
    f = u >= th
    u = u - sub if f else u
    a = a * rho + f
    return leak(u, lam), a, f


@numba.njit(**NJIT_NORT)
def carry_alif(u, v_th):
    """Whether an ALIF neuron at ``u`` must be updated next step without input: left at
    or above the *base* threshold ``v_th``.  Below it the neuron cannot fire without
    input however its adaptation decays (``v_th + beta * a >= v_th``, ``lam <= 1``); at
    or above it, it may fire once ``a`` has decayed enough, so it is updated every step."""
    return u >= v_th


@numba.njit(**NJIT_NORT)
def update_site_alif(u, a, I, v_th, sub, lam, beta, rho):
    """The engine's ALIF update of one neuron of a touched site (the caller has applied
    the missed steps of leak to ``u`` and of decay to ``a``: :func:`leak_steps`):
    :func:`alif_update`.  Returns (u, a, spiked, carry) (:func:`carry_alif`)."""
    u, a, s = alif_update(u, a, I, v_th, sub, lam, beta, rho)
    return u, a, s, carry_alif(u, v_th)


# -- current-based LIF (neurosim.neurons.CubaLIF) ----------------------------------------
@numba.njit(**NJIT_NORT)
def cuba_drive(i_e, I, d_m):
    """Drive term of one step: ``(i_e + I) * (1 - α_m)`` (``d_m`` = 1 - α_m, stored)."""
    return (i_e + I) * d_m


@numba.njit(**NJIT_NORT)
def cuba_membrane(v, dterm, v_rest, a_m):
    """Exact membrane step before the synaptic terms: ``v_rest + (v - v_rest) α_m + dterm``."""
    return v_rest + (v - v_rest) * a_m + dterm


@numba.njit(**NJIT_NORT)
def cuba_jump(i, x):
    """Arriving events ``x`` (summed weights) jump a receptor current, where nonzero."""
    return i + x if x != 0 else i


@numba.njit(**NJIT_NORT)
def cuba_port(acc, i, a, p):
    """One receptor port after its jump: the potential gains ``p_k i_k``, the current
    decays by ``α_k``.  Returns (acc, i)."""
    return acc + i * p, i * a


@numba.njit(**NJIT_NORT)
def cuba_fire(acc, r, v_th, v_reset, t_ref):
    """Refractoriness, threshold and reset: a refractory neuron is held at ``v_reset``
    and counts down; else a spike when ``acc >= v_th`` (``v = v_reset``, ``r = t_ref``).
    Returns (v, r, spiked).  Branch-free (selects) so that loops vectorise."""
    hold = r > 0
    f = (not hold) and acc >= v_th
    v = v_reset if (hold or f) else acc
    r = (r - 1) if hold else (t_ref if f else r)
    return v, r, f


# -- dense one-step kernels (a whole population, in place) -------------------------------
@numba.njit(**NJIT)
def lif_step(v, ref, current, v_th, sub, leak_, reset_code, v_reset, t_ref, spikes):
    """Dense LIF step over all neurons (in place); returns the number of spikes.
    Scalars are cast to ``v``'s dtype by the caller (:func:`neurosim.neurons.lif.step`)."""
    n = 0
    for j in range(v.shape[0]):
        u, r, s = lif_update(v[j], ref[j], current[j], v_th, sub, leak_, reset_code == 1,
                             v_reset, t_ref)
        v[j] = u
        ref[j] = r
        spikes[j] = s
        n += s
    return n


@numba.njit(**NJIT)
def ternary_step(w, current, v_th, sub, leak_, q):
    """Dense ternary step over all couples (in place); returns the number of nonzero spikes."""
    n = 0
    for j in range(w.shape[0]):
        wj, qj = ternary_update(w[j], current[j], v_th, sub, leak_)
        w[j] = wj
        q[j] = qj
        n += qj != 0
    return n


@numba.njit(**NJIT)
def alif_step(v, a, current, v_th, sub, leak_, beta, rho, spikes):
    """Dense ALIF step over all neurons (in place: potentials ``v``, adaptations ``a``);
    returns the number of spikes.  Scalars are of ``v``'s dtype
    (:meth:`neurosim.neurons.ALIF.step`)."""
    n = 0
    for j in range(v.shape[0]):
        u, aj, s = alif_update(v[j], a[j], current[j], v_th, sub, leak_, beta, rho)
        v[j] = u
        a[j] = aj
        spikes[j] = s
        n += s
    return n


@numba.njit(**NJIT)
def cuba_step(v, i_syn, ref, events, const, v_rest, v_th, v_reset, alpha_mem, d_mem, alpha_syn,
              p_syn, i_e, t_ref, spikes):
    """Dense CubaLIF step: ``events`` (ports × n) jump i_syn (where nonzero), then the
    exact step of every neuron; returns the number of spikes."""
    n = 0
    for j in range(v.shape[0]):
        acc = cuba_membrane(v[j], cuba_drive(i_e, const[j], d_mem), v_rest, alpha_mem)
        for k in range(i_syn.shape[0]):
            acc, i_syn[k, j] = cuba_port(acc, cuba_jump(i_syn[k, j], events[k, j]), alpha_syn[k],
                                         p_syn[k])
        v[j], ref[j], s = cuba_fire(acc, ref[j], v_th, v_reset, t_ref)
        spikes[j] = s
        n += s
    return n
