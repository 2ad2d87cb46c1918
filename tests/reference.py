"""Dense, clock-driven numpy reference of neurosim (tests only; STYLE 7.4).

Written from the model definitions (SPIDE spec sections 1, 2, 7; ``neurosim.engine``
docstrings), **not** from the kernels: no Numba, no call into ``neurosim.kernels`` or the
engine.  Projections are expanded to dense ``W[n_pre, n_post]`` matrices by explicit
loops over their user-facing weight layouts (PyTorch semantics for conv / conv-transpose /
avg-pool), and every population is updated densely at every step.

Public twins (same names and signatures as the kernels):

* :func:`lif_step`, :func:`ternary_step`, :func:`cuba_step`, :func:`alif_step`
  (``neurosim/kernels/neurons.py``),
* :func:`csr_propagate`, :func:`dense_propagate`, :func:`conv_propagate`
  (``neurosim/kernels/scatter.py``), :func:`apply_map` (``neurosim/kernels/engine.py``),
* :func:`weight_grad` (projection level), :func:`batch_sum`, :func:`tree_sum`,
  :func:`block_bounds` (``neurosim/kernels/spide.py``): the blocked batch sums, bit for bit,
* :func:`run_phase` with a *network-level* signature (the kernel's flat-array one is an
  implementation detail): it returns per-population spike trains, counts, final
  potentials, input sums Σ_t I(t) and per-projection delivered events per sender.

Neuron order: ``(n,)`` populations 0..n-1; ``(C, H, W)`` populations channel-last,
flat index ``(y*W + x)*C + c``.

Floating point: :func:`run_phase` follows the arithmetic documented in
``docs/hdf5-schema.md`` (not the kernels' code): currents summed in float64 and rounded
once, events summed in event order in the network's dtype, every neuron operation in
that dtype.  It therefore agrees with the engine bit-for-bit in float32 and float64 with
arbitrary (non-dyadic) values.  The one-step propagation twins (``*_propagate``,
``apply_map``) still use matrix products: compare them on exact (dyadic) data.
"""
import numpy as np

from neurosim.connectivity import AvgPool2d, Conv2d, ConvTranspose2d, Dense, Sparse, SumPool2d

# scatter kind codes of ``apply_map`` (defined once, in neurosim.kernels.layout)
from neurosim.kernels.layout import K_CONV_DOWN, K_CONV_UP, K_CSR, K_DENSE, K_POOL_DOWN  # noqa: E402
# number of sample blocks of a batch sum (defined once, in neurosim.kernels.spide)
from neurosim.kernels.spide import N_BLOCKS  # noqa: E402


# ---------------------------------------------------------------------------------------
# neuron order
def flat_index(c, y, x, shape):
    """Neurosim index of neuron (c, y, x) of a (C, H, W) population (channel-last)."""
    C, H, W = shape
    return (y * W + x) * C + c


def to_flat(a, shape, lead):
    """[*lead, n] or [*lead, C, H, W] (PyTorch order) -> float64 [*lead, n] (neurosim order)."""
    a = np.asarray(a, dtype=np.float64)
    n = int(np.prod(shape))
    if a.ndim == lead + 1 and a.shape[-1] == n:
        return a.copy()
    assert len(shape) == 3 and a.ndim == lead + 3 and a.shape[-3:] == tuple(shape), (a.shape, shape)
    C, H, W = shape
    out = np.zeros(a.shape[:lead] + (n,))
    for c in range(C):
        for y in range(H):
            for x in range(W):
                out[..., flat_index(c, y, x, shape)] = a[..., c, y, x]
    return out


# ---------------------------------------------------------------------------------------
# dense expansion of projections (explicit loops)
def _conv_matrix(w, pre_shape, post_shape, stride, padding, structure=False):
    """Conv2d, PyTorch semantics: weight (C_out, C_in, kh, kw);
    out[co, oy, ox] = Σ w[co, ci, ky, kx] in[ci, oy*s - p + ky, ox*s - p + kx]."""
    Cout, Cin, kh, kw = w.shape
    _, H, W = pre_shape
    _, Ho, Wo = post_shape
    M = np.zeros((Cin * H * W, Cout * Ho * Wo))
    for oy in range(Ho):
        for ox in range(Wo):
            for ky in range(kh):
                for kx in range(kw):
                    y = oy * stride - padding + ky
                    x = ox * stride - padding + kx
                    if not (0 <= y < H and 0 <= x < W):
                        continue
                    for ci in range(Cin):
                        for co in range(Cout):
                            M[flat_index(ci, y, x, pre_shape), flat_index(co, oy, ox, post_shape)] += \
                                1.0 if structure else w[co, ci, ky, kx]
    return M


