"""Running a network: the forward phase (binary spikes) and the backward phase (ternary).

:func:`run_forward` and :func:`run_backward` validate and allocate, then call the Numba
kernel :func:`neurosim.kernels.engine.run_phase` on disjoint sample ranges, in parallel on
threads (:mod:`neurosim._pool`).
Both return a :class:`PhaseResult` with spike counts per neuron, final potentials, events
sent per projection and sender neuron (from which every op count follows exactly, see
:mod:`neurosim.counting`), neuron-update counts and, on request, the spike trains; in the
profiled build (``NEUROSIM_PROFILE=1``) also the time of each named schedule step.
"""
import dataclasses
import time

import numpy as np

from . import _buffers, _interrupt, _pool, _testhooks, config, memory
from . import _validate as V
from .connectivity import chw_to_flat
from .kernels import threads as _th
from .kernels import layout as L
from .kernels.clock import cycles_now
from .kernels.cuba import MAX_FAST_PORTS, run_split
from .kernels.engine import apply_map, run_phase
from .kernels.layout import K_CSR, K_DENSE, K_POOL_DOWN, M_CUBA, M_INPUT
from .network import Network, compile_program
from .results import PhaseResult


def _threads(n_threads):
    if n_threads is not None:
        n = V.check_int(n_threads, "n_threads", low=1, high=_th.max_threads())
        _th.set_threads(n)
    return _th.get_threads()


def _as_flat(a, pop, name, lead):
    """Accept [*lead, n] (neurosim order) or [*lead, C, H, W] (PyTorch order)."""
    a = np.asarray(a)
    if a.dtype == np.bool_:
        a = a.astype(np.float64)
    if a.ndim == len(lead) + 1 and a.shape[-1] == pop.n:
        return V.check_array(a, name, dtype=np.float64)
    if len(pop.shape) == 3 and a.ndim == len(lead) + 3 and a.shape[-3:] == pop.shape:
        return V.check_array(chw_to_flat(a), name, dtype=np.float64)
    raise V.NeurosimError(
        f"{name} for population {pop.name!r} of shape {pop.shape} must have shape "
        f"({', '.join(lead)}, {pop.n}) or ({', '.join(lead)}, {', '.join(map(str, pop.shape))}), "
        f"got {a.shape}")


def _spike_array(s, pop, name, T):
    """Source spike trains as bool [B, T, n] (neurosim order), checked without copies
    of the whole array to float."""
    s = np.asarray(s)
    what = f"spikes[{name!r}]"
    if s.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be a boolean or 0/1 numeric array, got dtype {s.dtype}")
    if len(pop.shape) == 3 and s.ndim == 5 and s.shape[2:] == pop.shape:
        s = chw_to_flat(s)
    if s.ndim != 3 or s.shape[2] != pop.n:
        raise V.NeurosimError(f"{what} for population {pop.name!r} must have shape (B, T, {pop.n}) "
                              f"or (B, T, {', '.join(map(str, pop.shape))}), got {s.shape}")
    if s.shape[1] != T:
        raise V.NeurosimError(f"{what} has {s.shape[1]} steps, the run has {T}")
    if s.dtype != np.bool_:
        if not np.all((s == 0) | (s == 1)):
            raise V.NeurosimError(f"{what} must contain only 0/1 (or booleans)")
        s = s != 0
    return s


def _record_names(net, prog, record):
    """Populations whose spike trains to keep: True (all), False/None, or a list of names."""
    if record is True:
        return {n for i, n in enumerate(prog.pop_names) if prog.arrays.pop_model[i] != M_INPUT}
    if not record:
        return set()
    names = [record] if isinstance(record, str) else list(record)
    for n in names:
        if n not in net.populations or net.populations[n].kind == "input":
            raise V.NeurosimError(f"record: {n!r} is not a spiking or source population; known: "
                                  f"{[p.name for p in net.populations.values() if p.kind != 'input']}")
    return set(names)


def _batch_of(arrays, batch):
    sizes = {k: np.shape(v)[0] for k, v in arrays if np.ndim(v) >= 2}
    if batch is not None:
        batch = V.check_int(batch, "batch", low=1)
        sizes["batch"] = batch
    vals = set(sizes.values())
    if len(vals) > 1:
        raise V.NeurosimError(f"inconsistent batch sizes: {sizes}")
    if not vals:
        return 1
    b = vals.pop()
    if b < 1:
        raise V.NeurosimError("the batch must contain at least one sample")
    return b


