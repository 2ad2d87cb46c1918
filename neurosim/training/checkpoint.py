"""Training checkpoints: the ``/training`` group of a training run file, written and read in
one place, and the one way to rebuild a model from it (:func:`restore`).

A training run file is a run file (``docs/hdf5-schema.md``: root header, ``/network``
with the current weights) plus ``/training``:

* attributes ``config`` (JSON :class:`~neurosim.training.spide.SPIDEConfig`), ``model``,
  ``dataset``, ``epoch``, ``iteration``, ``finished``, ``wall_s``, ``classes``, ``rng``
  (JSON bit-generator state), ``meta`` (JSON: the model's ``[training]`` readout / output /
  dataset entries) and ``data`` (JSON: subset sizes and the data fingerprint);
* datasets ``readout_weight`` / ``readout_bias`` (exactly when the loss is ``ce``);
* with ``[training] batch_norm``, group ``batch_norm`` with one group per normalised input
  map holding its training-form ``weight`` and ``bias`` and its ``gamma``, ``beta``,
  ``running_mean`` and ``running_var``; ``/network`` then holds the inference form, the
  running statistics folded into the map (:func:`neurosim.training.batchnorm.fold`);
* groups ``raw`` (raw weights under a norm cap, per projection), ``optimizer`` (momentum
  buffers per parameter), ``history`` (one value per completed epoch per key of
  :data:`HISTORY`), ``diagnostics`` (only with ``train(diagnose=N)``) and, in a mid-epoch checkpoint, ``progress`` (dataset ``perm``,
  attribute ``state``).

Why here and not in :mod:`neurosim.io`: the layout is the training loop's state
(:class:`SPIDEConfig`, :class:`SPIDEModel`, the optimizer), and :func:`restore` builds
training objects; :mod:`neurosim.io` sits below the training layer and must not import
it.  All the HDF5 mechanics come from :mod:`neurosim.io.runfile`'s public building blocks:
:func:`~neurosim.io.runfile.atomic_h5` (atomic write, attribute digest ``attrs_sha256``),
:func:`~neurosim.io.runfile.write_header`, :func:`~neurosim.io.runfile.write_network`,
:func:`~neurosim.io.runfile.write_dataset` (Fletcher-32 checksums),
:func:`~neurosim.io.runfile.open_run_file` and :func:`~neurosim.io.runfile.read_network`.
"""
import json

import h5py
import numpy as np

from .. import _validate as V
from .. import counting
from ..io.runfile import (RunFileError, atomic_h5, open_run_file, read_network, write_dataset,
                       write_header, write_network)
from . import batchnorm as bn
from .loss_kinds import LOSS_KINDS
from .spide import SPIDEConfig, build_model

#: root attribute ``kind`` of a training run file.
KIND = "training"
#: the group holding the training state.
GROUP = "training"
#: scalar attributes of /training, written from the trainer's state dict.
SCALAR_ATTRS = ("model", "dataset", "epoch", "iteration", "finished", "wall_s", "classes")
#: JSON attributes of /training (``config`` from the SPIDEConfig, the others from the state).
JSON_ATTRS = ("config", "rng", "meta", "data")
#: attributes every /training group must have.
REQUIRED_ATTRS = ("config", "rng", "model", "dataset", "epoch", "iteration", "classes")
#: readout datasets (weight [K, n], bias [K]); present exactly when the loss is "ce".
READOUT = ("readout_weight", "readout_bias")
#: sub-groups: raw weights under a norm cap, momentum buffers, per-epoch history,
#: mid-epoch progress.
RAW, OPTIMIZER, HISTORY_GROUP, PROGRESS = "raw", "optimizer", "history", "progress"
#: group of the batch-normalised input maps (only with ``[training] batch_norm``) and the
#: datasets of each map's sub-group.
BATCH_NORM = "batch_norm"
BATCH_NORM_ARRAYS = ("weight", "bias") + bn.STATE
#: per-epoch history keys that are op counts (means per sample): the run file's names of
#: a step's :class:`~neurosim.counting.PhaseCounts` (:data:`~neurosim.counting.STEP_COUNT_NAMES`).
OPS = tuple(counting.STEP_COUNT_NAMES)
#: every per-epoch history key (the test pass has the forward counts only).
HISTORY = ("epoch", "lr", "train_loss", "train_accuracy", "test_accuracy", "test_loss",
           "wall_s") + OPS + tuple("test_" + k for k in counting.FORWARD_COUNT_NAMES)