def _conv_transpose_matrix(w, pre_shape, post_shape, stride, padding, structure=False):
    """ConvTranspose2d, PyTorch semantics: weight (C_in, C_out, kh, kw); input (ci, y, x)
    adds w[ci, co, ky, kx] to output (co, y*s - p + ky, x*s - p + kx) when inside."""
    Cin, Cout, kh, kw = w.shape
    _, H, W = pre_shape
    _, Ho, Wo = post_shape
    M = np.zeros((Cin * H * W, Cout * Ho * Wo))
    for y in range(H):
        for x in range(W):
            for ky in range(kh):
                for kx in range(kw):
                    oy = y * stride - padding + ky
                    ox = x * stride - padding + kx
                    if not (0 <= oy < Ho and 0 <= ox < Wo):
                        continue
                    for ci in range(Cin):
                        for co in range(Cout):
                            M[flat_index(ci, y, x, pre_shape), flat_index(co, oy, ox, post_shape)] += \
                                1.0 if structure else w[ci, co, ky, kx]
    return M


def _pool_matrix(k, stride, pre_shape, post_shape, weight=None, structure=False):
    """AvgPool2d (no padding): out[c, oy, ox] = Σ_{ky,kx<k} in[c, oy*s + ky, ox*s + kx] / k²."""
    C, H, W = pre_shape
    _, Ho, Wo = post_shape
    val = 1.0 / (k * k) if weight is None else weight
    M = np.zeros((C * H * W, C * Ho * Wo))
    for oy in range(Ho):
        for ox in range(Wo):
            for ky in range(k):
                for kx in range(k):
                    y, x = oy * stride + ky, ox * stride + kx
                    if not (y < H and x < W):
                        continue
                    for c in range(C):
                        M[flat_index(c, y, x, pre_shape), flat_index(c, oy, ox, post_shape)] += \
                            1.0 if structure else val
    return M


def _csr_matrix(indptr, indices, weights, n_pre, n_post, structure=False):
    M = np.zeros((n_pre, n_post))
    for j in range(n_pre):
        for s in range(int(indptr[j]), int(indptr[j + 1])):
            M[j, int(indices[s])] += 1.0 if structure else weights[s]     # duplicates summed
    return M


def dense_matrix(pr, structure=False):
    """W[n_pre, n_post] of projection ``pr`` in neurosim neuron order.

    ``structure=True`` returns synapse multiplicities instead (how many synapses join
    each pair: conv offsets that land inside, CSR duplicates, 1 for every dense pair)."""
    if isinstance(pr, Dense):
        return np.ones((pr.n_pre, pr.n_post)) if structure else np.array(pr.weight, np.float64)
    if isinstance(pr, Sparse):
        return _csr_matrix(pr.indptr, pr.indices, pr.weight, pr.n_pre, pr.n_post, structure)
    if isinstance(pr, Conv2d):
        return _conv_matrix(pr.weight, pr.pre_shape, pr.post_shape, pr.stride, pr.padding, structure)
    if isinstance(pr, ConvTranspose2d):
        return _conv_transpose_matrix(pr.weight, pr.pre_shape, pr.post_shape, pr.stride,
                                      pr.padding, structure)
    if isinstance(pr, AvgPool2d):
        return _pool_matrix(pr.kernel, pr.stride, pr.pre_shape, pr.post_shape, None, structure)
    if isinstance(pr, SumPool2d):         # every window input with weight 1
        return _pool_matrix(pr.kernel, pr.stride, pr.pre_shape, pr.post_shape, 1.0, structure)
    raise TypeError(f"unknown projection {type(pr).__name__}")


def synapse_matrix(pr):
    """int64 [n_pre, n_post]: number of synapses between each pair."""
    return dense_matrix(pr, structure=True).astype(np.int64)


def bias_per_neuron(pr):
    """Bias of every post neuron (conv: per output channel), zeros when there is none."""
    out = np.zeros(pr.n_post)
    if pr.bias is None:
        return out
    if len(pr.post_shape) == 3:
        C, H, W = pr.post_shape
        for c in range(C):
            for y in range(H):
                for x in range(W):
                    out[flat_index(c, y, x, pr.post_shape)] = pr.bias[c]
    else:
        out[:] = pr.bias
    return out