def _map_current(pr, x, dtype):
    """Apply the input map ``pr`` to analog x [B, n_pre] -> [B, n_post] (+ no bias)."""
    k, w, ip, ix, geo, tab = pr.kernel_layout(backward=False)
    pool_w = float(w[0]) if k == K_POOL_DOWN else 0.0     # pooling: one shared weight
    out = _buffers.take((x.shape[0], pr.n_post), dtype, zero=True)
    w = w.astype(dtype)
    xc = np.ascontiguousarray(x, dtype)
    nth = _th.get_threads()

    def chunk(c, b0, b1):
        apply_map(k, geo, tab, w, ip, ix, pool_w, xc, b0, b1, out)
    _pool.run_chunks(chunk, xc.shape[0], nth, nth)
    ops = (x != 0).astype(np.int64) @ pr.out_degree()
    return out, ops


def _check_network(net):
    if not isinstance(net, Network):
        raise TypeError(f"expected a neurosim Network, got {type(net).__name__}")
    if not net.spiking_populations:
        raise V.NeurosimError("the network has no spiking population to simulate")


#: smallest network (neurons) split over several threads by the recurrent CubaLIF runner;
#: below it the per-step barrier costs more than the split saves (one range is used).
SPLIT_MIN_NEURONS = 2048
#: neuron ranges of the recurrent CubaLIF runner start at multiples of this (cache lines
#: of every per-neuron array, and the 64-flag words of the spike scan, are not shared).
SPLIT_ALIGN = 64


def _split_plan(prog, B, nth, backward, tv_pops, src, masks_arr):
    """Plan for :func:`neurosim.kernels.cuba.run_split` (the recurrent CubaLIF runner), or
    None when the run does not qualify: forward phase, one sample, only CubaLIF
    populations (at most ``MAX_FAST_PORTS`` ports; analog input populations are allowed:
    their maps are constant currents), CSR / dense projections with delay >= 1 and no
    mask, no time-varying current.  It runs one neuron range per thread when the network
    has at least ``SPLIT_MIN_NEURONS`` neurons, else one range (it beats the general
    engine on one thread too: no per-event dispatch, no touched-site bookkeeping).

    Returns (H ranges per population, part [P, H+1] local range bounds, split_off [Q],
    n_split)."""
    if backward or B != 1 or tv_pops or src or masks_arr.shape[1]:
        return None
    models = prog.arrays.pop_model
    if not np.all((models == M_CUBA) | (models == M_INPUT)):
        return None
    if np.any(prog.arrays.pop_ip[models == M_CUBA, L.IP_NPORTS] > MAX_FAST_PORTS):
        return None
    if not np.all(np.isin(prog.arrays.proj_kind, (K_CSR, K_DENSE))) or np.any(prog.arrays.proj_delay < 1):
        return None
    sizes = np.diff(prog.arrays.pop_off)
    H = nth if int(sizes[models == M_CUBA].sum()) >= SPLIT_MIN_NEURONS else 1
    h = np.arange(H + 1)
    cut = np.round(sizes[:, None] * h / H / SPLIT_ALIGN).astype(np.int64) * SPLIT_ALIGN
    part = np.minimum(sizes[:, None], cut)
    part[:, -1] = sizes
    n_pre = sizes[prog.arrays.proj_src]
    rows = np.where(prog.arrays.proj_kind == K_CSR, n_pre * (H + 1), 0)
    split_off = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    return H, np.ascontiguousarray(part, np.int64), split_off, int(rows.sum())


def _cast(a, dtype):
    """``a.astype(dtype)`` into a reused array (:mod:`neurosim._buffers`): the same cast."""
    out = _buffers.take(a.shape, dtype, zero=False)
    np.copyto(out, a, casting="same_kind")
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class RunPlan:
    """What one phase allocates and which runner runs it (:func:`_plan_run`).

    ``tv_off`` / ``src_off`` / ``rec_off`` [P]: each population's column in the
    time-varying currents, source spike trains and recorded spikes (-1: none), with
    ``n_tv`` / ``n_src`` / ``n_rec`` columns in all; ``rec_names`` the recorded
    populations; ``leaky``: weighted counts are kept; ``split``: the plan of the recurrent
    CubaLIF runner (:func:`_split_plan`), None for the sample-parallel kernel, which then
    runs ``n_chunks`` sample ranges on ``nth`` threads."""
    T: int
    B: int
    backward: bool
    nth: int
    n_chunks: int
    split: object
    tv_off: np.ndarray
    n_tv: int
    src_off: np.ndarray
    n_src: int
    rec_names: set
    rec_off: np.ndarray
    n_rec: int
    leaky: bool


