"""Operation accounting from run files of both kinds.

``neurosim simulate`` run files (``docs/hdf5-schema.md``) store every phase result, so
their table is read, not recomputed: :func:`load_run_data` returns the stored
PhaseResults.  The weight-update rows are computed from them with SPIDE's local rule
(:func:`neurosim.ops.table.update_ops`), the ops an update would cost for that
forward/backward pair.

``neurosim train`` run files store the network after the last epoch and the per-epoch
history of op counts summed over the network, not per layer.  For those,
:func:`load_run_data` **recomputes** one forward + backward pass (no weight update) of
the stored network on the first ``n_samples`` training samples, exactly as a training
step does it (same loss, gate, κ, dropout masks drawn from the stored seed, no CIFAR
augmentation); the table says so and also quotes the stored last-epoch totals, and the
energy estimate prices those stored totals (all training samples of the last epoch).
Recomputing rather than storing keeps the training file format unchanged and also
yields the spike trains and per-synapse counts that the figures need.
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import _validate as V
from ..engine import run_backward, run_forward
from ..io.hdf5 import RunFileError, _check_header, _open, _Reader, read_run
from .table import OpsTable, phase_sums, update_ops

#: default number of training samples a training run's table is recomputed on.
DEFAULT_SAMPLES = 64
#: history datasets a training run file must have (per-sample means per epoch).
HISTORY_KEYS = ("epoch", "fwd_synops", "fwd_updates", "fwd_spikes", "encoding_macs",
                "bwd_synops_pos", "bwd_synops_neg", "bwd_updates", "bwd_spikes", "update_macs",
                "test_accuracy", "test_fwd_synops", "test_fwd_updates", "test_encoding_macs")


class RunData(NamedTuple):
    """A run's phase results, ready for tables, per-synapse views and figures."""
    kind: str                 # "simulate" or "training"
    path: Path
    network: object           # Network
    forward: object           # PhaseResult
    backward: object          # PhaseResult or None
    inputs: dict              # analog inputs per input population
    gate: dict                # backward gate if not the default
    update_ops: dict          # projection -> int64 [B], or None
    synapse_counts: dict      # stored per-synapse counts (simulate runs), else None
    source: dict              # file, kind, basis, and training facts


def run_kind(path):
    """``"simulate"`` or ``"training"``; RunFileError for anything else."""
    f = _open(path)
    r = _Reader(path, f)
    with f:
        _check_header(r)
        if str(_attr(f, "kind", "")) == "training" or "training" in f:
            return "training"
        if "forward" not in f:
            r.fail("it has neither a /forward group (a `neurosim simulate` run) nor a "
                   "/training group (a `neurosim train` run)")
    return "simulate"


def _attr(obj, key, default=None):
    v = obj.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def _check_training_file(path):
    """Fail with a RunFileError naming the first missing piece of a training run file."""
    f = _open(path)
    r = _Reader(path, f)
    with f:
        _check_header(r)
        r.group(f, "network")
        g = r.group(f, "training")
        for key in ("config", "model", "dataset", "epoch", "classes"):
            r.attr(g, key)
        r.group(g, "raw")
        h = r.group(g, "history")
        for key in HISTORY_KEYS:
            d = r.data(h, key)
            if np.ndim(d) != 1:
                r.fail(f"{h.name}/{key} must be one value per epoch, got shape {np.shape(d)}")
        if len(h["epoch"]) == 0:
            r.fail("the training run has no completed epoch (/training/history is empty)")


def _history_totals(st, net, cfg):
    h = st["history"]
    last = {k: float(h[k][-1]) for k in HISTORY_KEYS if k != "epoch"}
    n_spiking = sum(p.n for p in net.spiking_populations)
    fwd_steps = n_spiking * cfg.T
    counts = {
        "training": dict(
            forward=dict(synaptic_operations=last["fwd_synops"], neuron_updates=last["fwd_updates"],
                         dense_neuron_updates=float(fwd_steps)),
            input_encoding_macs=last["encoding_macs"],
            backward=dict(synaptic_operations=last["bwd_synops_pos"] + last["bwd_synops_neg"],
                          neuron_updates=last["bwd_updates"],
                          dense_neuron_updates=float(n_spiking * cfg.T_b)),
            weight_update_macs=last["update_macs"]),
        "inference": dict(
            forward=dict(synaptic_operations=last["test_fwd_synops"],
                         neuron_updates=last["test_fwd_updates"],
                         dense_neuron_updates=float(fwd_steps)),
            input_encoding_macs=last["test_encoding_macs"]),
    }
    return last, counts


