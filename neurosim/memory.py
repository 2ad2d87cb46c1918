"""The memory a run needs, estimated before it allocates (issue 29; docs/decisions.md, 76).

:func:`estimate_run_bytes` adds up, part by part, the arrays a run holds at its peak:

``model``
    the network's own arrays (weights and biases in float64, CSR structure);
``programs``
    the network compiled for the kernels, once per phase (weights in the network's dtype,
    site tables, degrees; :func:`neurosim.network.compile_program`);
``stimulus``
    the input values / source spike trains of the batch, as the engine reads them;
``drive``
    the currents the engine builds from them (float64 and the network's dtype), masks,
    the backward gate;
``forward outputs`` / ``backward outputs``
    spike counts, final potentials, weighted counts, events sent per neuron and
    projection (the :class:`~neurosim.results.PhaseResult` arrays; a backward phase
    runs while its forward result is held);
``forward recordings`` / ``backward recordings``
    spike trains, one byte per sample, step and recorded neuron;
``scratch``
    the kernel's per-thread working arrays (:func:`neurosim.kernels.layout.alloc_scratch`,
    counted from the real function so that every per-neuron array is included, and the
    delay rings: a slot per sending neuron and step of delay);
``gradients``
    SPIDE's post errors, pre factors and per-block weight-gradient rows
    (:func:`neurosim.local_rule.local_parts`), their sums and the gradients;
``optimizer``
    the momentum buffers and the update's temporaries;
``run file`` / ``HDF5 copy``
    the image of a run file or checkpoint built in memory before it is written
    (:func:`neurosim.io.runfile.atomic_h5`), as Python's bytes and as HDF5's own file
    (C memory, which ``tracemalloc`` does not see): the network, the stimulus, the
    phases' per-neuron results and the spike lists (13 bytes per recorded spike, counted
    when the phases have run), uncompressed; per-synapse counts, which gzip shrinks to
    almost nothing, count only as the largest one being computed;
``data``
    a training run's data set in memory.

:func:`check_run_memory` refuses a run whose total exceeds
:data:`neurosim.config.MAX_RUN_BYTES` (``NEUROSIM_MAX_RUN_MB``) with one line naming the
estimate, its largest parts, the limit and the override.  ``tests/test_memory.py`` holds
the estimate to within 1.25x of the peak that ``tracemalloc`` measures (numpy reports its
arrays to it) on shipped models.
"""
import numbers

import numpy as np

from . import _buffers, config
from . import _validate as V
from .kernels import layout as L
from .kernels import threads as _th

#: what :func:`estimate_run_bytes` estimates.
TASKS = ("forward", "backward", "simulate", "train", "evaluate")
#: samples per batch of a training run's test pass (:func:`neurosim.training.loop.evaluate`).
EVAL_BATCH = 200
#: rows of SPIDE's per-block gradient sums (:data:`neurosim.kernels.spide.N_BLOCKS`).
N_BLOCKS = 8


