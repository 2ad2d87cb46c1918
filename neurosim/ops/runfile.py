"""Operation accounting from run files of both kinds.

``neurosim simulate`` run files (``docs/hdf5-schema.md``) store every phase result, so
their table is read, not recomputed: :func:`load_run_data` returns the stored
PhaseResults.  The weight-update rows are computed from them with SPIDE's local rule
(:func:`neurosim.local_rule.update_ops`), the ops an update would cost for that
forward/backward pair.

``neurosim train`` run files store the network after the last epoch and the per-epoch
history of op counts summed over the network, not per layer.  For those,
:func:`load_run_data` **recomputes** one forward + backward pass (no weight update) of
the stored network on the first ``n_samples`` training samples with the training step's
own code (:func:`neurosim.training.spide.spide_phases`: same loss, gate, κ, dropout masks
drawn from the stored seed, no CIFAR augmentation; the model comes from
:func:`neurosim.training.checkpoint.restore`); the table says so and also quotes the
stored last-epoch totals, and the energy estimate prices those stored totals (all
training samples of the last epoch).
Recomputing rather than storing keeps the training file format unchanged and also
yields the spike trains and per-synapse counts that the figures need.
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .. import _validate as V
from .. import counting
from ..io.runfile import open_run_file, read_run
from ..local_rule import update_ops
from ..simulate import rerun as resimulate
from .table import OpsTable, phase_sums

#: default number of training samples a training run's table is recomputed on.
DEFAULT_SAMPLES = 64
#: history datasets a training run file must have (per-sample means per epoch; the count
#: names are :data:`neurosim.counting.STEP_COUNT_NAMES`), in the order the table quotes them.
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
    with open_run_file(path, verify=False) as r:
        f = r.f
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
    with open_run_file(path, verify=False) as r:
        f = r.f
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
    return last, history_energy_counts(last, net, cfg.T, cfg.T_b)


def history_energy_counts(last, net, T, T_b):
    """The op counts :func:`neurosim.ops.energy.estimate` prices, from a training run's
    last-epoch history ``last`` (history key -> mean per sample): training (forward,
    input encoding, backward, weight update) and inference (test set: forward, input
    encoding)."""
    n_spiking = sum(p.n for p in net.spiking_populations)
    tr = counting.named_to_phases(last)
    te = counting.named_to_phases({k[5:]: v for k, v in last.items() if k.startswith("test_")})

    def spiking(ph, steps, syn):
        return dict(synaptic_operations=syn, neuron_updates=ph["neuron_updates"],
                    dense_neuron_updates=float(n_spiking * steps))
    bwd = tr["backward"]
    return {
        "training": dict(
            forward=spiking(tr["forward"], T, tr["forward"]["synaptic_operations"]),
            input_encoding_macs=tr["input_encoding"]["synaptic_operations"],
            backward=spiking(bwd, T_b, bwd["synaptic_operations_pos"] +
                             bwd["synaptic_operations_neg"]),
            weight_update_macs=tr["weight_update"]["synaptic_operations"]),
        "inference": dict(
            forward=spiking(te["forward"], T, te["forward"]["synaptic_operations"]),
            input_encoding_macs=te["input_encoding"]["synaptic_operations"]),
    }


def _training_data(path, n_samples, record, data_dir, n_threads):
    from ..training.checkpoint import restore
    from ..training.spide import spide_phases
    from ..training.trainer import load_data, model_input
    _check_training_file(path)
    net, model, cfg, st = restore(path)
    ds_name = st["dataset"]
    _, xtr, ytr, _, _ = load_data(ds_name, data_dir)
    n = V.check_int(n_samples, "n_samples", low=1)
    x, y = model_input(net, model.input, xtr[:n]), ytr[:n]
    B = len(x)
    # one training step without the parameter update, dropout masks from the stored seed
    step = spide_phases(model, x, y, cfg, np.random.default_rng(cfg.seed), record=record,
                        n_threads=n_threads, check=False)
    inputs = {model.input: x}
    last, counts = _history_totals(st, net, cfg)
    p = st.get("progress")
    when = (f"after epoch {int(st['epoch'])}" if p is None else
            f"in epoch {int(st['epoch']) + 1} after batch {p['batch']}/{p['n_batches']} "
            "(a mid-epoch checkpoint)")
    source = dict(file=str(path), kind="training", model=st["model"], dataset=ds_name,
                  epoch=int(st["epoch"]), T=cfg.T, T_b=cfg.T_b, kappa=cfg.kappa, stored=when,
                  basis=(f"recomputed: one forward + backward pass (no weight update) of the "
                         f"network stored {when} on the first {B} "
                         f"training samples of {ds_name} (dropout masks from seed {cfg.seed})"),
                  history=last, energy_counts=counts,
                  energy_basis=("stored history: means over all training samples of the last "
                                "epoch (training) and over the test set (inference)"))
    return RunData("training", Path(path), net, step.forward, step.backward, inputs,
                   step.gate or {}, step.update_ops, None, source)


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
        from the file (bit-identical, :func:`neurosim.simulate.rerun`); a training run is
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
        fwd, bwd = resimulate(run, record=True, n_threads=n_threads)
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