def _training_data(path, n_samples, record, data_dir, n_threads):
    from .. import datasets as D
    from ..training.spide import SPIDEConfig, dropout_masks, output_loss
    from ..training.spide import post_errors as spide_post_errors
    from ..training.trainer import _normalised, build_model, load_checkpoint
    _check_training_file(path)
    try:
        net, st = load_checkpoint(path)
        cfg = SPIDEConfig.from_dict(st["config"])
    except RunFileError:
        raise
    except (KeyError, ValueError, TypeError, OSError) as e:
        raise RunFileError(f"run file {str(path)!r}: the stored training state is invalid: {e}") from e
    model = build_model(net, cfg, st["meta"], int(st["classes"]))
    model.raw = {k: np.array(v) for k, v in st["raw"].items()}
    model.apply_norm_cap(cfg.norm_cap)
    if st["readout"] is not None:
        model.C, model.c = (np.array(a, np.float64) for a in st["readout"])
    ds_name = st["dataset"]
    ds = D.load(ds_name, data_dir) if ds_name != "digits" else D.load("digits")
    xtr, ytr, _, _ = _normalised(ds)
    n = V.check_int(n_samples, "n_samples", low=1)
    x, y = xtr[:n], ytr[:n]
    in_shape = net.populations[model.input].shape
    if x.ndim == 4 and len(in_shape) == 1:
        x = x.reshape(len(x), -1)
    B = len(x)
    # one training step without the parameter update (as neurosim.training.spide.spide_step)
    rng = np.random.default_rng(cfg.seed)
    masks = dropout_masks(model, cfg, B, rng)
    rec = True if record else ([model.output] if cfg.loss == "spikemax-sliding" else False)
    fwd = run_forward(net, cfg.T, inputs={model.input: x}, masks=masks, record=rec,
                      n_threads=n_threads)
    _, dlda, _ = output_loss(model, cfg, fwd, y)
    gate = None
    if not model.readout:
        gate = {model.output: np.ones_like(fwd.counts[model.output], dtype=bool)}
    bwd = run_backward(net, fwd, {model.output: cfg.kappa * dlda}, cfg.T_b, gate=gate,
                       record=bool(record), n_threads=n_threads)
    inputs = {model.input: x}
    ups = update_ops(fwd, bwd, inputs=inputs, delta=spide_post_errors(model, fwd, bwd),
                     masked=not cfg.spide_quirks)
    last, counts = _history_totals(st, net, cfg)
    source = dict(file=str(path), kind="training", model=st["model"], dataset=ds_name,
                  epoch=int(st["epoch"]), T=cfg.T, T_b=cfg.T_b, kappa=cfg.kappa,
                  basis=(f"recomputed: one forward + backward pass (no weight update) of the "
                         f"network stored after epoch {int(st['epoch'])} on the first {B} "
                         f"training samples of {ds_name} (dropout masks from seed {cfg.seed})"),
                  history=last, energy_counts=counts,
                  energy_basis=("stored history: means over all training samples of the last "
                                "epoch (training) and over the test set (inference)"))
    return RunData("training", Path(path), net, fwd, bwd, inputs, gate or {}, ups, None, source)


def load_run_data(path, *, n_samples=DEFAULT_SAMPLES, record=False, data_dir=None,
                  n_threads=None):
    """The phase results of a run file (see the module docstring).

    Parameters
    ----------
    path : str or Path
        A ``neurosim simulate`` or ``neurosim train`` run file.
    n_samples : int
        Training runs: how many training samples to recompute on.
    record : bool
        Spike trains needed: a simulate run without stored spike trains is re-simulated
        from the file (bit-identical, :meth:`neurosim.io.Run.rerun`); a training run is
        recomputed with recording.
    data_dir : path, optional
        Training runs on file-based data sets: the data set's folder.
    """
    path = Path(path)
    if run_kind(path) == "training":
        return _training_data(path, n_samples, record, data_dir, n_threads)
    run = read_run(path)
    fwd, bwd = run.forward, run.backward
    rerun = False
    if record and (fwd.spikes is None or (bwd is not None and bwd.spikes is None)):
        fwd, bwd = run.rerun(record=True, n_threads=n_threads)
        rerun = True
    ups = None
    if bwd is not None:
        ups = update_ops(fwd, bwd, inputs=run.inputs, gate=run.gate or None)
    basis = (f"stored results of {fwd.batch} sample(s)" +
             ("; spike trains re-simulated from the file" if rerun else ""))
    source = dict(file=str(path), kind="simulate", basis=basis,
                  command=str(run.attrs.get("command", "")), T=fwd.steps,
                  T_b=None if bwd is None else bwd.steps)
    return RunData("simulate", path, run.network, fwd, bwd, run.inputs, run.gate, ups,
                   run.synapse_counts, source)


def table_from_data(data):
    """The :class:`OpsTable` of a :class:`RunData`."""
    sums = phase_sums(data.forward, data.backward, inputs=data.inputs, update_ops=data.update_ops)
    return OpsTable(sums, data.network, data.source)


def read_ops(path, *, n_samples=DEFAULT_SAMPLES, data_dir=None, n_threads=None):
    """The operation table of a run file (both kinds; see the module docstring).

    Raises :class:`~neurosim.io.RunFileError` naming the missing or wrong piece when the
    file is not a complete run file of this schema version."""
    return table_from_data(load_run_data(path, n_samples=n_samples, data_dir=data_dir,
                                         n_threads=n_threads))