#: optional group written by ``train(diagnose=N)`` (last epoch's backward diagnostics).
DIAGNOSTICS = "diagnostics"
#: per-population datasets of /training/diagnostics (aligned with ``populations``).
DIAGNOSTIC_POP_KEYS = ("bwd_rate_pos", "bwd_rate_neg", "beta_rel_error")
#: keys of ``/training/progress``'s ``state`` attribute.
PROGRESS_KEYS = ("batch", "n_batches", "loss_sum", "correct", "n", "sums", "wall_s", "activity")


def save_checkpoint(path, model, cfg, state, force=True, partial=None):
    """Write the training run file (network + /training) atomically.

    ``partial`` (a dict) makes it a mid-epoch checkpoint: ``/training/progress`` holds the
    epoch's batch order ``perm``, the next batch ``batch`` and the epoch's running sums."""
    def fill(f):
        net = model.inference_net()     # batch norm folded in (else model.net)
        write_header(f, net, cfg.seed, state.get("command"))
        f.attrs["kind"] = KIND
        write_network(f, net)
        g = f.create_group(GROUP)
        g.attrs["config"] = json.dumps(cfg.to_dict())
        for k in SCALAR_ATTRS:
            g.attrs[k] = state[k]
        g.attrs["rng"] = json.dumps(state["rng"])
        g.attrs["meta"] = json.dumps(state.get("meta", {}))
        g.attrs["data"] = json.dumps(state.get("data", {}))
        # every array through write_dataset: chunked with a Fletcher-32 checksum, so that
        # a corrupted byte is detected when reading instead of resuming with a wrong number
        if model.readout:
            write_dataset(g, READOUT[0], model.C)
            write_dataset(g, READOUT[1], model.c)
        if model.bn:
            bg = g.create_group(BATCH_NORM)
            for name, st in model.bn.items():
                pr = model.net.projections[name]
                arrays = dict(weight=pr.weight, bias=pr.bias, **st)
                mg = bg.create_group(name)
                for k in BATCH_NORM_ARRAYS:
                    write_dataset(mg, k, arrays[k])
        raw = g.create_group(RAW)
        for name, v in model.raw.items():
            write_dataset(raw, name, v)
        opt = g.create_group(OPTIMIZER)
        for name, v in state["optimizer"].items():
            write_dataset(opt, name, v)
        h = g.create_group(HISTORY_GROUP)
        for k, v in state["history"].items():
            write_dataset(h, k, np.asarray(v, np.float64))
        diag = state.get("diagnostics")
        if diag is not None:
            _write_diagnostics(g.create_group(DIAGNOSTICS), diag)
        if partial is not None:
            pg = g.create_group(PROGRESS)
            write_dataset(pg, "perm", np.asarray(partial["perm"], np.int64))
            pg.attrs["state"] = json.dumps({k: v for k, v in partial.items() if k != "perm"})
    return atomic_h5(path, fill, force=force)


def _write_diagnostics(g, d):
    """``/training/diagnostics`` from a :func:`neurosim.training.diagnose.diagnose` result."""
    for k in ("epoch", "samples", "T_b"):
        g.attrs[k] = np.int64(d[k])
    pops, projs = list(d["populations"]), list(d["projections"])
    g.create_dataset("populations", data=np.array(pops, dtype=object),
                     dtype=h5py.string_dtype())
    g.create_dataset("projections", data=np.array(projs, dtype=object),
                     dtype=h5py.string_dtype())
    for k in DIAGNOSTIC_POP_KEYS:
        write_dataset(g, k, np.array([d["populations"][n][k] for n in pops], np.float64))
    write_dataset(g, "grad_cosine", np.array([d["projections"][n]["grad_cosine"]
                                             for n in projs], np.float64))


