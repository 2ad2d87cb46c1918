"""Sparsity sweep: accuracy against operations, and event-driven against dense wall time.

:func:`sweep` (``neurosim bench sparsity``) varies training parameters of a model one
at a time around a baseline (or over their full grid), trains each point briefly with
:func:`neurosim.training.trainer.train`, and records per point

* the test accuracy and the operations per sample of training (last epoch) and of
  inference (test set), with the dense-equivalent MACs of inference;
* the wall time per test sample of the forward phase, event-driven
  (:func:`neurosim.run_forward`) and clock-driven dense (:func:`dense_forward`: numpy /
  BLAS over the whole batch every step, the same network and input), measured on the
  same machine and thread count, the two alternating call by call (a shared machine's
  load then hits both alike).

The dense baseline does what a dense framework does: a matrix product per dense or
sparse projection, im2col + one matrix product per ``conv2d``, one matrix product +
col2im scatter-add per ``conv_transpose2d``, strided window sums per ``avgpool2d`` /
``sumpool2d`` (:func:`dense_operator`), in the network's dtype.  So every model of
analog inputs constant over time and LIF populations without refractoriness has dense
timings: the MLPs (``fsnn_mlp``, ``fsnn_mlp_fmnist``, ...) and the conv models
(``convnetf_mnist``, ``lenet_mnist``, ``alexnetf_cifar10``, ...).  Spike sources,
time-varying input (event frames), CubaLIF and refractory populations get event-driven
timings only (each point's ``note`` says why).

Swept parameters (``SWEEPABLE``): ``T`` and ``T_b`` (forward / backward steps),
``v_th`` (threshold of every spiking population; the subtraction Θ keeps its ratio to
it), ``kappa`` (loss scale κ) and ``dropout`` (the same dropout probability on every
delay-0 projection with weights; 0 = none).

The crossover is where the event-driven forward phase stops being faster than the dense
one: the activity (synaptic events per dense-equivalent MAC) at which the time ratio
event-driven / dense crosses 1, interpolated between neighbouring points.

Results are JSON lines (default ``sparsity.jsonl`` in the current folder) in the record
schema of ``benchmarks/_harness.py`` (``bench, case, impl, threads, batch, metric, unit,
median, min, max, n_runs, version, commit, machine, date, ...``) plus ``params`` (the
swept values) and ``sweep`` (an id shared by the points of one sweep).
"""
import collections
import dataclasses
import datetime
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import _validate as V
from ..connectivity import chw_to_flat
from ..engine import run_forward
from ..io.atomic import atomic_write_text
from ..models import load_model
from ..neurons.lif import LIFState
from ..neurons.lif import step as lif_model_step
from ..ops.energy import estimate
from ..ops.report import _grid
from ..ops.runfile import history_energy_counts
from ..training.checkpoint import load_checkpoint
from ..training.trainer import config_for, load_data, model_input, train
from .dask_sweep import SweepError, map_points
from .provenance import provenance


def lif_dense_step(v, cur, neuron, dtype, ref=None):
    """One clock-driven step of a LIF population, in place on ``v`` [B, n]: the model's
    own dense step (:func:`neurosim.neurons.lif.step`, the engine's arithmetic in
    ``dtype``) over the whole batch at once; returns the spikes (bool [B, n]).  ``v`` and
    ``cur`` must have ``dtype``.  ``ref`` (int32 [B*n]) is the refractory counter, kept by
    the caller across steps (zeros when omitted: the sweep's models have no refractoriness)."""
    dt = np.dtype(dtype).type
    if v.dtype != dt or cur.dtype != dt:
        raise TypeError(f"lif_dense_step needs {np.dtype(dt).name} potentials and currents, "
                        f"got {v.dtype} and {cur.dtype}; convert with .astype")
    flat = v.reshape(-1)                     # a view: v is updated in place
    state = LIFState(flat, np.zeros(flat.shape, np.int32) if ref is None else ref)
    s, _ = lif_model_step(state, np.ascontiguousarray(cur).reshape(-1), neuron)
    return s.reshape(v.shape)


#: parameters the sweep can vary, with their type.
SWEEPABLE = {"T": int, "T_b": int, "v_th": float, "kappa": float, "dropout": float}
#: the default sweep (one parameter at a time around the model's own values).
DEFAULT_PARAMS = {"T": [10, 20, 50], "T_b": [25, 50], "v_th": [0.5, 2.0, 4.0],
                  "kappa": [10.0], "dropout": [0.2]}
#: default output, relative to the current folder.
#: where records go unless the caller names a file: the current folder, never the
#: repository's tracked ``benchmarks/results/`` (decisions 54).
DEFAULT_OUT = Path("sparsity.jsonl")
BENCH = "sparsity"


