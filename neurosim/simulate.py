"""Simulate a model on given input and write a run file: the library behind ``neurosim simulate``.

:func:`simulate` loads the model (a :class:`~neurosim.Network`, a model file or name, or
a run file), resolves the stimulus, runs the forward phase and optionally the backward
phase, writes the run file atomically and returns a :class:`Simulation`.
:func:`format_summary` renders the short report the CLI prints.

Stimulus (``inputs``):

``"digits"``
    the first ``n_samples`` samples of the digits *test* split
    (:func:`neurosim.datasets.digits.load_digits`), 64 values in [0, 1], for the model's single
    ``input`` population (which must have 64 neurons);
a ``.npy`` file
    one array for the model's single ``input`` or ``source`` population;
a ``.npz`` file
    one array per ``input``/``source`` population, keyed by population name;
a dict
    population name -> array.

Arrays for an ``input`` population are ``[N, n]`` (or ``[N, C, H, W]``), constant over
the run, or ``[N, T, n]`` (``[N, T, C, H, W]``) per step; for a ``source`` population
``[N, T, n]`` (``[N, T, C, H, W]``) of 0/1.  ``n_samples`` keeps the first N samples.

Backward gradient (``grad``): ``"random"`` injects
``numpy.random.default_rng(seed).normal(0.0, 0.5, size=(N, n))`` into the last spiking
population of the forward schedule; a ``.npy`` file gives that population's ``[N, n]``
array, a ``.npz`` file (or a dict) one array per spiking population.
"""
import os
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import _interrupt
from . import _validate as V
from . import counting, memory
from .datasets.digits import load_digits
from .engine import run_backward, run_forward
from .io.atomic import check_destination, owns_output
from .io.nir import DEFAULT_DT, write_nir
from .io.runfile import load_network, write_run
from .io.sources import open_network
from .kernels.threads import max_threads
from .network import Network


class InputError(V.NeurosimError):
    """A stimulus, gradient or output argument of :func:`simulate` is invalid."""


class Simulation(NamedTuple):
    """What :func:`simulate` produced."""
    network: Network
    forward: object          # PhaseResult
    backward: object         # PhaseResult or None
    inputs: dict             # analog inputs per "input" population
    spikes: dict             # spike trains per "source" population
    grad: dict               # backward currents per spiking population
    labels: object           # int64 [N] for digits, else None
    path: object             # Path of the run file, or None
    seed: int


def _quiet(msg):
    pass


def _load_array(path, what):
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file {str(p)!r} does not exist")
    if p.suffix not in (".npy", ".npz"):
        raise InputError(f"{what} file {str(p)!r} must be a .npy (one array) or .npz (arrays "
                         "keyed by population name) file")
    try:
        obj = np.load(p, allow_pickle=False)
        if p.suffix == ".npz":
            with obj:
                return {k: obj[k] for k in obj.files}
        return obj
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"cannot read {what} file {str(p)!r}: {e}") from e