def _parameter_shapes(net, readout_shapes, batch_norm=()):
    out = {}
    for name, pr in net.projections.items():
        if pr.has_weights:
            out[f"{name}.weight"] = tuple(pr.weight.shape)
        if pr.bias is not None:
            out[f"{name}.bias"] = tuple(pr.bias.shape)
        if name in batch_norm:
            out[f"{name}.bn_gamma"] = out[f"{name}.bn_beta"] = (pr.n_post,)
    if readout_shapes is not None:
        out["readout.weight"], out["readout.bias"] = readout_shapes
    return out


def _check_state(r, net, st):
    """Consistency of a training checkpoint's /training (never silently resume wrongly)."""
    try:
        cfg = SPIDEConfig.from_dict(st["config"])
    except (V.NeurosimError, TypeError, AttributeError) as e:
        r.fail(f"/training config is invalid: {e}")
    for k in ("epoch", "iteration", "classes"):
        v = st.get(k)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            r.fail(f"/training attribute {k!r} must be a non-negative integer, got {v!r}")
    if st["epoch"] > cfg.epochs:
        r.fail(f"/training epoch {st['epoch']} exceeds the configured {cfg.epochs} epochs")
    ro = st["readout"]
    if LOSS_KINDS[cfg.loss].readout != (ro is not None):
        r.fail("/training/readout_weight and readout_bias must be present exactly when the "
               f"loss trains a readout ('ce'; loss is {cfg.loss!r})")
    if ro is not None:
        C, c = ro
        if C.ndim != 2 or c.shape != (C.shape[0],) or C.shape[0] != st["classes"]:
            r.fail(f"/training readout has shapes {C.shape} / {c.shape}, expected "
                   f"({st['classes']}, n) / ({st['classes']},)")
    shapes = _parameter_shapes(net, None if ro is None else (ro[0].shape, ro[1].shape),
                               cfg.batch_norm)
    if set(st["batch_norm"]) != set(cfg.batch_norm):
        r.fail(f"/training/batch_norm holds {sorted(st['batch_norm'])}, expected the "
               f"normalised input maps {sorted(cfg.batch_norm)}")
    for name, arrays in st["batch_norm"].items():
        pr = net.projections.get(name)
        want = {} if pr is None or not pr.has_weights or pr.bias is None else dict(
            weight=pr.weight.shape, bias=pr.bias.shape,
            **{k: (pr.n_post,) for k in bn.STATE})
        if not want or {k: tuple(v.shape) for k, v in arrays.items()} != want:
            r.fail(f"/training/batch_norm/{name} does not match input map {name!r} (needs "
                   f"{list(BATCH_NORM_ARRAYS)} of its weight's, bias's and post size's shapes)")
    for name, buf in st["optimizer"].items():
        if name not in shapes or tuple(buf.shape) != shapes[name]:
            r.fail(f"/training/optimizer/{name} does not match a parameter of the network "
                   f"(shape {tuple(buf.shape)}; parameters: {shapes})")
    if cfg.momentum and st["iteration"] > 0 and set(st["optimizer"]) != set(shapes):
        r.fail(f"/training/optimizer holds momentum buffers for {sorted(st['optimizer'])}, "
               f"expected one per parameter: {sorted(shapes)}")
    if set(st["raw"]) != set(cfg.norm_cap):
        r.fail(f"/training/raw holds {sorted(st['raw'])}, expected the norm-capped "
               f"projections {sorted(cfg.norm_cap)}")
    for name, v in st["raw"].items():
        if f"{name}.weight" not in shapes or tuple(v.shape) != shapes[f"{name}.weight"]:
            r.fail(f"/training/raw/{name} does not match the weight of projection {name!r}")
    missing = sorted(set(HISTORY) - set(st["history"]))
    if missing:
        r.fail(f"/training/history lacks {missing}")
    for k, v in st["history"].items():
        if len(v) != st["epoch"]:
            r.fail(f"/training/history/{k} has {len(v)} values, expected one per completed "
                   f"epoch ({st['epoch']})")
    try:
        np.random.default_rng(0).bit_generator.state = st["rng"]
    except (TypeError, ValueError, KeyError) as e:
        r.fail(f"/training attribute 'rng' is not a random generator state: {e}")
    p = st.get("progress")
    if p is not None:
        need = set(PROGRESS_KEYS)
        if not isinstance(p, dict) or need - set(p):
            r.fail(f"/training/progress is incomplete (needs {sorted(need)})")
        perm = p["perm"]
        if perm.ndim != 1 or not 0 <= p["batch"] <= p["n_batches"] or \
                sorted(perm.tolist()) != list(range(perm.size)):
            r.fail("/training/progress is inconsistent (perm must be a permutation and "
                   "0 <= batch <= n_batches)")
    return cfg