def human(nbytes):
    """``1536`` -> ``'1.5 KiB'``."""
    n = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def arrays_bytes(obj, seen=None):
    """Bytes of the numpy arrays in ``obj`` (an array, a NamedTuple / list / tuple / dict
    of them, or an object's attributes), each memory block counted once."""
    seen = set() if seen is None else seen
    if isinstance(obj, np.ndarray):
        base = obj
        while isinstance(base.base, np.ndarray):
            base = base.base
        if id(base) in seen:
            return 0
        seen.add(id(base))
        return int(base.nbytes)
    if isinstance(obj, dict):
        return sum(arrays_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(arrays_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(arrays_bytes(v, seen) for v in vars(obj).values()
                   if isinstance(v, (np.ndarray, dict, list, tuple)))
    return 0


def model_bytes(net):
    """The network's arrays (projection weights, biases, connectivity, cached tables)."""
    seen = set()
    return sum(arrays_bytes(pr, seen) for pr in net.projections.values())


def scratch_bytes(prog):
    """Bytes of one :class:`~neurosim.kernels.layout.Scratch` of ``prog``: the real
    :func:`~neurosim.kernels.layout.alloc_scratch` on ``prog`` with one-step delay rings
    (every array it has, whatever the neuron models add), plus the rest of the rings
    (``ring_*`` arrays: one slot per sending neuron and step of delay)."""
    a = prog.arrays
    P = a.pop_off.shape[0] - 1
    N = int(a.pop_off[P])
    flat = a._replace(pop_ring_off=a.pop_off, pop_depth=np.ones(P, np.int64))
    sc = L.alloc_scratch(flat, prog.n_buf, prog.max_ports)
    total = arrays_bytes(sc)
    R = int(a.pop_ring_off[P])
    maxd = max(1, int(a.pop_depth.max(initial=1)))
    for f in sc._fields:
        arr = getattr(sc, f)
        if f.startswith("ring_") and arr.ndim == 1:
            total += (R - N) * arr.itemsize             # slots beyond one step
        elif f.startswith("ring_") and arr.ndim == 2:
            total += P * (maxd - 1) * arr.itemsize      # per population and step
    return total


def _phase_pops(net, backward):
    """(spiking populations, projections of the phase)."""
    spiking = [p for p in net.populations.values() if p.spiking]
    if backward:
        projs = [q for q in net.projections.values()
                 if net.populations[q.pre].spiking and net.populations[q.post].spiking]
    else:
        projs = [q for q in net.projections.values() if net.populations[q.pre].kind != "input"]
    return spiking, projs


def _recorded(net, record):
    if record is True:
        return sum(p.n for p in net.populations.values() if p.kind != "input")
    if not record:
        return 0
    names = [record] if isinstance(record, str) else list(record)
    return sum(net.populations[n].n for n in names if n in net.populations)


def phase_outputs(net, prog, B, T, backward, record):
    """(outputs, recordings) bytes of one phase (:func:`neurosim.engine._allocate`)."""
    N = int(prog.arrays.pop_off[-1])
    P, Q = len(prog.pop_names), len(prog.proj_names)
    it = np.dtype(net.dtype).itemsize
    leaky = any((p.ternary.leak if backward else p.neuron.leak) != 1.0
                for p in net.spiking_populations)
    out = B * N * (4 + 4 + it + (8 if leaky else 0))     # counts, counts_neg, u_out, wcount
    out += B * prog.n_sent * 16 + B * (2 * P + 2 * Q) * 8   # sent, sent_neg; nupd, spk, ops
    n_rec = _recorded(net, record)
    return out, B * T * n_rec


#: how much smaller gzip (with the shuffle filter) stores integer counts than their bytes:
#: spike and event counts are small numbers, their high bytes zeros (measured 4-8x).
INT_SHRINK = 4


def results_image(net, prog, B, backward):
    """Bytes a phase's results take in a run file: potentials (and weighted counts) as
    they are, spike and event counts shrunk by :data:`INT_SHRINK`."""
    N = int(prog.arrays.pop_off[-1])
    it = np.dtype(net.dtype).itemsize
    leaky = any((p.ternary.leak if backward else p.neuron.leak) != 1.0
                for p in net.spiking_populations)
    k = 2 if backward else 1                           # + and - counts
    ints = B * N * 4 * k + B * prog.n_sent * 8 * k
    return B * N * (it + (8 if leaky else 0)) + ints // INT_SHRINK


def forward_drive(net, prog, B, T, *, per_step=False, masks=()):
    """Bytes of the forward phase's drive (:func:`neurosim.engine.run_forward`): the
    float64 currents and their cast, masks, input-map currents (per step: [B, T, n]
    float64, summed, cast and packed)."""
    N = int(prog.arrays.pop_off[-1])
    it = np.dtype(net.dtype).itemsize
    b = B * N * (8 + it) + B * prog.n_mask * it
    n_tv = 0
    for q in net.projections.values():
        if q.name in masks:
            b += B * q.n_post * 8                  # the checked float64 mask
        if net.populations[q.pre].kind != "input":
            continue
        if per_step:
            b += B * T * q.n_post * 8 * (2 if q.name in masks else 1)
            n_tv += q.n_post
        else:
            b += B * q.n_post * 8 * (2 if q.name in masks else 1) + B * 8
    if n_tv:
        b += B * T * n_tv * (8 + 2 * it)           # summed, cast, packed
    return b


def backward_drive(net, prog, B):
    """Bytes the backward phase adds to the drive: the gate (uint8) and the forward masks
    it is built from (the float64 currents reuse the forward's buffers)."""
    N = int(prog.arrays.pop_off[-1])
    return B * N + B * max((p.n for p in net.spiking_populations), default=0)


def stimulus_bytes(net, B, T, per_step=False, shrink=1):
    """The batch's input values (float64) and source spike trains (bool; divided by
    ``shrink``: in a run file, see :data:`INT_SHRINK`)."""
    b = 0
    for p in net.populations.values():
        if p.kind == "input":
            b += B * p.n * 8 * (T if per_step else 1)
        elif p.kind == "source":
            b += B * T * p.n // shrink
    return b


def gradient_bytes(net, B):
    """SPIDE's local rule on a batch of ``B`` (:func:`neurosim.local_rule.local_gradients`):
    post errors (float64 [B, n]), one projection's pre factor and masked error at a time,
    the per-block rows of every gradient (float64 [min(B, 8), size]), their sums and the
    gradients."""
    spiking = {p.name for p in net.spiking_populations}
    b = B * sum(net.populations[n].n for n in spiking) * 8          # post errors
    rows = min(B, N_BLOCKS)
    factor = 0
    for q in net.projections.values():
        if q.post not in spiking:
            continue
        factor = max(factor, B * (q.n_pre + q.n_post) * 8)          # pre factor, D * delta
        b += _param_size(q) * 8 * (rows + 2)                        # rows, sum, gradient
    return b + factor


def _param_size(q):
    return (q.weight.size if q.has_weights else 0) + (q.n_post if q.bias is not None else 0)


def parameter_bytes(net, classes=None):
    """Bytes of the trainable parameters (float64), as the optimizer's momentum keeps."""
    b = 0
    for q in net.projections.values():
        if q.has_weights:
            b += q.weight.size * 8
        if q.bias is not None:
            b += q.n_post * 8
    if classes:
        out = [p for p in net.spiking_populations][-1].n
        b += classes * (out + 1) * 8
    return b


def runfile_bytes(net, image, per_synapse=True):
    """(Python's bytes, HDF5's bytes) of writing a run file whose datasets hold ``image``
    bytes (:func:`neurosim.io.runfile.atomic_h5`): HDF5's in-memory file (its ``core``
    driver, C memory) and the image Python takes of it coexist for a moment; with
    ``per_synapse`` the largest per-synapse count array and its temporary are added
    (computed one projection at a time; they compress to almost nothing, so they are
    not in ``image``)."""
    extra = 0
    if per_synapse:
        extra = max((16 * _synapse_count_size(q) for q in net.projections.values()), default=0)
    return image + extra, image


def _synapse_count_size(q):
    if q.kind == "dense":
        return q.n_pre * q.n_post
    if q.kind == "sparse":
        return q.n_synapses
    k = getattr(q, "kernel_shape", None)
    kk = int(np.prod(k)) if k is not None else getattr(q, "kernel", 1) ** 2
    return q.n_pre * kk


def _programs(net, backward, programs):
    from .network import compile_program
    fwd = programs[0] if programs and programs[0] is not None else compile_program(net, False)
    bwd = None
    if backward:
        bwd = programs[1] if programs and len(programs) > 1 and programs[1] is not None \
            else compile_program(net, True)
    return fwd, bwd


def estimate_run_bytes(network, task="simulate", B=1, T=1, T_b=None, *, record=False,
                       per_step=False, masks=(), write=False, n_threads=None, classes=None,
                       data_bytes=0, eval_batch=None, spikes=0, programs=None):
    """Itemised estimate (bytes) of the memory a run of ``network`` holds at its peak.

    Parameters
    ----------
    network : Network
    task : str
        ``"forward"`` (:func:`neurosim.run_forward`), ``"backward"`` (what
        :func:`neurosim.run_backward` adds to its forward result), ``"simulate"``
        (:func:`neurosim.simulate.simulate`: forward, backward with ``T_b``, the run file
        with ``write``), ``"train"`` (a SPIDE training run: a step on a batch of ``B``,
        the test pass on batches of :data:`EVAL_BATCH`, momentum, the checkpoint image)
        or ``"evaluate"`` (forward-only test pass on batches of ``B``).
    B, T, T_b : int
        Batch, forward and backward steps.
    record : bool or list of str
        Recorded populations (as :func:`neurosim.run_forward` takes them).
    per_step : bool
        The analog input is given per step ([B, T, n]) instead of constant.
    masks : iterable of str
        Projections with a per-sample mask (dropout).
    write : bool
        ``simulate`` writes a run file.
    n_threads : int, optional
        Threads (each runs with its own scratch); default: the current setting.
    classes : int, optional
        ``train``: classes of the readout.
    data_bytes : int
        ``train``: the data set's bytes (already in memory).
    eval_batch : int, optional
        ``train``: the test pass's batch (default :data:`EVAL_BATCH`).
    spikes : int
        ``simulate`` with ``write``: the recorded spikes the run file lists (known after the
        phases; before them 0).
    programs : (forward Program, backward Program), optional
        Already compiled programs (else compiled here; they are counted either way).

    Returns
    -------
    dict
        part name -> bytes (zero parts left out), and ``"total"``.
    """
    V.check_choice(task, "task", set(TASKS))
    B = V.check_int(B, "batch", low=1)
    T = V.check_int(T, "T", low=1)
    backward = task in ("backward", "train") or (task == "simulate" and T_b)
    if backward:
        T_b = V.check_int(T_b, "T_b", low=1)
    nth = n_threads if isinstance(n_threads, numbers.Integral) and n_threads >= 1 \
        else _th.get_threads()          # (an invalid n_threads is refused by the run)
    masks = set(masks or ())
    fwd, bwd = _programs(network, backward, programs)
    parts = {"model": model_bytes(network),
             "programs": arrays_bytes(fwd.arrays) + (arrays_bytes(bwd.arrays) if bwd else 0)}
    if task == "backward":                # the forward result is held meanwhile
        parts["drive"] = forward_drive(network, fwd, B, T, masks=masks) + \
            backward_drive(network, bwd, B)
        parts["forward outputs"] = phase_outputs(network, fwd, B, T, False, False)[0]
        parts["backward outputs"], parts["backward recordings"] = \
            phase_outputs(network, bwd, B, T_b, True, record)
        parts["scratch"] = min(nth, B) * scratch_bytes(bwd)
        return _total(parts)
    rec = False if task in ("train", "evaluate") else record
    parts["stimulus"] = stimulus_bytes(network, B, T, per_step)
    parts["drive"] = forward_drive(network, fwd, B, T, per_step=per_step, masks=masks)
    parts["forward outputs"], parts["forward recordings"] = \
        phase_outputs(network, fwd, B, T, False, rec)
    scratch = scratch_bytes(fwd)
    if backward:
        parts["drive"] += backward_drive(network, bwd, B)
        parts["backward outputs"], parts["backward recordings"] = \
            phase_outputs(network, bwd, B, T_b, True, rec)
        scratch = max(scratch, scratch_bytes(bwd))
    parts["scratch"] = min(nth, B) * scratch
    if task == "train":
        Be = EVAL_BATCH if eval_batch is None else V.check_int(eval_batch, "eval_batch", low=1)
        parts["gradients"] = gradient_bytes(network, B)
        p = parameter_bytes(network, classes)
        big = max((_param_size(q) for q in network.projections.values()), default=0)
        parts["optimizer"] = p + 3 * 8 * big              # momentum; one update's temporaries
        # the test pass (batches of Be) runs after the epoch's last step, whose result
        # (phases, gradients) is still held; the step's drive stays only where the
        # buffer cache keeps it (neurosim/_buffers.py): the larger of the two stages
        N = int(fwd.arrays.pop_off[-1])
        cached = B * N * 8 >= _buffers.MIN_BYTES and config.BUFFER_CACHE_BYTES > 0
        step = parts["stimulus"] + parts["drive"] + parts["gradients"] + 2 * 8 * big
        kept = p + (parts["drive"] if cached else 0)
        test = (stimulus_bytes(network, Be, T) + forward_drive(network, fwd, Be, T) +
                phase_outputs(network, fwd, Be, T, False, False)[0])
        parts["test pass"] = max(0, kept + test - step)
        parts["data"] = int(data_bytes)
        parts["run file"], parts["HDF5 copy"] = runfile_bytes(
            network, parts["model"] + p, per_synapse=False)       # the checkpoint
    elif task == "simulate" and write:
        image = (parts["model"] + stimulus_bytes(network, B, T, per_step, shrink=INT_SHRINK) +
                 results_image(network, fwd, B, False) +
                 (results_image(network, bwd, B, True) if backward else 0) + 13 * int(spikes))
        py, c = runfile_bytes(network, image)
        # written after the phases: their scratch is freed by then, and so is the drive
        # unless the engine's buffer cache keeps it (arrays of MIN_BYTES or more)
        N = int(fwd.arrays.pop_off[-1])
        cached = B * N * 8 >= _buffers.MIN_BYTES and config.BUFFER_CACHE_BYTES > 0
        freed = parts["scratch"] + (0 if cached else parts["drive"])
        parts["run file"] = max(0, py - freed)
        parts["HDF5 copy"] = c
    return _total(parts)


def _total(parts):
    out = {k: int(v) for k, v in parts.items() if v}
    out["total"] = sum(out.values())
    return out


def describe(parts, n=3):
    """``'1.2 GiB (forward outputs 800.0 MiB, drive 300.0 MiB, ...)'``."""
    items = sorted(((v, k) for k, v in parts.items() if k != "total"), reverse=True)
    shown = ", ".join(f"{k} {human(v)}" for v, k in items[:n])
    return f"{human(parts['total'])} ({shown}{', ...' if len(items) > n else ''})"


def check_run_memory(parts, what, hint):
    """Refuse (one line) a run whose estimate ``parts`` (:func:`estimate_run_bytes`)
    exceeds :data:`neurosim.config.MAX_RUN_BYTES`; ``what`` names the run, ``hint`` what
    to lower."""
    V.check_environment()
    if parts["total"] > config.MAX_RUN_BYTES:
        raise V.NeurosimError(
            f"{what} would need about {describe(parts)}, more than the "
            f"{human(config.MAX_RUN_BYTES)} a run may use (by default three quarters of this "
            f"machine's memory; NEUROSIM_MAX_RUN_MB sets it); {hint}")
    return parts