def count_synops(S, spike_idx):
    """Synaptic events caused by the spikes ``spike_idx`` (repeats count again).

    ``S`` is a synapse-multiplicity matrix (:func:`synapse_matrix`) or a weight matrix,
    in which case every nonzero entry counts as one synapse: ``(W != 0)[spikes].sum()``."""
    S = np.asarray(S)
    if S.dtype.kind == "f":
        S = S != 0
    return int(S[np.asarray(spike_idx, np.int64)].astype(np.int64).sum())


# ---------------------------------------------------------------------------------------
# neuron twins (same signatures as neurosim.kernels.neurons; in place).  Every operation
# is evaluated in the dtype of the state array ``v`` / ``w`` (scalars are cast to it),
# operation by operation as documented in docs/hdf5-schema.md.
def lif_step(v, ref, current, v_th, sub, leak, reset_code, v_reset, t_ref, spikes):
    """SPIDE LIF step of every neuron: if refractory, count down and ignore the input;
    else u += I, spike if u >= v_th, reset (subtract / value), start refractoriness;
    then u *= leak.  Returns the number of spikes."""
    dt = v.dtype.type
    u = v.copy()
    r = ref.astype(np.int64)
    hold = r > 0
    u = np.where(hold, u, u + np.asarray(current, v.dtype))
    s = ~hold & (u >= dt(v_th))
    u = np.where(s, (u - dt(sub)) if reset_code == 0 else dt(v_reset), u).astype(v.dtype)
    r = np.where(hold, r - 1, np.where(s, t_ref, r))
    if leak != 1:
        u = u * dt(leak)
    v[:] = u
    ref[:] = r
    spikes[:] = s
    return int(s.sum())


def ternary_step(w, current, v_th, sub, leak, q):
    """Ternary couple step: w += I; q = +1 if w >= v_th, -1 if w <= -v_th; w -= sub*q;
    w *= leak.  Returns the number of nonzero spikes."""
    dt = w.dtype.type
    x = w + np.asarray(current, w.dtype)
    qq = np.where(x >= dt(v_th), 1, np.where(x <= -dt(v_th), -1, 0))
    x = np.where(qq > 0, x - dt(sub), np.where(qq < 0, x + dt(sub), x)).astype(w.dtype)
    if leak != 1:
        x = x * dt(leak)
    w[:] = x
    q[:] = qq
    return int((qq != 0).sum())


def alif_step(v, a, current, v_th, sub, leak, beta, rho, spikes):
    """Adaptive-threshold LIF step (``neurosim.neurons.ALIF``): u += I; th = v_th + beta*a;
    spike if u >= th; u -= sub on a spike; a = a*rho + s; u *= leak.  Returns the number
    of spikes."""
    dt = v.dtype.type
    u = v + np.asarray(current, v.dtype)
    th = dt(v_th) + dt(beta) * a
    s = u >= th
    u = np.where(s, u - dt(sub), u).astype(v.dtype)
    a[:] = a * dt(rho) + s.astype(v.dtype)
    if leak != 1:
        u = u * dt(leak)
    v[:] = u
    spikes[:] = s
    return int(s.sum())


def cuba_step(v, i_syn, ref, events, const, v_rest, v_th, v_reset, alpha_mem, d_mem, alpha_syn,
              p_syn, i_e, t_ref, spikes):
    """CubaLIF step: events (ports x n) jump i_syn where nonzero; exact propagator over
    one step v' = v_rest + (v - v_rest) α_m + (i_e + const) d_m + Σ_k p_k i_k (summed in
    port order), i_k' = α_k i_k, with d_m = 1 - α_m; a refractory neuron is held at
    v_reset and counts down; v' >= v_th spikes, resets to v_reset and starts t_ref steps.
    Returns the number of spikes."""
    dt = v.dtype.type
    ev = np.asarray(events, v.dtype)
    isyn = np.where(ev != 0, i_syn + ev, i_syn).astype(v.dtype)
    acc = dt(v_rest) + (v - dt(v_rest)) * dt(alpha_mem) + \
        (dt(i_e) + np.asarray(const, v.dtype)) * dt(d_mem)
    for k in range(i_syn.shape[0]):
        acc = acc + isyn[k] * dt(p_syn[k])
        isyn[k] = isyn[k] * dt(alpha_syn[k])
    i_syn[...] = isyn
    r = ref.astype(np.int64)
    hold = r > 0
    s = ~hold & (acc >= dt(v_th))
    v[:] = np.where(hold | s, dt(v_reset), acc)
    ref[:] = np.where(hold, r - 1, np.where(s, t_ref, r))
    spikes[:] = s
    return int(s.sum())