def _columns(prog, names, size):
    """Offsets [P] of the named populations' columns side by side (-1 for the others), and
    the number of columns."""
    off = np.full(len(prog.pop_names), -1, np.int64)
    n = 0
    for i, name in enumerate(prog.pop_names):
        if name in names:
            off[i] = n
            n += size(i, name)
    return off, n


def _plan_run(net, prog, T, B, tv_pops, src, masks_arr, backward, record, n_threads):
    """The :class:`RunPlan` of one phase."""
    tv_off, n_tv = _columns(prog, tv_pops, lambda i, name: net.populations[name].n)
    # sources in the order given (their columns side by side, as the caller packs them)
    src_off = np.full(len(prog.pop_names), -1, np.int64)
    n_src = 0
    for name in src:
        src_off[prog.pop_names.index(name)] = n_src
        n_src += net.populations[name].n
    nth = _threads(n_threads)
    split = _split_plan(prog, B, nth, backward, tv_pops, src, masks_arr)
    leaky = any((p.ternary.leak if backward else p.neuron.leak) != 1.0
                for p in net.spiking_populations)
    rec_names = _record_names(net, prog, record)
    rec_off, n_rec = _columns(prog, rec_names, lambda i, name: int(prog.arrays.pop_off[i + 1]
                                                                    - prog.arrays.pop_off[i]))
    return RunPlan(T=T, B=B, backward=backward, nth=nth,
                   n_chunks=max(1, min(B, 2 * nth)),      # taken dynamically by the threads
                   split=split, tv_off=tv_off, n_tv=n_tv, src_off=src_off, n_src=n_src,
                   rec_names=rec_names, rec_off=rec_off, n_rec=n_rec, leaky=leaky)


def _allocate(plan, net, prog, const, tv_arrays, src, masks_arr, gate, v_init):
    """The kernel's bundles (:class:`.layout.RunArrays`, :class:`.layout.OutArrays`) of a
    planned phase: drive packed, outputs taken from the reused buffers
    (:mod:`neurosim._buffers`), initial potentials set."""
    T, B, P = plan.T, plan.B, len(prog.pop_names)
    N = int(prog.arrays.pop_off[-1])
    dtype = net.dtype
    pop_off = prog.arrays.pop_off
    # time-varying currents
    tv = _buffers.take((B, T if plan.n_tv else 0, plan.n_tv), dtype, zero=True)
    for name, arr in tv_arrays.items():
        o = plan.tv_off[prog.pop_names.index(name)]
        tv[:, :, o:o + arr.shape[2]] += arr
    # source spike trains, side by side as int8 0/1 (the kernel reads them as emitted
    # spikes); one C-contiguous source is used as it is (a view, no copy)
    if len(src) == 1 and next(iter(src.values())).flags.c_contiguous:
        src_arr = next(iter(src.values())).view(np.int8)
    else:
        src_arr = _buffers.take((B, T if plan.n_src else 0, plan.n_src), np.int8, zero=True)
        for name, s in src.items():
            o = plan.src_off[prog.pop_names.index(name)]
            src_arr[:, :, o:o + s.shape[2]] = s
    # the sample-parallel kernel clears its samples' rows of the accumulated outputs
    # itself (in parallel, just before it adds to them); the CubaLIF runner needs zeros.
    # Reused arrays (neurosim/_buffers.py): no page faults, no zeroing by the system
    zero = plan.split is not None
    counts = _buffers.take((B, N), np.int32, zero)
    counts_neg = _buffers.take((B, N), np.int32, zero)
    for i in range(P):    # hint to the CubaLIF kernel: one constant drive for the population
        a, b_ = pop_off[i], pop_off[i + 1]
        if prog.arrays.pop_model[i] == M_CUBA and plan.tv_off[i] < 0 and b_ > a:
            prog.arrays.pop_ip[i, L.IP_UNIFORM] = int(np.all(const[:, a:b_] == const[:, a:a + 1]))
    u_out = _buffers.take((B, N), dtype, zero=True)   # initial potentials in, final ones out
    for i in range(P):
        if prog.arrays.pop_model[i] == M_CUBA:
            u_out[:, pop_off[i]:pop_off[i + 1]] = prog.arrays.pop_fp[i, L.FP_VREST]
    for name, v in (v_init or {}).items():
        i = prog.pop_names.index(name)
        u_out[:, pop_off[i]:pop_off[i + 1]] = v
    wcount = _buffers.take((B, N if plan.leaky else 0), np.float64, zero)
    sent = _buffers.take((B, prog.n_sent), np.int64, zero)
    sent_neg = _buffers.take((B, prog.n_sent), np.int64, zero)
    nupd = _buffers.take((B, P), np.int64, zero)
    rec = _buffers.take((B, T, plan.n_rec) if plan.n_rec else (1, 1, 1), np.int8, zero=True)
    Q = len(prog.proj_names)
    run = L.RunArrays(const=const, tv=tv, tv_off=plan.tv_off, src=src_arr, src_off=plan.src_off,
                      masks=masks_arr, gate=gate, rec_off=plan.rec_off)
    res = L.OutArrays(counts=counts, counts_neg=counts_neg, u_out=u_out, wcount=wcount,
                      sent=sent, sent_neg=sent_neg, nupd=nupd, rec=rec,
                      ops=np.empty((B, Q), np.int64), ops_neg=np.empty((B, Q), np.int64),
                      spk=np.empty((B, P), np.int64),
                      prof=np.zeros((B, L.N_STEPS if config.PROFILE else 0), np.int64))
    return run, res