def load_checkpoint(path):
    """(network, training dict) from a training run file; :class:`RunFileError` if not one
    (missing, not HDF5, truncated, another kind of run file, or an inconsistent state)."""
    with open_run_file(path, name_errors=True) as r:
        f = r.f
        if GROUP not in f:
            kind = f.attrs.get("kind", b"")
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            r.fail("has no /training group: it is not a training run file (written by "
                   "`neurosim simulate`?); `neurosim eval` and `--resume` need a file "
                   "written by `neurosim train`" if kind != KIND else
                   "missing group /training")
        net = read_network(r)
        g = r.group(f, GROUP)
        st = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in g.attrs.items()}
        for k in REQUIRED_ATTRS:
            if k not in st:
                r.fail(f"missing attribute {k!r} of /training")
        for k in JSON_ATTRS:
            st[k] = r.attr(g, k, "json") if k in st else {}
        st["readout"] = ((r.data(g, READOUT[0]), r.data(g, READOUT[1]))
                         if READOUT[0] in g or READOUT[1] in g else None)
        st["raw"] = r.arrays(g, RAW)
        st["batch_norm"] = ({k: r.arrays(r.group(g, BATCH_NORM), k) for k in g[BATCH_NORM]}
                            if BATCH_NORM in g else {})
        st["optimizer"] = r.arrays(g, OPTIMIZER)
        st["history"] = {k: list(v) for k, v in r.arrays(g, HISTORY_GROUP).items()}
        st["progress"] = None
        if PROGRESS in g:
            pg = r.group(g, PROGRESS)
            st["progress"] = dict(r.attr(pg, "state", "json"), perm=r.data(pg, "perm"))
        for k in ("epoch", "iteration", "classes"):
            if isinstance(st[k], np.integer):
                st[k] = int(st[k])
        _check_state(r, net, st)
    return net, st


def restore(source):
    """The training state of a run file, rebuilt: ``(net, model, cfg, state)``.

    ``source`` is a training run file's path or the ``(net, state)`` pair
    :func:`load_checkpoint` returned.  ``model`` is the :class:`SPIDEModel` with the stored
    raw weights under the norm caps (re-applied, so the network's weights are exactly
    those training used) and the stored readout; ``cfg`` the stored
    :class:`SPIDEConfig`; ``state`` the dict of :func:`load_checkpoint`.  Used by every
    reader of a training state: ``neurosim train --resume``, ``neurosim eval`` and
    ``neurosim ops``.

    Raises :class:`RunFileError` when the file is not a complete, consistent training run
    file, or when its stored model cannot be rebuilt."""
    if isinstance(source, tuple):
        (net, st), where = source, ""
    else:
        net, st = load_checkpoint(source)
        where = f" {str(source)!r}"
    try:
        cfg = SPIDEConfig.from_dict(st["config"])
        model = build_model(net, cfg, st["meta"], int(st["classes"]))
    except (V.NeurosimError, KeyError, TypeError) as e:
        raise RunFileError(f"run file{where}: the stored training state is invalid: {e}") from e
    model.raw = {k: np.array(v) for k, v in st["raw"].items()}
    for name, arrays in st["batch_norm"].items():     # the training form of the map
        pr = net.projections[name]
        pr.set_weight(np.array(arrays["weight"], np.float64))
        pr.bias = np.array(arrays["bias"], np.float64)
        model.bn[name] = {k: np.array(arrays[k], np.float64) for k in bn.STATE}
    model._folded = None
    if st["readout"] is not None:
        model.C, model.c = (np.array(a, np.float64) for a in st["readout"])
    model.apply_norm_cap(cfg.norm_cap)
    return net, model, cfg, st