# ======================================================================================
# the dense, clock-driven reference forward phase (timing baseline)
# ======================================================================================
#: projection kinds :func:`dense_forward` simulates (all of
#: :data:`neurosim.connectivity.PROJECTION_KINDS`); anything else is refused.
DENSE_KINDS = ("dense", "sparse", "conv2d", "conv_transpose2d", "avgpool2d", "sumpool2d")


def _conv2d_op(pr, batch, dtype):
    """``conv2d`` as a dense framework runs it: im2col of the whole zero-padded batch, then
    one matrix product ``[B*Ho*Wo, kh*kw*C_in] @ [kh*kw*C_in, C_out]``.  Channel-last
    neurons make the product's rows ``(b, oy, ox)`` and columns ``co`` exactly the post
    neurons' order ``(oy*Wo + ox)*C_out + co``."""
    Ci, H, W = pr.pre_shape
    Co, Ho, Wo = pr.post_shape
    kh, kw = pr.kernel_shape
    s, p = pr.stride, pr.padding
    # forward kernel layout (kh, kw, C_in, C_out): rows (ky, kx, ci) like the columns below
    wmat = pr.kernel_weights()[0].reshape(kh * kw * Ci, Co).astype(dtype)
    xpad = np.zeros((batch, H + 2 * p, W + 2 * p, Ci), dtype)     # the border stays 0
    cols = np.empty((batch, Ho, Wo, kh, kw, Ci), dtype)
    ys, xs = slice(None, (Ho - 1) * s + 1, s), slice(None, (Wo - 1) * s + 1, s)

    def add(x, out):
        xpad[:, p:p + H, p:p + W, :] = x.reshape(batch, H, W, Ci)
        for ky in range(kh):
            for kx in range(kw):
                cols[:, :, :, ky, kx, :] = xpad[:, ky:, kx:][:, ys, xs]
        out += (cols.reshape(batch * Ho * Wo, kh * kw * Ci) @ wmat).reshape(batch, Ho * Wo * Co)
    return add


def _conv_transpose2d_op(pr, batch, dtype):
    """``conv_transpose2d`` as a dense framework runs it: one matrix product
    ``[B*H*W, C_in] @ [C_in, kh*kw*C_out]``, then col2im: every kernel offset's block is
    added at its strided place in a zeroed output of the uncropped size, which is then
    cropped by ``padding`` (``output_padding`` widens the output at the bottom / right)."""
    Ci, H, W = pr.pre_shape
    Co, Ho, Wo = pr.post_shape
    kh, kw = pr.kernel_shape
    s, p = pr.stride, pr.padding
    wmat = (pr.kernel_weights()[0].transpose(2, 0, 1, 3)        # (C_in, kh, kw, C_out)
            .reshape(Ci, kh * kw * Co).astype(dtype))
    full = np.zeros((batch, max((H - 1) * s + kh, p + Ho), max((W - 1) * s + kw, p + Wo), Co),
                    dtype)
    ys, xs = slice(None, (H - 1) * s + 1, s), slice(None, (W - 1) * s + 1, s)

    def add(x, out):
        cols = (x.reshape(batch * H * W, Ci) @ wmat).reshape(batch, H, W, kh, kw, Co)
        full[...] = 0
        for ky in range(kh):
            for kx in range(kw):
                full[:, ky:, kx:][:, ys, xs] += cols[:, :, :, ky, kx, :]
        o4 = out.view()
        o4.shape = (batch, Ho, Wo, Co)            # a view of out (raises rather than copy)
        o4 += full[:, p:p + Ho, p:p + Wo, :]
    return add


def _pool_op(pr, batch, dtype):
    """``avgpool2d`` / ``sumpool2d``: the window sums over the whole batch (one strided
    slice per window offset), times the shared weight."""
    C, H, W = pr.pre_shape
    _, Ho, Wo = pr.post_shape
    k, s = pr.kernel, pr.stride
    w = np.dtype(dtype).type(pr.weight_value)
    acc = np.empty((batch, Ho, Wo, C), dtype)
    ys, xs = slice(None, (Ho - 1) * s + 1, s), slice(None, (Wo - 1) * s + 1, s)

    def add(x, out):
        x4 = x.reshape(batch, H, W, C)
        acc[...] = 0
        for ky in range(k):
            for kx in range(k):
                np.add(acc, x4[:, ky:, kx:][:, ys, xs], out=acc)
        out += acc.reshape(batch, Ho * Wo * C) * w
    return add


def _matrix_op(pr, batch, dtype):
    """``dense`` / ``sparse``: one matrix product with the dense weight matrix."""
    wmat = pr.to_dense().astype(dtype)

    def add(x, out):
        out += x @ wmat
    return add