def _execute(plan, prog, run, res):
    """Run the planned runner on the bundles; returns its wall time (s).  The kernels read
    the stop word before every step (:mod:`neurosim._interrupt`): when it is set the
    phase is abandoned and :class:`~neurosim._interrupt.Interrupted` raised."""
    T, P, Q = plan.T, len(prog.pop_names), len(prog.proj_names)
    arrays = prog.arrays
    label = "backward phase" if plan.backward else "forward phase"
    _testhooks.pause("phase")
    _interrupt.check()              # before a first call compiles the kernel
    t0 = time.perf_counter()
    if plan.split is not None:      # one sample of a recurrent CubaLIF network: neuron ranges
        H, part, split_off, n_split = plan.split
        done = np.zeros(1, np.int64)
        with _interrupt.phase(done, T, label):
            run_split(T, H, prog.n_buf, prog.max_ports, arrays, run, res, part, split_off,
                      n_split, _interrupt.STOP, done)
        _interrupt.check()
        res.nupd[0, :] = np.where(arrays.pop_model == M_CUBA, np.diff(arrays.pop_off) * T, 0)
        for q in range(Q):              # the per-sample totals run_phase writes itself
            s0 = arrays.proj_soff[q]
            n = int(arrays.pop_off[arrays.proj_src[q] + 1] - arrays.pop_off[arrays.proj_src[q]])
            d = arrays.sent_deg[s0:s0 + n]
            res.ops[:, q] = res.sent[:, s0:s0 + n] @ d
            res.ops_neg[:, q] = res.sent_neg[:, s0:s0 + n] @ d
        for i in range(P):
            a, b_ = arrays.pop_off[i], arrays.pop_off[i + 1]
            res.spk[:, i] = (res.counts[:, a:b_].sum(1, dtype=np.int64) +
                             res.counts_neg[:, a:b_].sum(1, dtype=np.int64))
    else:
        # None: a specialisation of the kernel compiled without the CubaLIF paths
        cuba = True if np.any(arrays.pop_model == M_CUBA) else None

        done = np.zeros(_DONE_STRIDE * plan.n_chunks, np.int64)   # a cache line per call

        def chunk(c, b0, b1):
            sc = L.alloc_scratch(arrays, prog.n_buf, prog.max_ports)
            run_phase(T, plan.backward, b0, b1, arrays, run, res, sc, _interrupt.STOP, done,
                      _DONE_STRIDE * c, cuba)
        with _interrupt.phase(done, T * plan.B, label):
            _pool.run_chunks(chunk, plan.B, plan.nth, plan.n_chunks)
        _interrupt.check()
    return time.perf_counter() - t0