def _check_stimulus(name, a, pop, origin, steps):
    """Shape, dtype and finiteness of one stimulus array; returns it unchanged."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise InputError(f"{origin}: array for population {name!r} must be numeric, got dtype {a.dtype}")
    shp = list(pop.shape)
    feat = [(pop.n,)] + ([tuple(shp)] if len(shp) == 3 else [])
    const = [(None,) + f for f in feat]
    per_step = [(None, steps) + f for f in feat]
    show = lambda forms: " or ".join("(" + ", ".join("N" if x is None else str(x) for x in f) + ")"
                                      for f in forms)
    if pop.kind == "input":
        ok = const + per_step
        desc = f"{show(const)} constant, or {show(per_step)} per step"
    else:
        ok = per_step
        desc = f"{show(per_step)} of 0/1"
    if not any(a.ndim == len(o) and all(x is None or x == y for x, y in zip(o, a.shape)) for o in ok):
        raise InputError(f"{origin}: array for {pop.kind} population {name!r} of shape {shp} has "
                         f"shape {a.shape}; allowed: {desc} (N samples, {steps} steps)")
    if a.shape[0] < 1:
        raise InputError(f"{origin}: array for population {name!r} has no samples (shape {a.shape})")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
        raise InputError(f"{origin}: array for population {name!r} contains NaN or inf (first at "
                         f"index {bad}: {a[bad]}); all values must be finite")
    if pop.kind == "source" and not np.all((a == 0) | (a == 1)):
        raise InputError(f"{origin}: spike trains for source population {name!r} must contain "
                         "only 0/1 (analog input needs an 'input' population: for a .nir "
                         "model, --input-kind analog)")
    return a


def resolve_inputs(net, inputs, steps, n_samples=None):
    """({input pop: array}, {source pop: array}, labels or None) from the ``inputs`` argument."""
    stim = [p for p in net.populations.values() if p.kind in ("input", "source")]
    names = [p.name for p in stim]
    labels = None
    if isinstance(inputs, str) and inputs == "digits":
        ins = [p for p in stim if p.kind == "input"]
        if len(stim) != 1 or len(ins) != 1:
            raise InputError(f"--input digits needs a model with exactly one input population; "
                             f"this model has input/source populations {names}")
        if ins[0].n != 64:
            raise InputError(f"--input digits gives 64 values per sample, but input population "
                             f"{ins[0].name!r} has shape {list(ins[0].shape)} ({ins[0].n} neurons)")
        x, labels = load_digits("test", n=n_samples if n_samples is not None else 10)
        return {ins[0].name: x}, {}, labels
    if isinstance(inputs, (str, os.PathLike)):
        origin = f"input file {os.fspath(inputs)!r}"
        arrays = _load_array(inputs, "input")
        if isinstance(arrays, np.ndarray):
            if len(stim) != 1:
                raise InputError(f"{origin} holds one array, but the model has {len(stim)} input/"
                                 f"source populations {names}; give a .npz keyed by population name")
            arrays = {stim[0].name: arrays}
    elif isinstance(inputs, dict):
        origin, arrays = "inputs", dict(inputs)
    else:
        raise InputError(f"inputs must be 'digits', a .npy/.npz path or a dict, got {type(inputs).__name__}")
    if not stim:
        raise InputError(f"the model has no input or source population to receive {origin}")
    for k in arrays:
        if k not in names:
            raise InputError(f"{origin}: key {k!r} is not an input/source population of the model; "
                             f"allowed keys: {names}")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"{origin} lacks arrays for population(s) {missing}; needed: {names}")
    arrays = {k: _check_stimulus(k, a, net.populations[k], origin, steps) for k, a in arrays.items()}
    sizes = {k: a.shape[0] for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"{origin}: arrays have different numbers of samples {sizes}")
    avail = next(iter(sizes.values()))
    if n_samples is not None:
        if n_samples > avail:
            raise InputError(f"--n-samples {n_samples} but {origin} has only {avail} samples")
        arrays = {k: a[:n_samples] for k, a in arrays.items()}
    ins = {k: a for k, a in arrays.items() if net.populations[k].kind == "input"}
    src = {k: a for k, a in arrays.items() if net.populations[k].kind == "source"}
    return ins, src, labels


def last_spiking(net):
    """The last spiking population of the forward schedule (where ``grad="random"`` goes)."""
    return [n for n in net.schedule() if net.populations[n].spiking][-1]


def resolve_grad(net, grad, batch, seed):
    """{spiking population: [batch, n]} from ``"random"``, a .npy/.npz path or a dict."""
    spiking = [p.name for p in net.spiking_populations]
    if isinstance(grad, str) and grad == "random":
        name = last_spiking(net)
        g = np.random.default_rng(seed).normal(0.0, 0.5, size=(batch, net.populations[name].n))
        return {name: g}
    if isinstance(grad, (str, os.PathLike)):
        origin = f"grad file {os.fspath(grad)!r}"
        arrays = _load_array(grad, "grad")
        if isinstance(arrays, np.ndarray):
            arrays = {last_spiking(net): arrays}
    elif isinstance(grad, dict):
        origin, arrays = "grad", dict(grad)
    else:
        raise InputError(f"grad must be 'random', a .npy/.npz path or a dict, got {type(grad).__name__}")
    out = {}
    for k, a in arrays.items():
        if k not in spiking:
            raise InputError(f"{origin}: key {k!r} is not a spiking population; allowed keys: {spiking}")
        a = np.asarray(a)
        n = net.populations[k].n
        if a.dtype.kind not in "biuf":
            raise InputError(f"{origin}: array for {k!r} must be numeric, got dtype {a.dtype}")
        if a.ndim == 1 and a.shape[0] == n:
            a = np.broadcast_to(a, (batch, n))
        if a.shape != (batch, n):
            raise InputError(f"{origin}: array for population {k!r} has shape {a.shape}; allowed: "
                             f"({batch}, {n}) (samples x neurons) or ({n},) for every sample")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise InputError(f"{origin}: array for population {k!r} contains NaN or inf")
        out[k] = np.array(a, np.float64)
    return out


def _report_profile(report, res):
    """The profiled build (``NEUROSIM_PROFILE=1``): the phase's time per schedule step."""
    if res.profile is not None:
        report(f"{res.phase} profile (thread time per named step):\n{res.profile_table()}")