_OPS = {"dense": _matrix_op, "sparse": _matrix_op, "conv2d": _conv2d_op,
        "conv_transpose2d": _conv_transpose2d_op, "avgpool2d": _pool_op, "sumpool2d": _pool_op}


def dense_operator(pr, batch, dtype):
    """The clock-driven operator of one projection over a whole batch.

    Parameters
    ----------
    pr : Projection
        A projection of a kind in :data:`DENSE_KINDS`.
    batch : int
        Number of samples ``B`` the operator is built for (its work buffers are reused
        across calls).
    dtype : numpy dtype
        Arithmetic of the operator (the network's dtype; float64 for input maps).

    Returns
    -------
    callable
        ``add(x, out)``: adds the projection's output for the presynaptic values ``x``
        (``[B, n_pre]`` in neurosim's channel-last neuron order, ``dtype``) to ``out``
        (``[B, n_post]``, ``dtype``) in place, without the bias.  Dense and sparse
        projections are one matrix product with :meth:`to_dense`; convolutions are
        im2col + one matrix product, transposed convolutions one matrix product +
        col2im scatter-add, pooling strided window sums -- the spatial kinds as a dense
        framework does them, never through the ``n_pre x n_post`` matrix.

    Raises
    ------
    SweepError
        For a kind not in :data:`DENSE_KINDS`.
    """
    op = _OPS.get(pr.kind)
    if op is None:
        raise SweepError(f"dense_forward supports {', '.join(DENSE_KINDS)} projections; "
                         f"{getattr(pr, 'name', '?')!r} is {pr.kind}")
    return op(pr, V.check_int(batch, "batch", low=1), np.dtype(dtype))


def _flat_input(net, name, x):
    """One entry of ``inputs``: [B, n] or [B, C, H, W] -> float64 [B, n] (neurosim order)."""
    pop = net.populations.get(name)
    if pop is None or pop.kind != "input":
        have = [n for n, p in net.populations.items() if p.kind == "input"]
        raise SweepError(f"inputs names {name!r}, which is not an input population; "
                         f"the network's input populations: {have}")
    x = np.asarray(x, np.float64)
    if x.ndim == 4 and len(pop.shape) == 3:
        if tuple(x.shape[1:]) != tuple(pop.shape):
            raise SweepError(f"inputs[{name!r}] has shape {x.shape}; population {name!r} "
                             f"takes [B, {pop.n}] or [B, {', '.join(map(str, pop.shape))}]")
        x = chw_to_flat(x)
    if x.ndim != 2 or x.shape[1] != pop.n or x.shape[0] < 1:
        shapes = f"[B, {pop.n}]" + (f" or [B, {', '.join(map(str, pop.shape))}]"
                                    if len(pop.shape) == 3 else "")
        raise SweepError(f"inputs[{name!r}] has shape {x.shape}; population {name!r} takes "
                         f"{shapes} (constant over time), B >= 1")
    return x