# ---------------------------------------------------------------------------------------
# propagation twins (same signatures as neurosim.kernels.scatter / engine.apply_map)
def _geo_matrix(kind, geo, weights, pool_w=0.0, structure=False):
    """Dense matrix of a kernel-layout conv / pool description.

    geo = (Cs, Hs, Ws, Cr, Hr, Wr, kh, kw, stride, pad); conv weights flat
    (kh, kw, C_sender, C_receiver)."""
    Cs, Hs, Ws, Cr, Hr, Wr, kh, kw, st, pad = (int(g) for g in geo)
    src, dst = (Cs, Hs, Ws), (Cr, Hr, Wr)
    if kind in (K_CONV_DOWN, K_CONV_UP):
        wk = np.asarray(weights, np.float64).reshape(kh, kw, Cs, Cr)
        if kind == K_CONV_DOWN:      # -> PyTorch conv2d layout (C_out, C_in, kh, kw)
            return _conv_matrix(wk.transpose(3, 2, 0, 1), src, dst, st, pad, structure)
        return _conv_transpose_matrix(wk.transpose(2, 3, 0, 1), src, dst, st, pad, structure)
    if kind == K_POOL_DOWN:
        return _pool_matrix(kh, st, src, dst, pool_w, structure)
    raise ValueError(f"kind {kind} has no geometry matrix")


def _add_events(spike_idx, M, out):
    n = np.bincount(np.asarray(spike_idx, np.int64), minlength=M.shape[0]).astype(np.float64)
    out[:] = out + n @ M


def csr_propagate(spike_idx, indptr, indices, weights, out):
    n_pre = indptr.shape[0] - 1
    n_post = out.shape[0]
    _add_events(spike_idx, _csr_matrix(indptr, indices, weights, n_pre, n_post), out)
    return count_synops(_csr_matrix(indptr, indices, weights, n_pre, n_post, True).astype(np.int64),
                        spike_idx)


def dense_propagate(spike_idx, W, out):
    _add_events(spike_idx, np.asarray(W, np.float64), out)
    return count_synops(np.ones(W.shape, np.int64), spike_idx)


def conv_propagate(spike_idx, wf, geo, out):
    _add_events(spike_idx, _geo_matrix(K_CONV_DOWN, geo, wf), out)
    return count_synops(_geo_matrix(K_CONV_DOWN, geo, wf, structure=True).astype(np.int64), spike_idx)


def apply_map(kind, geo, tab, weights, indptr, indices, pool_w, x, b0, b1, out):
    """out[b] += x[b] @ M for ``b0 <= b < b1`` and the map described in kernel layout
    (see ``_geo_matrix``).

    ``tab`` (the kernel's precomputed per-site offset table) is accepted and ignored:
    the reference derives everything from ``geo``."""
    n_in, n_out = x.shape[1], out.shape[1]
    if kind == K_DENSE:
        M = np.asarray(weights, np.float64).reshape(n_in, n_out)
    elif kind == K_CSR:
        M = _csr_matrix(indptr, indices, weights, n_in, n_out)
    else:
        M = _geo_matrix(kind, geo, weights, pool_w)
    out[b0:b1] = out[b0:b1] + np.asarray(x[b0:b1], np.float64) @ M


# ---------------------------------------------------------------------------------------
# network-level phase
def forward_mask(counts, steps):
    """m = 1[1 <= count <= T-1]."""
    return (counts >= 1) & (counts <= steps - 1)


def _get(obj, key):
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)


def _layers(pr, dtype, backward=False):
    """The projection as dense matrices [n_sender, n_receiver], one per synapse
    occurrence: a CSR pair joined by two synapses contributes to two layers, in storage
    order (the engine adds the synapses of a row one by one)."""
    if not isinstance(pr, Sparse):
        M = dense_matrix(pr)
        return [(M.T if backward else M).astype(dtype)]
    layers = []
    for j in range(pr.n_pre):
        seen = {}
        for s in range(int(pr.indptr[j]), int(pr.indptr[j + 1])):
            i = int(pr.indices[s])
            k = seen.get(i, 0)
            seen[i] = k + 1
            if k == len(layers):
                layers.append(np.zeros((pr.n_pre, pr.n_post)))
            layers[k][j, i] = pr.weight[s]
    return [(M.T if backward else M).astype(dtype) for M in layers] or \
        [np.zeros((pr.n_post, pr.n_pre) if backward else (pr.n_pre, pr.n_post), dtype)]


def _event_sum(layers, senders, vals, n_recv, dtype):
    """Σ over the events of one sample, in increasing sender index, of val × row, each
    addition rounded in ``dtype`` (the engine's event order).  ``vals`` None: unweighted."""
    x = np.zeros(n_recv, dtype)
    for e, j in enumerate(senders):
        for M in layers:
            x = x + (M[j] if vals is None else vals[e] * M[j])
    return x