#: int64 elements between the progress counters of two kernel calls (one cache line)
_DONE_STRIDE = 8


def _assemble(plan, net, prog, res, wall):
    """The kernel's flat outputs as the per-population / per-projection fields of a
    :class:`PhaseResult` (views, no copies)."""
    out = dict(wall_s=wall, counts={}, counts_neg={}, v_final={}, weighted_counts={},
               neuron_updates={}, spikes={} if plan.rec_names else None, sent={}, sent_neg={},
               synops={}, synops_neg={}, spike_totals={}, counts_all=res.counts,
               counts_neg_all=res.counts_neg,
               profile=_profile(res.prof) if config.PROFILE and plan.split is None else None)
    for i, name in enumerate(prog.pop_names):
        a, b_ = prog.arrays.pop_off[i], prog.arrays.pop_off[i + 1]
        if prog.arrays.pop_model[i] == M_INPUT:
            continue
        out["counts"][name] = res.counts[:, a:b_]
        out["counts_neg"][name] = res.counts_neg[:, a:b_]
        out["v_final"][name] = res.u_out[:, a:b_]
        pop = net.populations[name]
        lam = (pop.ternary.leak if plan.backward else pop.neuron.leak) \
            if pop.spiking else 1.0
        out["weighted_counts"][name] = res.wcount[:, a:b_] if lam != 1.0 else None
        out["neuron_updates"][name] = res.nupd[:, i]
        out["spike_totals"][name] = res.spk[:, i]
        if name in plan.rec_names:
            o = plan.rec_off[i]
            out["spikes"][name] = res.rec[:, :, o:o + (b_ - a)]
    for q, name in enumerate(prog.proj_names):
        s0 = prog.arrays.proj_soff[q]
        n = net.populations[prog.pop_names[prog.arrays.proj_src[q]]].n
        out["sent"][name] = res.sent[:, s0:s0 + n]
        out["sent_neg"][name] = res.sent_neg[:, s0:s0 + n]
        out["synops"][name] = res.ops[:, q]
        out["synops_neg"][name] = res.ops_neg[:, q]
    return out


_CYCLES_PER_S = []


def cycles_per_second():
    """Ticks per second of the profile's cycle counter (:mod:`neurosim.kernels.clock`),
    measured once per process against ``time.perf_counter``: the median of three 50 ms
    intervals (the counter ticks at a constant rate, also while the process sleeps)."""
    if not _CYCLES_PER_S:
        rates = []
        for _ in range(3):
            c0, t0 = cycles_now(), time.perf_counter()
            time.sleep(0.05)
            c1, t1 = cycles_now(), time.perf_counter()
            rates.append((c1 - c0) / (t1 - t0))
        _CYCLES_PER_S.append(float(np.median(rates)))
    return _CYCLES_PER_S[0]


def _profile(prof):
    """``PhaseResult.profile``: seconds per named step (:data:`.layout.STEP_NAMES`), the
    cycles of ``prof`` [B, N_STEPS] summed over the samples (thread time)."""
    cps = cycles_per_second()
    tot = prof.sum(axis=0)
    return {name: float(tot[k]) / cps for k, name in enumerate(L.STEP_NAMES)}


def _alloc_run(net, prog, T, B, const, tv_pops, tv_arrays, src, masks_arr, gate, backward,
               record, n_threads, v_init=None):
    """Plan, allocate, run and assemble one phase; returns the :class:`PhaseResult` fields
    it produced."""
    plan = _plan_run(net, prog, T, B, tv_pops, src, masks_arr, backward, record, n_threads)
    run, res = _allocate(plan, net, prog, const, tv_arrays, src, masks_arr, gate, v_init)
    wall = _execute(plan, prog, run, res)
    return _assemble(plan, net, prog, res, wall)


def _mask_arrays(net, masks, B):
    masks = dict(masks or {})
    for name, m in list(masks.items()):
        if name not in net.projections:
            raise V.NeurosimError(f"mask given for unknown projection {name!r}; known: {list(net.projections)}")
        pr = net.projections[name]
        masks[name] = V.check_array(np.broadcast_to(np.asarray(m, np.float64), (B, pr.n_post)),
                                    f"mask of projection {name!r}", dtype=np.float64)
    return masks