def dense_forward(net, steps, inputs):
    """Forward phase simulated densely, clock-driven: every projection is applied to the
    whole batch every step, as a dense framework would (:func:`dense_operator`).

    Parameters
    ----------
    net : Network
        ``input`` populations (constant analog input) and LIF populations without
        refractoriness, connected by projections of any kind in :data:`DENSE_KINDS`
        (dense, sparse, conv2d, conv_transpose2d, avgpool2d, sumpool2d) and any delay.
    steps : int
        Number of steps ``T``.
    inputs : dict
        Input population name -> ``[B, n]`` or ``[B, C, H, W]`` values, constant over time.

    Returns
    -------
    dict
        Spike counts ``{population: int32 [B, n]}`` of the spiking populations.

    Same update order and rule as the engine (``docs/engine.md``): the constant drive
    (biases, then the input maps in projection order) is summed in float64 and cast to
    the network's dtype once; every step, in schedule order, each population sums the
    drive and its incoming projections (delay 0: this step's spikes; delay ``d``: those
    of step ``t-d``) in the network's dtype and takes the LIF step.  Float sums may round
    differently from the engine (BLAS order); on weights and inputs whose sums are exact
    the spike counts are identical.
    """
    T = V.check_int(steps, "steps", low=1)
    dt = net.dtype
    for pr in net.projections.values():
        if pr.kind not in _OPS:
            raise SweepError(f"dense_forward supports {', '.join(DENSE_KINDS)} projections; "
                             f"{pr.name!r} is {pr.kind}")
    for p in net.populations.values():
        if p.kind == "source":
            raise SweepError(f"dense_forward supports analog input populations, not the source {p.name!r}")
        if p.spiking and not p.neuron.dense_baseline:
            raise SweepError(f"dense_forward supports LIF populations without refractoriness; "
                             f"{p.name!r} is {p.neuron!r}")
    if not isinstance(inputs, dict) or not inputs:
        raise SweepError(f"dense_forward needs inputs as a non-empty dict population -> [B, n] "
                         f"values, got {type(inputs).__name__}")
    flat = {name: _flat_input(net, name, x) for name, x in inputs.items()}
    sizes = {name: x.shape[0] for name, x in flat.items()}
    if len(set(sizes.values())) != 1:
        raise SweepError(f"inputs of different batch sizes: {sizes}")
    B = next(iter(sizes.values()))
    # the constant drive in float64 -- biases, then the input maps in projection order, as
    # the engine sums its stimulus -- cast to the network's dtype once
    const = {}
    for pr in net.projections.values():
        b = pr.bias_per_neuron()
        if b is not None:
            const[pr.post] = const.get(pr.post, 0) + b[None, :]
    for pr in net.projections.values():
        if pr.pre in flat:
            cur = np.zeros((B, pr.n_post), np.float64)
            dense_operator(pr, B, np.float64)(flat[pr.pre], cur)
            const[pr.post] = const.get(pr.post, 0) + cur
    ops, incoming = {}, {}
    for pr in net.projections.values():
        if net.populations[pr.pre].kind == "input":
            continue
        ops[pr.name] = dense_operator(pr, B, dt)
        incoming.setdefault(pr.post, []).append(pr)
    order = [n for n in net.schedule() if net.populations[n].spiking]
    u = {n: np.zeros((B, net.populations[n].n), dt) for n in order}
    c = {n: np.broadcast_to(np.asarray(const.get(n, 0.0), np.float64),
                            (B, net.populations[n].n)).astype(dt) for n in order}
    counts = {n: np.zeros((B, net.populations[n].n), np.int32) for n in order}
    ref = {n: np.zeros(B * net.populations[n].n, np.int32) for n in order}
    # the spikes of the last d steps of every population sending through a delay-d
    # projection (a ring buffer, as the engine keeps)
    depth = {}
    for prs in incoming.values():
        for pr in prs:
            if pr.delay:
                depth[pr.pre] = max(depth.get(pr.pre, 0), pr.delay)
    hist = {n: collections.deque(maxlen=d) for n, d in depth.items()}
    for _ in range(T):
        now = {}
        for n in order:
            cur = c[n].copy()
            for pr in incoming.get(n, ()):
                if pr.delay == 0:
                    s = now[pr.pre]
                elif len(hist[pr.pre]) >= pr.delay:
                    s = hist[pr.pre][-pr.delay]          # the spikes of step t - delay
                else:
                    continue
                ops[pr.name](s, cur)
            s = lif_dense_step(u[n], cur, net.populations[n].neuron, dt, ref[n])
            now[n] = s.astype(dt)
            counts[n] += s
        for n, h in hist.items():
            h.append(now[n])
    return counts


# ======================================================================================
# provenance and records
# ======================================================================================
def _record(prov, case, impl, metric, unit, values, *, threads, batch, params, sweep, extra):
    vals = [float(v) for v in values]
    rec = dict(bench=BENCH, case=case, impl=impl, threads=int(threads), batch=int(batch),
               metric=metric, unit=unit, median=statistics.median(vals), min=min(vals),
               max=max(vals), n_runs=len(vals))
    rec.update(prov)
    rec["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    rec.update(dtype=None, seed=params.get("seed"), goal=None, params=params, sweep=sweep,
               extra=extra)
    return rec