def _map_sum(pr, x):
    """Input map of analog x [R, n_pre] -> [R, n_post] in float64, each nonzero input's
    row added in turn (increasing pre index), as neurosim computes input currents."""
    layers = _layers(pr, np.float64)
    out = np.zeros((x.shape[0], pr.n_post))
    for r in range(x.shape[0]):
        for j in np.flatnonzero(x[r]):
            for M in layers:
                out[r] = out[r] + x[r, j] * M[j]
    return out


def run_phase(net, steps, backward=False, *, inputs=None, spikes=None, currents=None,
              masks=None, grad=None, gate=None, forward=None, batch=None, v_init=None):
    """Dense clock-driven simulation of one phase of ``net``, in the network's dtype.

    Forward: ``inputs`` (analog, per "input" population, [B, n] or [B, T, n], CHW also
    accepted), ``spikes`` (per "source" population, [B, T, n]), ``currents`` (per spiking
    population, [B, n] or [B, T, n]), ``masks`` (per projection, [B, n_post]).
    Backward: ``grad`` (per spiking population, [B, n]), ``forward`` (the forward result,
    this function's dict or a neurosim PhaseResult: its counts give the default gate and
    its masks the default masks), ``gate`` (per population, bool [B, n]).
    ``v_init``: initial potential per CubaLIF population ([n] or [B, n]; default v_rest).

    Arithmetic (docs/hdf5-schema.md): constant and time-varying currents are summed in
    float64 and rounded once to the dtype; events are summed per projection in event
    order in the dtype; the neuron update is evaluated in the dtype.

    Returns a dict: ``steps``, ``batch``, ``spikes`` {pop: int8 [B, T, n]}, ``counts``
    (forward spikes / backward +1 spikes), ``counts_neg``, ``v_final``, ``input_sum``
    (Σ_t I(t), all input including steps spent refractory), ``input_wsum``
    (Σ_t λ^(T-1-t) I(t)), ``weighted_counts`` (Σ_t λ^(T-1-t) s(t)), ``sent`` / ``sent_neg``
    {projection: int64 [B, n_sender]} and ``masks``.
    """
    T = int(steps)
    pops = net.populations
    dt = np.dtype(net.dtype)
    dts = dt.type
    inputs, spikes, currents = dict(inputs or {}), dict(spikes or {}), dict(currents or {})
    grad, gate = dict(grad or {}), dict(gate or {})
    if masks is None:
        masks = dict(_get(forward, "masks")) if (backward and forward is not None) else {}
    # batch size
    sizes = [np.shape(v)[0] for d in (inputs, spikes, grad) for v in d.values()]
    sizes += [np.shape(v)[0] for v in currents.values() if np.ndim(v) >= 2]
    sizes += [np.shape(v)[0] for v in masks.values() if np.ndim(v) >= 2]
    if forward is not None:
        sizes.append(next(iter(_get(forward, "counts").values())).shape[0])
    if batch is not None:
        sizes.append(batch)
    assert len(set(sizes)) <= 1, sizes
    B = sizes[0] if sizes else 1
    masks = {k: np.broadcast_to(np.asarray(m, np.float64), (B, net.projections[k].n_post))
             for k, m in masks.items()}
    masks_dt = {k: m.astype(dt) for k, m in masks.items()}

    if backward:
        projs = [pr for pr in net.projections.values()
                 if pops[pr.pre].spiking and pops[pr.post].spiking]
    else:
        projs = [pr for pr in net.projections.values() if pops[pr.pre].kind != "input"]
    layers = {pr.name: _layers(pr, dt, backward) for pr in projs}
    sender = {pr.name: (pr.post if backward else pr.pre) for pr in projs}
    receiver = {pr.name: (pr.pre if backward else pr.post) for pr in projs}
    incoming = {name: [pr for pr in projs if receiver[pr.name] == name] for name in pops}

    # constant and time-varying currents per spiking population (float64 sums)
    const = {name: np.zeros((B, p.n)) for name, p in pops.items() if p.spiking}
    tvc = {}
    if not backward:
        for pr in net.projections.values():
            if pr.bias is not None:
                b = np.broadcast_to(bias_per_neuron(pr), (B, pr.n_post))
                if pr.name in masks:
                    b = b * masks[pr.name]
                const[pr.post] = const[pr.post] + b
        flat = {}
        for name, x in inputs.items():
            pop = pops[name]
            assert pop.kind == "input"
            x = np.asarray(x, np.float64)
            tv = x.ndim in (3, 5)
            flat[name] = (to_flat(x, pop.shape, 2 if tv else 1), tv)
        for pr in net.projections.values():          # maps in declaration order
            if pr.pre not in flat:
                continue
            xf, tv = flat[pr.pre]
            if tv:
                y = _map_sum(pr, xf.reshape(B * T, -1)).reshape(B, T, -1)
                if pr.name in masks:
                    y = y * masks[pr.name][:, None, :]
                tvc[pr.post] = tvc.get(pr.post, 0) + y
            else:
                y = _map_sum(pr, xf)
                if pr.name in masks:
                    y = y * masks[pr.name]
                const[pr.post] = const[pr.post] + y
        for name, c in currents.items():
            c = np.asarray(c, np.float64)
            pop = pops[name]
            if c.ndim == 1:
                c = np.broadcast_to(c, (B,) + c.shape)
            tv = c.ndim in (3, 5)
            cf = to_flat(c, pop.shape, 2 if tv else 1)
            if tv:
                tvc[name] = tvc.get(name, 0) + cf
            else:
                const[name] = const[name] + cf
    else:
        for name, g in grad.items():
            g = np.asarray(g, np.float64)
            if g.ndim == 1:
                g = np.broadcast_to(g, (B,) + g.shape)
            const[name] = to_flat(g, pops[name].shape, 1)
        f_steps = _get(forward, "steps") if forward is not None else None
        for name, p in pops.items():
            if not p.spiking:
                continue
            if name in gate:
                gate[name] = np.asarray(gate[name], bool)
            else:
                gate[name] = forward_mask(np.asarray(_get(forward, "counts")[name]), f_steps)

    const = {k: v.astype(dt) for k, v in const.items()}
    tvc = {k: v.astype(dt) for k, v in tvc.items()}

    # state
    train = {name: np.zeros((B, T, p.n), np.int8) for name, p in pops.items()}
    u, ref, isyn, adapt = {}, {}, {}, {}
    for name, p in pops.items():
        if not p.spiking:
            continue
        if p.kind == "cuba_lif" and not backward:
            u[name] = np.full((B, p.n), p.neuron.v_rest, dt)
            if v_init is not None and name in v_init:
                u[name][:] = np.asarray(v_init[name], np.float64)
            isyn[name] = np.zeros((p.neuron.n_ports, B, p.n), dt)
        else:
            u[name] = np.zeros((B, p.n), dt)
        ref[name] = np.zeros((B, p.n), np.int64)
        adapt[name] = np.zeros((B, p.n), dt)
    sent = {pr.name: np.zeros((B, pops[sender[pr.name]].n), np.int64) for pr in projs}
    sent_neg = {pr.name: np.zeros((B, pops[sender[pr.name]].n), np.int64) for pr in projs}
    in_sum = {name: np.zeros((B, p.n)) for name, p in pops.items() if p.spiking}
    in_wsum = {name: np.zeros((B, p.n)) for name, p in pops.items() if p.spiking}
    wcount = {name: np.zeros((B, p.n)) for name, p in pops.items() if p.spiking}

    def leak_of(p):
        if backward:
            return p.ternary.leak
        return getattr(p.neuron, "leak", 1.0)

    order = net.schedule(backward=backward)
    pos = {name: i for i, name in enumerate(order)}
    for t in range(T):
        for name in order:
            p = pops[name]
            if p.kind == "input":
                continue
            if p.kind == "source":
                if not backward and name in spikes:
                    train[name][:, t] = to_flat(spikes[name], p.shape, 2)[:, t] != 0
                continue
            I = const[name].copy()
            if name in tvc:
                I = I + tvc[name][:, t]
            cuba = p.kind == "cuba_lif" and not backward
            for pr in incoming[name]:
                snd = sender[pr.name]
                d = pr.delay
                if t - d < 0:
                    continue
                if d == 0:
                    assert pos[snd] < pos[name], "delay-0 sender must update earlier"
                s = train[snd][:, t - d]
                x = np.zeros((B, p.n), dt)
                if backward:
                    scale = dts(pops[snd].ternary.subtract / pops[snd].neuron.subtract)
                    for b in range(B):
                        js = np.flatnonzero((s[b] != 0) & gate[snd][b])
                        vals = np.where(s[b, js] > 0, scale, -scale).astype(dt)
                        if pr.name in masks:
                            vals = vals * masks_dt[pr.name][b, js]
                        live = vals != 0
                        js, vals = js[live], vals[live]
                        x[b] = _event_sum(layers[pr.name], js, vals, p.n, dt)
                        sent[pr.name][b, js[s[b, js] > 0]] += 1
                        sent_neg[pr.name][b, js[s[b, js] < 0]] += 1
                else:
                    for b in range(B):
                        js = np.flatnonzero(s[b])
                        x[b] = _event_sum(layers[pr.name], js, None, p.n, dt)
                        sent[pr.name][b, js] += 1
                    if pr.name in masks:
                        x = x * masks_dt[pr.name]
                if cuba:
                    k = pr.port
                    isyn[name][k] = np.where(x != 0, isyn[name][k] + x, isyn[name][k])
                else:
                    I = I + x
            in_sum[name] += I
            lam = leak_of(p)
            in_wsum[name] = in_wsum[name] * lam + I
            if backward:
                q = np.zeros((B, p.n), np.int8)
                for b in range(B):
                    ternary_step(u[name][b], I[b], p.ternary.v_th, p.ternary.subtract, lam, q[b])
                train[name][:, t] = q
            elif cuba:
                nr = p.neuron
                a_m = dts(nr.alpha_mem)
                s = np.zeros((B, p.n), bool)
                for b in range(B):
                    ib = isyn[name][:, b].copy()
                    cuba_step(u[name][b], ib, ref[name][b], np.zeros_like(ib), I[b], nr.v_rest,
                              nr.v_th, nr.v_reset, a_m, dts(1) - a_m, np.array(nr.alpha_syn),
                              np.array(nr.p_syn), nr.i_e, nr.ref_steps, s[b])
                    isyn[name][:, b] = ib
                train[name][:, t] = s
            elif p.kind == "alif":
                nr = p.neuron
                s = np.zeros((B, p.n), bool)
                for b in range(B):
                    alif_step(u[name][b], adapt[name][b], I[b], nr.v_th, nr.subtract, lam,
                              nr.beta, nr.rho, s[b])
                train[name][:, t] = s
            else:
                nr = p.neuron
                s = np.zeros((B, p.n), bool)
                for b in range(B):
                    lif_step(u[name][b], ref[name][b], I[b], nr.v_th, nr.subtract, lam,
                             nr.reset_code, nr.v_reset, nr.t_ref, s[b])
                train[name][:, t] = s
            wcount[name] = wcount[name] * lam + train[name][:, t]

    out = dict(phase="backward" if backward else "forward", steps=T, batch=B, spikes={},
               counts={}, counts_neg={}, v_final={}, input_sum=in_sum, input_wsum=in_wsum,
               weighted_counts=wcount, sent=sent, sent_neg=sent_neg, masks=masks,
               gate=gate if backward else None)
    for name, p in pops.items():
        if p.kind == "input":
            continue
        tr = train[name]
        out["spikes"][name] = tr
        out["counts"][name] = (tr > 0).sum(1).astype(np.int64)
        out["counts_neg"][name] = (tr < 0).sum(1).astype(np.int64)
        out["v_final"][name] = u[name] if p.spiking else np.zeros((B, p.n))
    return out