def _pack_masks(prog, masks, B, dtype):
    arr = _buffers.take((B, prog.n_mask), dtype, zero=True)
    for q, name in enumerate(prog.proj_names):
        if prog.arrays.proj_moff[q] >= 0:
            m = masks[name]
            arr[:, prog.arrays.proj_moff[q]:prog.arrays.proj_moff[q] + m.shape[1]] = m
    return arr


def run_forward(net, steps, *, inputs=None, spikes=None, currents=None, masks=None, batch=None,
                record=False, n_threads=None, v_init=None, input_norm=None):
    """Simulate the forward phase for ``steps`` steps on a batch of samples.

    Parameters
    ----------
    net : Network
    steps : int
        T >= 1.
    inputs : dict, optional
        For each ``"input"`` population, analog values [B, n] (or [B, C, H, W]),
        constant over time, or [B, T, n] / [B, T, C, H, W] per step.  Its input maps
        turn them into constant (or per-step) currents of their post populations.
    spikes : dict, optional
        For each ``"source"`` population, spike trains [B, T, n] (bool or 0/1).
    currents : dict, optional
        Extra current per population: [B, n] constant, or [B, T, n] per step.
    masks : dict, optional
        Per-sample scale of each named projection's output (dropout), [B, n_post]:
        the projection's input to the post neuron, bias included, is multiplied by it.
    batch : int, optional
        Batch size when no array gives it.
    record : bool or list of str
        Keep the spike trains of all (True) or of the named populations
        (memory B × T × neurons bytes).
    n_threads : int, optional
        Numba threads to use (default: current setting).
    v_init : dict, optional
        Initial potential of CubaLIF populations, [n] or [B, n] (default ``v_rest``).
        LIF populations always start at 0 (the engine's lazy leak relies on it).
    input_norm : dict, optional
        Input map name -> function of ``z = F x + b`` (float64 [B, n_post], the map of a
        constant input plus its bias) returning the current that replaces it (before the
        dropout mask): SPIDE training's batch normalisation of an input map
        (:mod:`neurosim.training.batchnorm`).  The map's bias enters only through ``z``.
    """
    _check_network(net)
    _interrupt.check()
    T = V.check_steps(steps, "steps")
    inputs, spikes, currents = dict(inputs or {}), dict(spikes or {}), dict(currents or {})
    for d, what in ((inputs, "inputs"), (spikes, "spikes"), (currents, "currents")):
        for k in d:
            if k not in net.populations:
                raise V.NeurosimError(f"{what} given for unknown population {k!r}; known: {list(net.populations)}")
    for k in inputs:
        if net.populations[k].kind != "input":
            raise V.NeurosimError(f"inputs[{k!r}]: {k!r} is a {net.populations[k].kind} population, not 'input'")
    for k in spikes:
        if net.populations[k].kind != "source":
            raise V.NeurosimError(f"spikes[{k!r}]: {k!r} is a {net.populations[k].kind} population, not 'source'")
    v_init = dict(v_init or {})
    for k in v_init:
        pop = net.populations.get(k)
        if pop is None or not (pop.spiking and pop.neuron.accepts_v_init):
            raise V.NeurosimError(
                f"v_init given for {k!r}, whose model takes no initial potential; populations "
                f"that take one: {[p.name for p in net.spiking_populations if p.neuron.accepts_v_init]}")
    B = _batch_of(list(inputs.items()) + list(spikes.items()) +
                  [(k, v) for k, v in v_init.items() if np.ndim(v) >= 2] +
                  [(k, v) for k, v in currents.items() if np.ndim(v) >= 2] + 
                  [(k, v) for k, v in (masks or {}).items() if np.ndim(v) >= 2], batch)
    dtype = net.dtype
    masks = _mask_arrays(net, masks, B)
    input_norm = dict(input_norm or {})
    for k in input_norm:
        pr = net.projections.get(k)
        if pr is None or pr.pre not in inputs or np.ndim(inputs[pr.pre]) not in (2, 4):
            raise V.NeurosimError(f"input_norm given for {k!r}, which is not the input map of "
                                  f"a constant input of this run")
    prog = compile_program(net, backward=False, masks=masks.keys())
    per_step = any(np.ndim(x) in (3, 5) for x in inputs.values())
    memory.check_run_memory(
        memory.estimate_run_bytes(net, "forward", B, T, record=record, per_step=per_step,
                                  masks=masks.keys(), n_threads=n_threads, programs=(prog,)),
        f"the forward phase ({B} samples x {T} steps)",
        "run fewer samples at a time, fewer steps, or record fewer populations")
    N = int(prog.arrays.pop_off[-1])
    const = _buffers.take((B, N), np.float64, zero=True)
    tv_arrays = {}
    input_ops = {}
    off = {n: int(prog.arrays.pop_off[i]) for i, n in enumerate(prog.pop_names)}

    def add_const(name, cur):
        pop = net.populations[name]
        const[:, off[name]:off[name] + pop.n] += cur

    def add_tv(name, cur):
        tv_arrays[name] = tv_arrays.get(name, 0) + cur

    # projection biases (masked like the projection's output)
    for pr in net.projections.values():
        b = pr.bias_per_neuron()
        if b is not None and pr.name not in input_norm:
            add_const(pr.post, b[None, :] * masks[pr.name] if pr.name in masks else b[None, :])
    # input maps, in projection declaration order (a fixed order for the float64 sums:
    # docs/hdf5-schema.md, "Arithmetic")
    flat = {}
    for name, x in inputs.items():
        pop = net.populations[name]
        x = np.asarray(x)
        if x.ndim in (2, 4):  # [B, n] or [B, C, H, W]: constant over time
            flat[name] = (_as_flat(x, pop, f"inputs[{name!r}]", ("B",)), False)
        else:
            xf = _as_flat(x, pop, f"inputs[{name!r}]", ("B", "T"))
            if xf.shape[1] != T:
                raise V.NeurosimError(f"inputs[{name!r}] has {xf.shape[1]} steps, the run has {T}")
            flat[name] = (xf, True)
    for pr in net.projections.values():
        if pr.pre not in flat:
            continue
        xf, per_step = flat[pr.pre]
        if not per_step:
            cur, ops = _map_current(pr, xf, np.float64)
            if pr.name in input_norm:
                b = pr.bias_per_neuron()
                cur = input_norm[pr.name](cur if b is None else cur + b[None, :])
            if pr.name in masks:
                cur = cur * masks[pr.name]
            add_const(pr.post, cur)
            input_ops[pr.name] = ops
        else:
            cur, ops = _map_current(pr, xf.reshape(B * T, -1), np.float64)
            cur = cur.reshape(B, T, -1)
            if pr.name in masks:
                cur = cur * masks[pr.name][:, None, :]
            add_tv(pr.post, cur)
            input_ops[pr.name] = ops.reshape(B, T).sum(1)
    for name, c in currents.items():
        pop = net.populations[name]
        c = np.asarray(c, np.float64)
        if c.ndim == 1:
            c = np.broadcast_to(c, (B,) + c.shape)
        if c.ndim in (2, 4):
            add_const(name, _as_flat(c, pop, f"currents[{name!r}]", ("B",)))
        else:
            ct = _as_flat(c, pop, f"currents[{name!r}]", ("B", "T"))
            if ct.shape[1] != T:
                raise V.NeurosimError(f"currents[{name!r}] has {ct.shape[1]} steps, the run has {T}")
            add_tv(name, ct)
    src = {}
    for name, s in spikes.items():
        src[name] = _spike_array(s, net.populations[name], name, T)
    masks_arr = _pack_masks(prog, masks, B, dtype)
    gate = np.zeros((B, 0), np.uint8)
    _check_fits(net, dtype, const, off, tv_arrays)
    out = _alloc_run(net, prog, T, B, _cast(const, dtype), set(tv_arrays),
                     {k: np.asarray(v, dtype) for k, v in tv_arrays.items()}, src, masks_arr, gate,
                     False, record, n_threads, v_init=_v_init(net, v_init, B))
    return PhaseResult(phase="forward", steps=T, batch=B, network=net, program=prog,
                       input_ops=input_ops, masks=masks, **out)