@owns_output
def simulate(model, inputs, steps, *, n_samples=None, backward_steps=None, grad=None,
             record=False, seed=0, n_threads=None, out=None, force=False, command=None,
             report=None, dt=None, nir_options=None):
    """Run a model's forward (and optionally backward) phase and write a run file.

    Parameters
    ----------
    model : Network, str or Path
        A network, a model file / model name, a run file (``.h5``) whose network is reused,
        or a NIR file (:func:`neurosim.io.sources.open_network`).
    inputs : "digits", str, Path or dict
        The stimulus; see the module docstring.
    steps : int
        Forward steps T >= 1.
    n_samples : int, optional
        Keep the first N samples (digits: default 10).
    backward_steps : int, optional
        Run the backward phase for T_b steps.
    grad : "random", str, Path or dict, optional
        Backward current; required with ``backward_steps``.
    record : bool
        Keep (and store) spike trains.
    seed : int
        Seed of the weight initialisation and of ``grad="random"``.
    n_threads : int, optional
        Numba threads.
    out : str or Path, optional
        Run file to write (atomically); nothing is written when None.
    force : bool
        Overwrite ``out``.
    command : str, optional
        Stored as the run file's ``command`` attribute.
    report : callable, optional
        ``report(message)`` receives progress lines (phase started / finished, elapsed;
        in the profiled build, ``NEUROSIM_PROFILE=1``, each phase's time per schedule step).
    dt : float, optional
        Time step of a ``.nir`` model, in the file's time unit (seconds); default: see
        :func:`neurosim.io.sources.open_nir`.
    nir_options : dict, optional
        Import options of a ``.nir`` model (:data:`neurosim.io.sources.NIR_OPTIONS`).

    Returns
    -------
    Simulation
    """
    report = report or _quiet
    t_start = time.perf_counter()
    seed = V.check_int(seed, "seed", low=0, high=V.SEED_MAX)
    steps = V.check_steps(steps, "steps")
    if n_samples is not None:
        n_samples = V.check_int(n_samples, "n_samples", low=1)
    if backward_steps is not None:
        backward_steps = V.check_steps(backward_steps, "backward_steps")
        if grad is None:
            raise InputError("backward_steps needs a gradient: grad='random' (--grad random) or a "
                             ".npy/.npz file")
    elif grad is not None:
        raise InputError("grad is given but no backward phase; add backward_steps (--backward-steps)")
    if n_threads is not None:
        n_threads = V.check_int(n_threads, "threads", low=1)
        if n_threads > max_threads():
            raise InputError(f"threads: {n_threads} asked for, at most {max_threads()} are "
                             "available (NUMBA_NUM_THREADS)")
    if out is not None:
        out = check_destination(out, force)
    net = open_network(model, seed=seed, dt=dt, nir_options=nir_options)
    for line in ((net.metadata or {}).get("nir") or {}).get("notes", ()):
        report(f"NIR: {line}")
    if backward_steps is not None:
        fwd_only = [p for p in net.spiking_populations if p.neuron.forward_only]
        if fwd_only:
            raise InputError("the backward phase needs LIF populations; "
                             f"{[p.name for p in fwd_only]} are {'/'.join(sorted({p.kind for p in fwd_only}))} "
                             "(drop --backward-steps)")
    ins, src, labels = resolve_inputs(net, inputs, steps, n_samples)
    arrays = list(ins.values()) + list(src.values())
    batch = arrays[0].shape[0] if arrays else (n_samples or 1)
    g = resolve_grad(net, grad, batch, seed) if backward_steps is not None else {}
    per_step = any(np.ndim(a) in (3, 5) for a in ins.values())
    what = f"simulating {batch} samples x {steps} steps"
    hint = "lower --n-samples or --steps, or drop --record"
    memory.check_run_memory(memory.estimate_run_bytes(
        net, "simulate", batch, steps, backward_steps, record=record, per_step=per_step,
        write=out is not None, n_threads=n_threads), what, hint)
    elapsed = lambda: f"{time.perf_counter() - t_start:.2f} s"
    report(f"forward: {batch} samples x {steps} steps on {net.name!r} ...")
    fwd = run_forward(net, steps, inputs=ins or None, spikes=src or None, batch=batch,
                      record=record, n_threads=n_threads)
    report(f"forward: done in {fwd.wall_s:.3f} s (elapsed {elapsed()})")
    _report_profile(report, fwd)
    bwd = None
    if backward_steps is not None:
        report(f"backward: {batch} samples x {backward_steps} steps, grad into {sorted(g)} ...")
        bwd = run_backward(net, fwd, g, backward_steps, record=record, n_threads=n_threads)
        report(f"backward: done in {bwd.wall_s:.3f} s (elapsed {elapsed()})")
        _report_profile(report, bwd)
    if out is not None:
        _interrupt.check()        # a stop asked for after the last phase: write nothing
        if record:        # the run file's spike lists, now that their length is known
            spikes = sum(int(np.count_nonzero(s)) for r in (fwd, bwd) if r is not None
                         for s in (r.spikes or {}).values())
            memory.check_run_memory(memory.estimate_run_bytes(
                net, "simulate", batch, steps, backward_steps, record=record,
                per_step=per_step, write=True, n_threads=n_threads, spikes=spikes,
                programs=(fwd.program, bwd.program if bwd else None)),
                f"writing {out} ({spikes} recorded spikes)", hint)
        report(f"writing {out} ...")
        write_run(out, net, fwd, bwd, inputs=ins, spikes=src, grad=g or None, seed=seed,
                  command=command, force=force)
        report(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, elapsed {elapsed()})")
    return Simulation(network=net, forward=fwd, backward=bwd, inputs=ins, spikes=src, grad=g,
                      labels=labels, path=out, seed=seed)