# ---------------------------------------------------------------------------------------
# twins of neurosim/kernels/spide.py and of the engine's spike packing

def post_error(cpos, cneg, cfwd, gate, mode, T, scale_b, steps_b, theta):
    """Dense twin of ``kernels.spide.post_error`` on whole [B, n] arrays:
    ``(m * ((Θ_b * (n₊ - n₋)) / T_b)) / Θ`` in float64 with m = 1[1 <= cfwd <= T-1]
    (mode 0), ``gate != 0`` (mode 1) or 1 (mode 2)."""
    r = (scale_b * (np.asarray(cpos, np.float64) - np.asarray(cneg, np.float64))) / steps_b
    cfwd = np.asarray(cfwd)
    m = {0: (cfwd >= 1) & (cfwd <= T - 1), 1: np.asarray(gate) != 0,
         2: np.ones(r.shape, bool)}[mode]
    return (m.astype(np.float64) * r) / theta


def rows_acc(buf, tb, W, wbase, Cr, gch, gval, g0, ng, weighted):
    """Dense twin of ``kernels.scatter.rows_acc``: a copy of ``buf`` with the rows of
    events ``g0 .. g0+ng-1`` added one event at a time, each addition rounded in the
    dtype."""
    out = buf.copy()
    for i in range(g0, g0 + ng):
        r = wbase + int(gch[i]) * Cr
        for k in range(Cr):
            add = gval[i] * W[r + k] if weighted else W[r + k]
            out[tb + k] = out.dtype.type(out[tb + k] + add)
    return out