def _check_fits(net, dtype, const, off, tv_arrays):
    """Refuse input currents (summed in float64) beyond the largest value of the network's
    dtype: a float32 network would turn them into inf (all-inf potentials, no error)."""
    big = float(np.finfo(dtype).max)
    parts = [(name, const[:, off[name]:off[name] + p.n]) for name, p in net.populations.items()
             if name in off]
    parts += list(tv_arrays.items())
    for name, a in parts:
        if a.size and (a.max() > big or a.min() < -big):
            peak = float(max(a.max(), -a.min()))
            raise V.NeurosimError(
                f"the input current into population {name!r} reaches {peak:.3g}, beyond the "
                f"largest {np.dtype(dtype).name} ({big:.3g}): the network would compute with "
                "inf; scale the input down, or use a float64 model (dtype = \"float64\")")


def _v_init(net, v_init, B):
    """Checked initial potentials {name: [B, n]} (already known to name CubaLIF populations)."""
    out = {}
    for name, v in v_init.items():
        pop = net.populations[name]
        v = np.asarray(v, np.float64)
        if v.ndim == 1:
            v = np.broadcast_to(v, (B,) + v.shape)
        out[name] = V.check_array(v, f"v_init[{name!r}]", shape=(B, pop.n), dtype=np.float64)
    return out