def rerun(run, record=None, n_threads=None):
    """Re-simulate a stored run (a :class:`neurosim.io.Run` from
    :func:`neurosim.io.read_run`) from the file's contents alone.

    Returns (forward, backward-or-None) PhaseResults.  ``record`` defaults to whether the
    file holds spike trains."""
    fwd_rec = run.forward.spikes is not None if record is None else record
    fwd = run_forward(run.network, run.forward.steps, inputs=run.inputs or None,
                      spikes=run.source_spikes or None, currents=run.currents or None,
                      masks=run.masks or None, batch=run.forward.batch, record=fwd_rec,
                      n_threads=n_threads)
    bwd = None
    if run.backward is not None:
        bwd_rec = run.backward.spikes is not None if record is None else record
        bwd = run_backward(run.network, fwd, run.grad, run.backward.steps,
                           gate=run.gate or None, record=bwd_rec, n_threads=n_threads)
    return fwd, bwd


@owns_output
def export_nir(model=None, run=None, out=None, *, dt=DEFAULT_DT, seed=0, force=False):
    """Library behind ``neurosim export-nir``: a model file / name or a run file (its
    network, trained weights included) written as a NIR file (:func:`neurosim.io.nir.write_nir`)."""
    if (model is None) == (run is None):
        raise V.NeurosimError("give exactly one of --model (model file or name) and --run "
                              "(run file .h5)")
    if out is None:
        raise V.NeurosimError("--out is required")
    check_destination(out, force)
    net = load_network(run) if run is not None else open_network(model, seed=seed)
    return write_nir(out, net, dt=dt, force=force)