def block_bounds(B):
    """Twin of ``kernels.spide.block_bounds``: ``n = max(1, min(B, N_BLOCKS))`` blocks of a
    batch of ``B``, block ``k`` samples ``k*B//n .. (k+1)*B//n - 1``."""
    n = max(1, min(B, N_BLOCKS))
    return [k * B // n for k in range(n + 1)]


def tree_sum(parts):
    """Twin of ``kernels.spide.tree_sum``: the rows of ``parts`` (a list of arrays) added in
    the fixed pairwise tree (``s = 1, 2, 4, ...``: row ``k``, a multiple of ``2s``, plus row
    ``k + s``)."""
    parts = [np.array(p, np.float64) for p in parts]
    s = 1
    while s < len(parts):
        for k in range(0, len(parts) - s, 2 * s):
            parts[k] = parts[k] + parts[k + s]
        s *= 2
    return parts[0]


def batch_sum(d):
    """Twin of ``kernels.spide.batch_sum`` + ``tree_sum``: Σ_b d[b] of a [B, m] array,
    rows added one by one in sample order within each block, blocks combined by
    :func:`tree_sum`."""
    d = np.asarray(d, np.float64)
    bnd = block_bounds(d.shape[0])
    parts = []
    for k in range(len(bnd) - 1):
        acc = np.zeros(d.shape[1])
        for b in range(bnd[k], bnd[k + 1]):
            acc = acc + d[b]
        parts.append(acc)
    return tree_sum(parts)


def _sample_weight_grad(pr, a, d, G):
    """Add one sample's weight-gradient terms to ``G`` (user layout), each entry's terms in
    increasing sender (pre site) order: a dense or CSR entry has one term; a conv entry one
    per valid position, visited in row-major order of the sender positions."""
    if isinstance(pr, Dense):
        return G + np.outer(a, d)
    if isinstance(pr, Sparse):
        pre = np.repeat(np.arange(pr.n_pre), np.diff(pr.indptr))
        return G + a[pre] * d[pr.indices.astype(np.int64)]
    C_i, H, W = pr.pre_shape
    C_o, Ho, Wo = pr.post_shape
    kh, kw = pr.kernel_shape
    s, p = pr.stride, pr.padding
    A = a.reshape(H, W, C_i)
    D = d.reshape(Ho, Wo, C_o)
    G = G.copy()
    conv = isinstance(pr, Conv2d)
    for ky in range(kh):
        for kx in range(kw):
            if conv:               # weight [C_o, C_i, kh, kw]; sender (y, x) rises with (oy, ox)
                for oy in range(Ho):
                    for ox in range(Wo):
                        y, x = oy * s - p + ky, ox * s - p + kx
                        if 0 <= y < H and 0 <= x < W:
                            G[:, :, ky, kx] = G[:, :, ky, kx] + np.outer(D[oy, ox], A[y, x])
            else:                  # conv-transpose weight [C_i, C_o, kh, kw]
                for y in range(H):
                    for x in range(W):
                        oy, ox = y * s - p + ky, x * s - p + kx
                        if 0 <= oy < Ho and 0 <= ox < Wo:
                            G[:, :, ky, kx] = G[:, :, ky, kx] + np.outer(A[y, x], D[oy, ox])
    return G


def weight_grad(pr, a, d):
    """Dense twin of ``kernels.spide.weight_grad`` (+ ``tree_sum``) at the projection level.

    Returns (gradient in the projection's user weight layout, ops [B]).  The batch is cut
    into the blocks of :func:`block_bounds`; within a block the samples' terms are added
    one sample after the other (:func:`_sample_weight_grad`), the blocks combined by
    :func:`tree_sum`: the kernel's float additions, so equal bits for any values.  ops =
    number of synapses whose pre rate and post error are both nonzero, from the synapse
    multiplicity matrix."""
    a = np.asarray(a, np.float64)
    d = np.asarray(d, np.float64)
    S = dense_matrix(pr, structure=True)
    ops = np.array([(a[b] != 0).astype(float) @ S @ (d[b] != 0).astype(float)
                    for b in range(a.shape[0])]).round().astype(np.int64)
    shape = pr.weight.shape if not isinstance(pr, Sparse) else (pr.indices.size,)
    bnd = block_bounds(a.shape[0])
    parts = []
    for k in range(len(bnd) - 1):
        G = np.zeros(shape)
        for b in range(bnd[k], bnd[k + 1]):
            G = _sample_weight_grad(pr, a[b], d[b], G)
        parts.append(G)
    return tree_sum(parts), ops