def run_backward(net, forward, grad, steps, *, gate=None, record=False, n_threads=None):
    """Simulate the backward phase: ternary couples through the transposed projections.

    Parameters
    ----------
    net : Network
    forward : PhaseResult
        The forward phase of the same batch (its masks and spike counts are used).
    grad : dict name -> [B, n]
        Constant current injected every step (SPIDE: g = κ ∂L/∂a into the last layer).
    steps : int
        T_b >= 1.
    gate : dict name -> bool [B, n], optional
        Which neurons may send backward events; default ``forward.mask(name)``
        (0 < forward rate < 1).
    """
    _check_network(net)
    _interrupt.check()
    if not isinstance(forward, PhaseResult) or forward.phase != "forward":
        raise TypeError("run_backward needs the forward PhaseResult of the same batch")
    T = V.check_steps(steps, "steps")
    B = forward.batch
    grad = dict(grad or {})
    prog = compile_program(net, backward=True, masks=forward.masks.keys())
    memory.check_run_memory(
        memory.estimate_run_bytes(net, "backward", B, forward.steps, T, record=record,
                                  masks=forward.masks.keys(), n_threads=n_threads,
                                  programs=(forward.program, prog)),
        f"the backward phase ({B} samples x {T} steps)",
        "run fewer samples at a time, fewer steps, or record fewer populations")
    N = int(prog.arrays.pop_off[-1])
    const = _buffers.take((B, N), np.float64, zero=True)
    for name, g in grad.items():
        if name not in net.populations or not net.populations[name].spiking:
            raise V.NeurosimError(f"grad given for {name!r}, which is not a spiking population; "
                                  f"spiking: {[p.name for p in net.spiking_populations]}")
        i = prog.pop_names.index(name)
        pop = net.populations[name]
        g = _as_flat(np.broadcast_to(np.asarray(g, np.float64), (B, pop.n)) if np.ndim(g) == 1 else g,
                     pop, f"grad[{name!r}]", ("B",))
        if g.shape[0] != B:
            raise V.NeurosimError(f"grad[{name!r}] has batch {g.shape[0]}, the forward run had {B}")
        const[:, prog.arrays.pop_off[i]:prog.arrays.pop_off[i + 1]] = g
    gate_arr = _buffers.take((B, N), np.uint8, zero=True)
    gate = dict(gate or {})
    for i, name in enumerate(prog.pop_names):
        pop = net.populations[name]
        if not pop.spiking:
            continue
        gm = gate.get(name)
        gm = forward.mask(name) if gm is None else V.check_array(gm, f"gate[{name!r}]", shape=(B, pop.n))
        gate_arr[:, prog.arrays.pop_off[i]:prog.arrays.pop_off[i + 1]] = gm
    masks_arr = _pack_masks(prog, forward.masks, B, net.dtype)
    out = _alloc_run(net, prog, T, B, _cast(const, net.dtype), set(), {}, {}, masks_arr, gate_arr,
                     True, record, n_threads)
    return PhaseResult(phase="backward", steps=T, batch=B, network=net, program=prog,
                       input_ops={}, masks=forward.masks, **out)