def summarize(res):
    """Per-phase totals of one PhaseResult as plain Python numbers (summed over the batch)."""
    tot = counting.totals(res)
    net = res.network
    pops = {}
    for name, d in tot["populations"].items():
        p = net.populations[name]
        e = dict(kind=p.kind, neurons=p.n, spikes=int(d["spikes"].sum()),
                 rate=float(d["spikes"].sum()) / (p.n * res.steps * res.batch))
        if res.phase == "backward":
            e["spikes_pos"] = int(res.counts[name].sum())
            e["spikes_neg"] = int(res.counts_neg[name].sum())
        pops[name] = e
    projs = {}
    for name, ops in (res.input_ops or {}).items():
        pr = net.projections[name]
        projs[name] = dict(kind=pr.kind, pre=pr.pre, post=pr.post, input_map=True,
                           synaptic_operations=int(np.sum(ops)), dense_macs=int(pr.dense_macs) * res.batch)
    for name, d in tot["projections"].items():
        pr = net.projections[name]
        projs[name] = dict(kind=pr.kind, pre=pr.pre, post=pr.post, input_map=False,
                           synaptic_operations=int(np.sum(d["synaptic_operations"])),
                           dense_macs=int(d["dense_macs"]) * res.batch)
    return dict(phase=res.phase, steps=res.steps, batch=res.batch, wall_s=float(res.wall_s),
                populations=pops, projections=projs,
                spikes=sum(p["spikes"] for p in pops.values() if p["kind"] != "source"),
                synaptic_operations=sum(p["synaptic_operations"] for p in projs.values()),
                dense_macs=sum(p["dense_macs"] for p in projs.values()))


def format_summary(sim):
    """A short human-readable report of a :class:`Simulation` (spikes, rates, synaptic ops)."""
    lines = [f"model {sim.network.name!r} ({np.dtype(sim.network.dtype).name}), "
             f"{sim.forward.batch} samples, seed {sim.seed}"]
    for res in (sim.forward, sim.backward):
        if res is None:
            continue
        s = summarize(res)
        lines.append(f"{res.phase}: {res.steps} steps, {s['wall_s']:.3f} s, {s['spikes']} spikes, "
                     f"{s['synaptic_operations']} synaptic ops "
                     f"({_ratio(s['synaptic_operations'], s['dense_macs'])} of {s['dense_macs']} "
                     "dense MACs)")
        w = max(len(n) for n in list(s["populations"]) + list(s["projections"]))
        for name, p in s["populations"].items():
            extra = (f"  (+{p['spikes_pos']} / -{p['spikes_neg']})" if res.phase == "backward" else "")
            lines.append(f"  {name:<{w}}  {p['kind']:<8} {p['spikes']:>10} spikes  rate "
                         f"{p['rate']:.4f} /neuron/step{extra}")
        for name, p in s["projections"].items():
            tag = "input map" if p["input_map"] else p["kind"]
            lines.append(f"  {name:<{w}}  {tag:<8} {p['synaptic_operations']:>10} synaptic ops  "
                         f"({p['pre']} -> {p['post']})")
    if sim.path is not None:
        lines.append(f"run file: {sim.path}")
    return "\n".join(lines)


def _ratio(a, b):
    return f"{100.0 * a / b:.1f} %" if b else "n/a"
