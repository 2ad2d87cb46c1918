"""Per-neuron updates (inlined into the engine) and dense one-step kernels."""
import numba

from ..config import NJIT


@numba.njit(**NJIT)
def _lif_update(u, ref, I, v_th, sub, leak, reset_code, v_reset, t_ref):
    """One SPIDE LIF step of one neuron: returns (u, ref, spiked)."""
    s = False
    if ref > 0:
        ref -= 1
    else:
        u = u + I
        if u >= v_th:
            s = True
            if reset_code == 0:
                u = u - sub
            else:
                u = v_reset
            ref = t_ref
    if leak != 1.0:
        u = u * leak
    return u, ref, s


@numba.njit(**NJIT)
def _ternary_update(w, I, v_th, sub, leak):
    """One ternary-couple step of one neuron: returns (w, q)."""
    w = w + I
    q = 0
    if w >= v_th:
        q = 1
        w = w - sub
    elif w <= -v_th:
        q = -1
        w = w + sub
    if leak != 1.0:
        w = w * leak
    return w, q


@numba.njit(**NJIT)
def _cuba_update(v, i_syn, ref, j, drive, v_rest, v_th, v_reset, alpha_mem, alpha_syn, p_syn, t_ref):
    """One exact-integration step of CubaLIF neuron j (events already added to i_syn).

    ``drive`` is the constant current (i_e plus any per-neuron constant).  Returns spiked."""
    vj = v[j]
    acc = v_rest + (vj - v_rest) * alpha_mem + drive * (1.0 - alpha_mem)
    for k in range(i_syn.shape[0]):
        acc += i_syn[k, j] * p_syn[k]
        i_syn[k, j] = i_syn[k, j] * alpha_syn[k]
    if ref[j] > 0:
        ref[j] -= 1
        v[j] = v_reset
        return False
    if acc >= v_th:
        v[j] = v_reset
        ref[j] = t_ref
        return True
    v[j] = acc
    return False


@numba.njit(**NJIT)
def lif_step(v, ref, current, v_th, sub, leak, reset_code, v_reset, t_ref, spikes):
    """Dense LIF step over all neurons (in place); returns the number of spikes."""
    n = 0
    for j in range(v.shape[0]):
        u, r, s = _lif_update(v[j], ref[j], current[j], v_th, sub, leak, reset_code, v_reset, t_ref)
        v[j] = u
        ref[j] = r
        spikes[j] = s
        n += s
    return n


@numba.njit(**NJIT)
def ternary_step(w, current, v_th, sub, leak, q):
    """Dense ternary step over all couples (in place); returns the number of nonzero spikes."""
    n = 0
    for j in range(w.shape[0]):
        wj, qj = _ternary_update(w[j], current[j], v_th, sub, leak)
        w[j] = wj
        q[j] = qj
        n += qj != 0
    return n


@numba.njit(**NJIT)
def cuba_step(v, i_syn, ref, events, const, v_rest, v_th, v_reset, alpha_mem, alpha_syn,
              p_syn, i_e, t_ref, spikes):
    """Dense CubaLIF step: ``events`` (ports × n) jump i_syn first; returns #spikes."""
    n = 0
    for j in range(v.shape[0]):
        for k in range(i_syn.shape[0]):
            i_syn[k, j] += events[k, j]
        s = _cuba_update(v, i_syn, ref, j, i_e + const[j], v_rest, v_th, v_reset, alpha_mem,
                         alpha_syn, p_syn, t_ref)
        spikes[j] = s
        n += s
    return n