def append_records(path, records):
    """Append JSON lines to ``path`` atomically (the file is rewritten through
    :func:`neurosim.io.atomic.atomic_write_text`; an interrupted write leaves the old
    file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    text = old + "".join(json.dumps(r, default=_jsonable) + "\n" for r in records)
    return atomic_write_text(path, text, force=True)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_records(path):
    """The sweep records of a JSON-lines file (other benches are skipped)."""
    out = []
    with open(path) as f:
        for i, line in enumerate(f):
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise SweepError(f"{path}:{i + 1}: not a JSON object ({e})") from None
            if r.get("bench") == BENCH:
                out.append(r)
    return out


# ======================================================================================
# the sweep
# ======================================================================================
def _check_params(params):
    out = {}
    for k, vals in dict(params).items():
        if k not in SWEEPABLE:
            raise SweepError(f"cannot sweep {k!r}; sweepable: {', '.join(SWEEPABLE)}")
        if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
            vals = [vals]
        typ = SWEEPABLE[k]
        clean = []
        for v in vals:
            if typ is int:
                clean.append(V.check_int(v, k, low=1))
            elif k == "dropout":
                clean.append(V.check_real(v, k, low=0.0, high=0.99))
            else:
                clean.append(V.check_real(v, k, positive=True))
        if not clean:
            raise SweepError(f"no values given for {k!r}")
        out[k] = clean
    return out


def _baseline(net, base):
    cfg, _ = config_for(net, {})
    th = sorted({float(p.neuron.v_th) for p in net.spiking_populations})
    b = dict(T=cfg.T, T_b=cfg.T_b, v_th=th[0] if len(th) == 1 else None, kappa=cfg.kappa,
             dropout=None)
    for k, v in _check_params({k: [v] for k, v in dict(base or {}).items()}).items():
        b[k] = v[0]
    return b


def sweep_points(baseline, params, grid=False):
    """The parameter dicts of a sweep: the baseline, then each value of each parameter
    with the others at the baseline (``grid``: every combination)."""
    if grid:
        keys = list(params)
        pts = [dict(baseline, **dict(zip(keys, combo)))
               for combo in itertools.product(*(params[k] for k in keys))]
    else:
        pts = [dict(baseline)]
        for k, vals in params.items():
            for v in vals:
                p = dict(baseline, **{k: v})
                if p not in pts:
                    pts.append(p)
    return pts


def _network(model, seed, v_th):
    net = load_model(model, seed=seed)
    if v_th is not None:
        for p in net.spiking_populations:
            ratio = v_th / p.neuron.v_th
            p.neuron = dataclasses.replace(p.neuron, v_th=v_th, subtract=p.neuron.subtract * ratio)
    return net


def _overrides(net, point, epochs):
    ov = dict(T=point["T"], T_b=point["T_b"], kappa=point["kappa"], epochs=epochs)
    if point["dropout"] is not None:
        p = point["dropout"]
        ov["dropout"] = {} if p == 0 else {
            n: p for n, pr in net.projections.items()
            if pr.delay == 0 and pr.has_weights and net.populations[pr.post].spiking}
    return ov


def _case(model, ds, point):
    vals = " ".join(f"{k}={point[k]:g}" if point[k] is not None else f"{k}=model"
                    for k in ("T", "T_b", "v_th", "kappa", "dropout"))
    return f"{model}/{ds} {vals}"


def _time(fns, reps, warm_up=True):
    """Wall times of every function in ``fns``, ``reps`` rounds after one warm-up round
    (``warm_up=False``: the caller has just run each of them once); the functions
    alternate within each round, so that both sides of a comparison see the same load on
    a shared machine."""
    if warm_up:
        for fn in fns:
            fn()                               # warm-up (compilation, caches)
    out = [[] for _ in fns]
    for _ in range(reps):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def _blas_limit(threads):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=int(threads))


def crossover(points):
    """Where the event-driven / dense time ratio crosses 1, against the activity
    (forward synaptic events per dense-equivalent MAC), interpolated in log-log between
    neighbouring points sorted by activity.  Returns a dict (``found`` False when every
    point is on the same side)."""
    pts = sorted((p for p in points if p.get("time_ratio") and p.get("activity")),
                 key=lambda p: p["activity"])
    if not pts:
        return dict(found=False, note="no timed points")
    ratios = [p["time_ratio"] for p in pts]
    for a, b in zip(pts, pts[1:]):
        ra, rb = a["time_ratio"], b["time_ratio"]
        if (ra - 1) * (rb - 1) <= 0 and ra != rb:
            la, lb = np.log(a["activity"]), np.log(b["activity"])
            w = (0 - np.log(ra)) / (np.log(rb) - np.log(ra))
            act = float(np.exp(la + w * (lb - la)))
            return dict(found=True, activity=act,
                        note=f"event-driven stops paying off at about {act:.3g} synaptic "
                             f"events per dense-equivalent MAC")
    side = "faster" if max(ratios) < 1 else "slower"
    return dict(found=False, note=f"no crossover in the sweep: event-driven is {side} than dense "
                                  f"at every point (time ratio {min(ratios):.3g} to {max(ratios):.3g}, "
                                  f"activity {pts[0]['activity']:.3g} to {pts[-1]['activity']:.3g})")


def run_point(spec):
    """Train and time one sweep point; returns ``(index, point dict, records)``.

    ``spec`` is a dict (picklable: what a Dask worker receives, :func:`point_specs`):
    ``index``, ``point`` (the swept values), ``model``, ``model_name``, ``dataset``,
    ``data_dir``, ``epochs``, ``max_train``, ``max_test``, ``seed``, ``reps``, ``threads``,
    ``command``, ``sweep`` (the sweep id) and ``prov`` (:func:`provenance`).  Each point
    trains in its own temporary folder, so points are independent and can run anywhere."""
    i, point = spec["index"], spec["point"]
    model, seed, threads, reps = spec["model"], spec["seed"], spec["threads"], spec["reps"]
    max_train, max_test, epochs = spec["max_train"], spec["max_test"], spec["epochs"]
    with tempfile.TemporaryDirectory(prefix="neurosim-sweep-") as tmp:
        net = _network(model, seed, point["v_th"])
        ov = _overrides(net, point, epochs)
        run_file = Path(tmp) / f"point{i}.h5"
        t0 = time.perf_counter()
        s = train(net, spec["dataset"], data_dir=spec["data_dir"], out=run_file, overrides=ov,
                  seed=seed, max_train=max_train, max_test=max_test, n_threads=threads,
                  handle_signals=False)
        train_s = time.perf_counter() - t0
        tnet, st = load_checkpoint(run_file)
    h = {k: v[-1] for k, v in st["history"].items()}
    ds_name = st["dataset"]
    _, _, _, x_test, _ = load_data(ds_name, spec["data_dir"])
    if max_test:
        x_test = x_test[:max_test]
    inp = next(p for p in tnet.populations.values() if p.kind == "input")
    x = model_input(tnet, inp.name, x_test)
    T = int(st["config"]["T"])
    # the first call of each side (compilation, caches) gives the spike counts compared
    # and is the warm-up of the timing; the dense side runs under the BLAS thread limit
    fwd = run_forward(tnet, T, inputs={inp.name: x}, n_threads=threads)
    event = lambda: run_forward(tnet, T, inputs={inp.name: x}, n_threads=threads)
    t_dense, same, note = None, None, None
    with _blas_limit(threads):
        try:
            dense_counts = dense_forward(tnet, T, {inp.name: x})
        except SweepError as e:
            note = f"no dense timing: {e}"
            (t_event,) = _time([event], reps, warm_up=False)
        else:
            same = float(np.mean([np.mean(dense_counts[n] == fwd.counts[n])
                                  for n in dense_counts]))
            t_event, t_dense = _time([event, lambda: dense_forward(tnet, T, {inp.name: x})],
                                     reps, warm_up=False)
    B = len(x)
    d_map = sum(int(pr.dense_macs) for pr in tnet.projections.values()
                if tnet.populations[pr.pre].kind == "input")
    d_syn = sum(int(pr.dense_macs) for pr in tnet.projections.values()
                if tnet.populations[pr.pre].kind != "input")
    inf_ops = h["test_fwd_synops"] + h["test_encoding_macs"]
    inf_dense = d_map + T * d_syn
    train_ops = (h["fwd_synops"] + h["bwd_synops_pos"] + h["bwd_synops_neg"]
                 + h["encoding_macs"] + h["update_macs"])
    activity = h["test_fwd_synops"] / (T * d_syn) if d_syn else None
    counts_tr = history_energy_counts(h, tnet, T, int(st["config"]["T_b"]))
    en = estimate(counts_tr, tnet, T)
    pt = dict(params=dict(point), accuracy=float(h["test_accuracy"]),
              train_ops=float(train_ops), inference_ops=float(inf_ops),
              inference_dense_macs=float(inf_dense), activity=activity,
              event_s=statistics.median(t_event) / B,
              dense_s=None if t_dense is None else statistics.median(t_dense) / B,
              identical_spike_counts=same, train_wall_s=train_s,
              energy_training_pj=en["snn"]["training_pj"],
              energy_inference_pj=en["snn"]["inference_pj"], note=note)
    pt["time_ratio"] = None if pt["dense_s"] is None else pt["event_s"] / pt["dense_s"]
    case = _case(spec["model_name"], ds_name, point)
    rp = dict(point, seed=seed, epochs=epochs, max_train=max_train, max_test=max_test)
    extra = dict(command=spec["command"], n_train=s["n_train"], n_test=s["n_test"],
                 train_wall_s=train_s,
                 activity=activity, identical_spike_counts=same,
                 history_last_epoch={k: float(v) for k, v in h.items()},
                 energy_profile="cmos45-fp32",
                 energy_training_pj=pt["energy_training_pj"],
                 energy_inference_pj=pt["energy_inference_pj"])
    bs = int(st["config"]["batch_size"])
    prov = spec["prov"]
    kw = dict(threads=threads, params=rp, sweep=spec["sweep"], extra=extra)
    recs = [
        _record(prov, case, "neurosim", "test_accuracy", "fraction", [pt["accuracy"]], batch=bs, **kw),
        _record(prov, case, "neurosim", "train_ops_per_sample", "ops", [train_ops], batch=bs, **kw),
        _record(prov, case, "neurosim", "inference_ops_per_sample", "ops", [inf_ops], batch=B, **kw),
        _record(prov, case, "numpy-dense", "inference_dense_macs_per_sample", "MACs", [inf_dense],
                batch=B, **kw),
        _record(prov, case, "neurosim", "s_per_sample", "s", [t / B for t in t_event], batch=B, **kw),
    ]
    if t_dense is not None:
        recs.append(_record(prov, case, "numpy-dense", "s_per_sample", "s",
                            [t / B for t in t_dense], batch=B, **kw))
    return i, pt, recs


#: record fields that depend on the wall clock (or the machine's load), not on the
#: computation: two runs of the same sweep agree on every other field.
TIMING_FIELDS = ("date", "sweep", "median", "min", "max")
#: keys of a record's ``extra`` that are wall times (and ``history_last_epoch.wall_s``).
TIMING_EXTRA = ("train_wall_s",)


def comparable(record):
    """``record`` without its timing fields (:data:`TIMING_FIELDS`; the medians of the
    ``s_per_sample`` records only: other metrics are exact), for comparing two sweeps."""
    r = dict(record)
    r.pop("date", None)
    r.pop("sweep", None)
    if r.get("metric") == "s_per_sample":
        for k in ("median", "min", "max"):
            r.pop(k, None)
    r["extra"] = {k: v for k, v in (r.get("extra") or {}).items() if k not in TIMING_EXTRA}
    if isinstance(r["extra"].get("history_last_epoch"), dict):
        r["extra"]["history_last_epoch"] = {k: v for k, v in r["extra"]["history_last_epoch"].items()
                                            if k != "wall_s"}
    return r


def sweep(model="fsnn_mlp", dataset=None, *, params=None, base=None, grid=False, epochs=2,
          max_train=None, max_test=None, seed=0, reps=5, threads=1, out=DEFAULT_OUT,
          data_dir=None, report=None, command=None, scheduler=None, workers=None):
    """Run a sparsity sweep (see the module docstring); returns a dict with ``points``
    (one dict per point: params, accuracy, ops, times), ``crossover``, ``records`` (the
    JSON-lines records) and ``out`` (the file appended to, or None with ``out=None``).

    Parameters
    ----------
    model, dataset : str
        Model name or file (default ``fsnn_mlp``), data set (default: the model's).
    params : dict name -> list, optional
        Values to sweep (default :data:`DEFAULT_PARAMS`); names in :data:`SWEEPABLE`.
    base : dict, optional
        Baseline values (default: the model's ``[training]`` table, its threshold, no
        extra dropout).
    grid : bool
        Every combination instead of one parameter at a time.
    epochs, max_train, max_test, seed :
        Each point's training run (:func:`neurosim.training.trainer.train`).
    reps : int
        Timed repetitions of each forward phase (after one warm-up call).
    threads : int
        Numba threads of the engine and BLAS threads of the dense baseline.
    command : str, optional
        The command line that started the sweep (stored in every record's ``extra``).
    scheduler : str, optional
        Address of a running Dask scheduler: one task per point on its workers
        (:mod:`neurosim.experiments.dask_sweep`; needs the ``dask`` extra).
    workers : int, optional
        Start a local Dask cluster of this many single-threaded workers instead.

    With ``scheduler`` or ``workers`` the records are appended as the points finish (in
    that order; ``points`` stays in sweep order), a point whose worker dies is re-run
    elsewhere, and the records equal a serial run's except :data:`TIMING_FIELDS`
    (:func:`comparable`).
    """
    say = report or (lambda msg: None)
    params = _check_params(DEFAULT_PARAMS if params is None else params)
    epochs = V.check_int(epochs, "epochs", low=1)
    reps = V.check_int(reps, "reps", low=1)
    threads = V.check_int(threads, "threads", low=1)
    if scheduler is not None and workers is not None:
        raise SweepError("give either a Dask scheduler address or a number of local workers, "
                         "not both")
    if workers is not None:
        workers = V.check_int(workers, "workers", low=1)
    net0 = _network(model, seed, None)
    baseline = _baseline(net0, base)
    if "v_th" in params and baseline["v_th"] is None:
        raise SweepError(f"model {model!r} has different thresholds per population; "
                         "give --base v_th=... to sweep v_th")
    points = sweep_points(baseline, params, grid)
    model_name = net0.metadata.get("model") or str(model)
    prov = provenance()
    sweep_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    specs = [dict(index=i, point=p, model=model, model_name=model_name, dataset=dataset,
                  data_dir=data_dir, epochs=epochs, max_train=max_train, max_test=max_test,
                  seed=seed, reps=reps, threads=threads, command=command, sweep=sweep_id,
                  prov=prov) for i, p in enumerate(points)]
    if scheduler is None and workers is None:
        def serial():
            for sp in specs:
                say(f"point {sp['index'] + 1}/{len(specs)}: "
                    f"{_case(model_name, '-', sp['point']).split(' ', 1)[1]}")
                yield run_point(sp)
        done_points = serial()
    else:
        done_points = map_points(specs, run_point, scheduler=scheduler, workers=workers, threads=threads,
                                 report=say)
    results, records = [None] * len(specs), []
    for i, pt, recs in done_points:
        results[i] = pt
        records.extend(recs)
        if out is not None:
            append_records(out, recs)
        if pt.get("note"):
            say(f"  {pt['note']}")
        say(f"  accuracy {pt['accuracy']:.4f}, inference {pt['inference_ops']:.3g} ops/sample "
            f"(dense {pt['inference_dense_macs']:.3g} MACs), event-driven "
            f"{pt['event_s'] * 1e6:.1f} us/sample"
            + ("" if pt["dense_s"] is None else f", dense {pt['dense_s'] * 1e6:.1f} us/sample"))
    return dict(points=results, crossover=crossover(results), records=records,
                out=None if out is None else Path(out), sweep=sweep_id, model=model_name,
                baseline=baseline)


# ======================================================================================
# rendering
# ======================================================================================
def _g(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


def format_sweep(result):
    """Text table of a sweep's points and its crossover."""
    rows = []
    for p in result["points"]:
        q = p["params"]
        rows.append([str(q["T"]), str(q["T_b"]), "model" if q["v_th"] is None else _g(q["v_th"], "g"),
                     _g(q["kappa"], "g"), "model" if q["dropout"] is None else _g(q["dropout"], "g"),
                     f"{p['accuracy']:.4f}", _g(p["train_ops"]),
                     _g(p["inference_ops"]), _g(p["inference_dense_macs"]), _g(p["activity"]),
                     _g(p["event_s"] * 1e6), _g(None if p["dense_s"] is None else p["dense_s"] * 1e6),
                     _g(p["time_ratio"])])
    head = ["T", "T_b", "v_th", "kappa", "dropout", "test acc", "train ops/sample",
            "infer ops/sample", "dense MACs", "activity", "event us/sample", "dense us/sample",
            "event/dense"]
    return (_grid(head, rows, right=range(5, 13)) + "\n"
            + "activity = forward synaptic events per dense-equivalent MAC (test set); times: "
              "forward phase on the test set per sample\n" + result["crossover"]["note"])


def plot_sweep(result, out_dir):
    """``sparsity.png``: accuracy vs operations per sample (training, inference) and the
    wall time of both implementations against activity, with the crossover."""
    from ..ops.plots import _figure, _save
    pts = result["points"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = _figure(figsize=(15, 4.6), layout="constrained")
    labels = [" ".join(f"{k}={v:g}" for k, v in p["params"].items()
                       if v is not None and v != result["baseline"].get(k)) or "baseline"
              for p in pts]
    for k, (key, what) in enumerate((("inference_ops", "inference ops per sample (events + input MACs)"),
                                     ("train_ops", "training ops per sample (all phases)"))):
        ax = fig.add_subplot(1, 3, k + 1)
        xs = [p[key] for p in pts]
        ys = [p["accuracy"] for p in pts]
        ax.scatter(xs, ys, color="#1f77b4")
        for x_, y_, lab in zip(xs, ys, labels):
            ax.annotate(lab, (x_, y_), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"{what}, log scale")
        ax.set_ylabel("test accuracy (fraction)")
        ax.set_title(f"{'Inference' if k == 0 else 'Training'} cost vs accuracy", fontsize=10)
    ax = fig.add_subplot(1, 3, 3)
    timed = [(p, lab) for p, lab in zip(pts, labels) if p["activity"] and p["time_ratio"]]
    if timed:
        xs = [p["activity"] for p, _ in timed]
        ys = [p["time_ratio"] for p, _ in timed]
        ax.scatter(xs, ys, color="#1f77b4", label="event-driven / dense wall time")
        for x_, y_, (_, lab) in zip(xs, ys, timed):
            ax.annotate(lab, (x_, y_), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(1.0, color="black", linewidth=0.8, label="equal time (below: event-driven faster)")
    cx = result["crossover"]
    if cx.get("found"):
        ax.axvline(cx["activity"], color="black", linestyle="--",
                   label=f"crossover ~{cx['activity']:.3g} events/MAC")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("activity (forward synaptic events per dense MAC, log scale)")
    ax.set_ylabel("forward time ratio, event-driven / dense (log scale)")
    ax.set_title("Event-driven vs dense forward phase (same threads)", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"Sparsity sweep: {result['model']} ({len(pts)} points, sweep {result['sweep']})",
                 fontsize=10)
    return _save(fig, out_dir / "sparsity.png")
