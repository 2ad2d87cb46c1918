"""The training driver behind ``neurosim train`` / ``neurosim eval``.

``train(...)`` loads a model file and a data set, runs SPIDE epochs (:func:`spide_step`),
evaluates on the test set after every epoch, and writes a training run file after every
epoch.  The file holds the network with its current weights (the run-file schema's
``/network``), and ``/training``: the configuration, the readout, the optimizer's momentum
buffers, the random generator's state, the epoch/iteration counters and the per-epoch
history of metrics and operation counts (``docs/training.md``; written, read and restored
by :mod:`neurosim.training.checkpoint`, whose ``save_checkpoint`` / ``load_checkpoint`` are
re-exported here).

Reliability (``docs/reliability.md``):

* every write is atomic (:func:`neurosim.io.hdf5.atomic_h5`): a crash never leaves a
  half-written file, and the previous checkpoint stays intact until the new one is
  complete;
* ``resume=True`` continues from the file and reaches the same final weights, metrics and
  op counts as an uninterrupted run with the same seed (same batches, same dropout masks,
  same momentum).  Options that would change the run (a different learning rate, data
  set, seed, ...) are refused on resume;
* SIGINT (Ctrl-C) and SIGTERM stop the run after the current batch, write a **mid-epoch
  checkpoint** (``/training/progress``: the epoch's batch order, the next batch and the
  epoch's running sums) and raise :class:`TrainingInterrupted`; ``resume`` continues with
  the next batch, bit-identically.  A second signal stops at once (the file on disk is
  then the previous checkpoint).  ``checkpoint_every`` seconds also writes mid-epoch
  checkpoints;
* NaN / inf in potentials, gradients or parameters stops training with
  :class:`~neurosim.training.health.NumericalError` naming the array, the epoch and the
  batch, without writing a checkpoint: the file keeps the last good one;
* a population firing at every step (runaway activity) gives a
  :class:`~neurosim.training.health.RunawayActivityWarning` once per epoch.
"""
import contextlib
import hashlib
import signal
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from .. import _testhooks
from .. import _validate as V
from .. import datasets as D
from .. import kernels
from ..io import atomic
from ..models import load_model, read_model_file, resolve_model_path
from ..network import Network
from . import health
from . import diagnose as _diagnostics
from .checkpoint import HISTORY, OPS, load_checkpoint, restore, save_checkpoint  # noqa: F401
from .spide import (SGD, SPIDEConfig, build_model, learning_rate, spide_phases,  # noqa: F401
                    spide_step)

#: the model ``neurosim train`` uses when none is given
DEFAULT_MODEL = "fsnn_mlp"
TRAINING_KEYS = {f.name for f in SPIDEConfig.__dataclass_fields__.values()} | {
    "readout", "dataset", "output"}


class TrainingError(V.NeurosimError):
    """A training run cannot start or continue (bad options, incompatible checkpoint)."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (full disk, lost permissions); the previous one on
    disk is intact.  A runtime failure (exit code 1)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT / SIGTERM after writing a checkpoint.

    Attributes: ``signum``, ``exit_code`` (128 + signum: 130 for SIGINT, 143 for SIGTERM),
    ``out`` (the run file), ``epoch`` (completed epochs) and ``batch`` (batches done in the
    next epoch)."""

    def __init__(self, message, signum, out, epoch, batch):
        super().__init__(message)
        self.signum, self.out, self.epoch, self.batch = signum, out, epoch, batch
        self.exit_code = 128 + int(signum)

    def __str__(self):
        return self.args[0]


def _normalised(ds):
    """(x_train, y_train, x_test, y_test) as float32, normalised as SPIDE does per data set."""
    if ds.name == "digits":
        mu, sd = float(ds.x_train.mean()), float(ds.x_train.std())
        f = lambda x: ((x - mu) / sd).astype(np.float32)
    elif ds.name == "mnist":
        f = lambda x: D.normalize(x, D.MNIST_MEAN, D.MNIST_STD)
    elif ds.name == "fashion-mnist":
        f = lambda x: D.normalize(x, D.FASHION_MNIST_MEAN, D.FASHION_MNIST_STD)
    else:
        f = lambda x: x if x.dtype != np.uint8 else D.normalize(x, D.CIFAR_MEAN, D.CIFAR_STD)
    return f(ds.x_train), ds.y_train, f(ds.x_test), ds.y_test


def load_data(name, data_dir=None):
    """(data set, x_train, y_train, x_test, y_test): data set ``name`` (from ``data_dir``;
    the bundled digits need none), normalised as SPIDE does (:func:`_normalised`)."""
    ds = D.load(name, data_dir) if name != "digits" else D.load("digits")
    return (ds,) + _normalised(ds)


def model_input(net, population, x):
    """``x`` [B, ...] as input population ``population`` of ``net`` takes it: images
    [B, C, H, W] flattened for a flat (1-D) population, otherwise unchanged."""
    if np.ndim(x) == 4 and len(net.populations[population].shape) == 1:
        return x.reshape(len(x), -1)
    return x


def _check_meta(net, meta, where):
    """The model's [training] readout / output / dataset entries and projection names."""
    ro = meta.get("readout")
    if ro is not None:
        if not isinstance(ro, dict) or set(ro) - {"classes"}:
            raise TrainingError(f"{where}: readout must be a table {{ classes = K }}, got {ro!r}")
        if "classes" in ro:
            c = ro["classes"]
            if isinstance(c, bool) or not isinstance(c, int) or c < 2:
                raise TrainingError(f"{where}: readout.classes must be an integer >= 2, got {c!r}")
    for key in ("output", "dataset"):
        if key in meta and not isinstance(meta[key], str):
            raise TrainingError(f"{where}: {key} must be a string, got {meta[key]!r}")


def config_for(net, overrides):
    """SPIDEConfig from the model file's ``[training]`` table and explicit overrides.

    Errors in the table name the model file; errors in ``overrides`` name the option."""
    md = getattr(net, "metadata", None) or {}
    where = f"{md.get('source', 'model')}: [training]"
    table = md.get("training", {}) or {}
    if not isinstance(table, dict):
        raise TrainingError(f"{where} must be a table, got {table!r}")
    table = dict(table)
    unknown = sorted(set(table) - TRAINING_KEYS)
    if unknown:
        raise TrainingError(f"{where} has unknown key(s) {unknown}; allowed: "
                            f"{sorted(TRAINING_KEYS)}")
    meta = {k: table.pop(k) for k in ("readout", "dataset", "output") if k in table}
    _check_meta(net, meta, where)
    try:
        SPIDEConfig.from_dict(table)
    except V.NeurosimError as e:
        raise TrainingError(f"{where}: {e}") from e
    table.update({k: v for k, v in overrides.items() if v is not None})
    cfg = SPIDEConfig.from_dict(table)
    for key in ("dropout", "norm_cap"):
        for name in getattr(cfg, key):
            if name not in net.projections:
                raise TrainingError(f"{where}: {key} names projection {name!r}, which does not "
                                    f"exist; projections: {list(net.projections)}")
            if key == "norm_cap" and not net.projections[name].has_weights:
                raise TrainingError(f"{where}: norm_cap names projection {name!r}, which has "
                                    "no weights")
    return cfg, meta


def _check_data_fits(model, model_name, ds_name, x, y, classes):
    """The data set's images and labels fit the model's input population and classes."""
    shape = model.net.populations[model.input].shape
    img = tuple(x.shape[1:])
    fits = (int(np.prod(img)) == int(np.prod(shape))) if len(shape) == 1 else img == tuple(shape)
    if not fits:
        raise TrainingError(
            f"model {model_name!r} takes inputs of shape {tuple(shape)} (population "
            f"{model.input!r}) but data set {ds_name!r} has images of shape {img}; choose a "
            f"model made for {ds_name} (--model) or another data set (--dataset)")
    if y.size and int(y.max()) >= classes:
        raise TrainingError(
            f"model {model_name!r} has {classes} classes but data set {ds_name!r} has labels up "
            f"to {int(y.max())}; set [training] readout = {{ classes = {int(y.max()) + 1} }} in "
            "the model file or choose another data set")


def _fingerprint(*arrays):
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _batches(n, bs, rng):
    perm = rng.permutation(n)
    return perm, [perm[i:i + bs] for i in range(0, n, bs)]


class _EvalStopped(Exception):
    pass


def evaluate(model, cfg, x, y, batch_size=200, n_threads=None, stop=None, engine=None):
    """Forward-only test pass: accuracy, mean loss and forward op counts per sample.

    ``stop`` (callable) is polled between batches; when it returns True the pass is
    abandoned (used by the trainer on SIGINT)."""
    correct, loss, n = 0, 0.0, 0
    ops = {k: 0 for k in ("fwd_synops", "fwd_updates", "fwd_spikes", "encoding_macs")}
    for i in range(0, len(x), batch_size):
        if stop is not None and stop():
            raise _EvalStopped()
        r = spide_phases(model, x[i:i + batch_size], y[i:i + batch_size], cfg, None,
                         train=False, n_threads=n_threads, engine=engine)
        correct += r.correct
        loss += r.loss * r.batch
        n += r.batch
        for k in ops:
            ops[k] += int(np.sum(getattr(r, k)))
    return dict(accuracy=correct / max(n, 1), loss=loss / max(n, 1),
                **{k: v / max(n, 1) for k, v in ops.items()})


# ======================================================================================
# signals
# ======================================================================================
class _StopRequest:
    signum = None

    def __call__(self):
        return self.signum is not None


@contextlib.contextmanager
def _stop_on_signals(enabled):
    """Turn SIGINT / SIGTERM into a stop request (a second signal acts at once)."""
    req = _StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield req
        return
    old = {}

    def handler(signum, frame):
        req.signum = signum
        prev = old.get(signum)
        signal.signal(signum, prev if prev is not None else signal.SIG_DFL)

    sigs = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    for s in sigs:
        old[s] = signal.signal(s, handler)
    try:
        yield req
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


# ======================================================================================
# training
# ======================================================================================
def _check_resume(out, st, cfg, model, dataset, seed, overrides, max_train, max_test):
    """Refuse options that would make a resumed run differ from the stored one."""
    def refuse(opt, given, stored):
        raise TrainingError(f"--resume: {opt} {given!r} differs from the run's {stored!r} "
                            f"stored in {str(out)!r}; a resumed run keeps its settings (only "
                            f"--epochs may change); drop {opt} or start a new run with "
                            "another --out")
    if model is not None and str(model) != st["model"]:
        try:                                    # a model file whose name is the stored one
            p = resolve_model_path(model)
            same = read_model_file(p).get("name", p.stem) == st["model"]
        except V.NeurosimError:
            same = False
        if not same:
            refuse("--model", str(model), st["model"])
    if dataset is not None:
        key = str(dataset).strip().lower().replace("_", "-")
        if D._ALIASES.get(key, key) != st["dataset"]:
            refuse("--dataset", dataset, st["dataset"])
    if seed is not None and seed != cfg.seed:
        refuse("--seed", seed, cfg.seed)
    stored = cfg.to_dict()
    for k, v in overrides.items():
        if k == "epochs":
            continue
        s = stored.get(k)
        same = (list(v) == list(s)) if k == "milestones" else v == s
        if not same:
            refuse(f"--{k.replace('_', '-')}" if k not in ("T", "T_b") else
                   {"T": "--tf", "T_b": "--tb"}[k], v, s)
    data = st.get("data") or {}
    for opt, given, key in (("--max-train", max_train, "max_train"),
                            ("--max-test", max_test, "max_test")):
        if given is not None and key in data and given != data[key]:
            refuse(opt, given, data[key])


def train(model=None, dataset=None, *, data_dir=None, out="train-run.h5", overrides=None,
          resume=False, force=False, seed=None, max_train=None, max_test=None, report=None,
          progress=None, n_threads=None, command=None, checkpoint_every=None,
          handle_signals=True, engine=None, diagnose=None):
    """Train a model file on a data set with SPIDE; returns the summary dict.

    Parameters
    ----------
    model : str or Network, optional
        Model name (``neurosim/data/models/*.toml``) or path; default :data:`DEFAULT_MODEL`; or a
        :class:`~neurosim.Network` built in code (with ``metadata`` as :func:`load_model`
        sets it; trained in place).  With ``resume`` the run file holds the network; a
        model given then must be the stored one.
    dataset : str, optional
        Default: the model's ``[training] dataset`` (``digits`` if none).
    overrides : dict, optional
        :class:`SPIDEConfig` fields overriding the model's ``[training]`` table.  With
        ``resume`` only ``epochs`` may differ from the stored configuration.
    resume : bool
        Continue the run stored in ``out`` (after its last complete epoch, or in the middle
        of an epoch for a checkpoint written on SIGINT or by ``checkpoint_every``).
    force : bool
        Without ``resume``: replace an existing ``out`` (its content is kept until the first
        checkpoint of the new run is complete).
    seed : int, optional
        Seed of weights, batches and dropout (default 0; on resume the stored one).
    max_train, max_test : int, optional
        Use only the first samples of each split (quick runs, tests).  Stored in the run
        file and reused on resume.
    report : callable(str), optional
        Receives one line per epoch (and notes such as removed temporary files).
    progress : callable(dict), optional
        Receives a dict after every batch (epoch, batch, n_batches, loss, accuracy, eta_s).
        ``eta_s`` is measured from the batches after the one that compiled the kernels
        (NaN right after that batch, when nothing is measured yet).
    checkpoint_every : float, optional
        Also write a mid-epoch checkpoint when this many seconds have passed since the last
        one (long epochs).  Checkpoints never change the results.
    handle_signals : bool
        Catch SIGINT / SIGTERM (main thread only) to stop after the current batch with a
        checkpoint, raising :class:`TrainingInterrupted`.
    engine : optional
        Simulates the phases of every batch (data parallel over MPI ranks:
        :class:`neurosim.training.distributed.ShardedEngine`, on rank 0); everything else
        runs here as in one process, so the run is the same (``docs/distributed.md``).
    diagnose : int, optional
        After every epoch, compare the spiking backward phase with the exact linear solve
        on the first ``diagnose`` training samples (:func:`neurosim.training.diagnose.diagnose`,
        dropout masks from the run's seed): the per-layer table goes to ``report`` and the
        last epoch's numbers to ``/training/diagnostics`` of the run file (and
        ``summary["diagnostics"]``).  Does not change the training.

    Raises
    ------
    TrainingError
        Bad options, a model that does not fit the data, an incompatible run file.
    NumericalError
        NaN / inf during training (the run file keeps the last good checkpoint).
    CheckpointError
        A checkpoint could not be written (the previous one is intact).
    TrainingInterrupted
        SIGINT / SIGTERM; a checkpoint was written.
    """
    out = Path(out)
    overrides = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    say = report if report is not None else (lambda msg: None)
    if checkpoint_every is not None:
        checkpoint_every = V.check_real(checkpoint_every, "checkpoint_every", positive=True)
    t_start = time.perf_counter()
    if resume:
        if out.is_dir():
            raise IsADirectoryError(f"--out {str(out)!r} is a directory; give the run file")
        if not out.exists():
            raise TrainingError(f"--resume: {str(out)!r} does not exist; start without --resume")
        net, model_obj, cfg, st = restore(out)
        _check_resume(out, st, cfg, model, dataset, seed, overrides, max_train, max_test)
        if "epochs" in overrides:
            cfg.epochs = V.check_int(overrides["epochs"], "epochs", low=0)
            if cfg.epochs < st["epoch"]:
                raise TrainingError(f"--resume: --epochs {cfg.epochs} is fewer than the "
                                    f"{st['epoch']} epochs already done in {str(out)!r}")
        meta = st["meta"]
        net.metadata = net.metadata or {"name": st["model"]}   # keep the stored model spec
        model_name, ds_name = st["model"], st["dataset"]
        data = st.get("data") or {}
        max_train, max_test = data.get("max_train", max_train), data.get("max_test", max_test)
    else:
        if out.is_file() and not force:
            raise FileExistsError(f"output {str(out)!r} already exists; pass --force to overwrite "
                                  "it or --resume to continue it")
        atomic.check_destination(out, force)
        if isinstance(model, Network):       # built in code (e.g. neurosim.ops.sparsity)
            net = model
        else:
            net = load_model(DEFAULT_MODEL if model is None else model,
                             seed=0 if seed is None else seed)
        overrides.setdefault("seed", 0 if seed is None else seed)
        cfg, meta = config_for(net, overrides)
        model_name = net.metadata.get("model") or net.name
        ds_name = dataset or meta.get("dataset") or "digits"
    for what, v in (("max_train", max_train), ("max_test", max_test)):
        if v is not None:
            V.check_int(v, what, low=1)
    atomic.check_writable(out)
    for p in atomic.remove_stale_temps(out):
        say(f"removed {p.name}, a temporary file left by an interrupted write")
    ds, xtr, ytr, xte, yte = load_data(ds_name, data_dir)
    if max_train:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    if max_test:
        xte, yte = xte[:max_test], yte[:max_test]
    fp = _fingerprint(xtr, ytr, xte, yte)
    data = dict(max_train=max_train, max_test=max_test, n_train=int(len(xtr)),
                n_test=int(len(xte)), fingerprint=fp)
    if resume and (st.get("data") or {}).get("fingerprint") not in (None, fp):
        raise TrainingError(f"--resume: the {ds_name} data read now differ from the data the "
                            f"run in {str(out)!r} was trained on ({len(xtr)} training samples "
                            f"now, {st['data'].get('n_train')} then); resume with the same "
                            "--data-dir and files")
    if resume:
        classes = int(st["classes"])
    else:
        classes = int(meta.get("readout", {}).get("classes", ds.n_classes)) if isinstance(
            meta.get("readout"), dict) else ds.n_classes
        model_obj = build_model(net, cfg, meta, classes)
    _check_data_fits(model_obj, model_name, ds_name, xtr, np.concatenate([ytr, yte]), classes)
    opt = SGD(cfg.momentum, cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    history = {k: [] for k in HISTORY}
    epoch0, it, partial = 0, 0, None
    if resume:
        opt.load_state(st["optimizer"])
        rng.bit_generator.state = st["rng"]
        history.update({k: list(v) for k, v in st["history"].items()})
        epoch0, it, partial = int(st["epoch"]), int(st["iteration"]), st["progress"]
        if partial is not None and len(partial["perm"]) != len(xtr):
            raise TrainingError(f"--resume: the mid-epoch checkpoint in {str(out)!r} covers "
                                f"{len(partial['perm'])} training samples, the data have "
                                f"{len(xtr)}")
    if diagnose is not None:
        diagnose = min(V.check_int(diagnose, "diagnose", low=1), len(xtr))
    state = dict(model=model_name, dataset=ds_name, classes=classes, meta=meta, data=data,
                 command=command or "", finished=False)
    diag = None
    monitor = health.ActivityMonitor([p.name for p in net.spiking_populations])
    saved = {"what": None, "t": time.perf_counter()}   # last checkpoint of this run

    def save(epoch_done, part=None):
        state.update(epoch=epoch_done, iteration=it, rng=rng.bit_generator.state,
                     optimizer=opt.state(), history=history,
                     finished=part is None and epoch_done == cfg.epochs,
                     wall_s=float(sum(history["wall_s"])))
        try:
            save_checkpoint(out, model_obj, cfg, state, force=True, partial=part)
        except (KeyboardInterrupt, FileExistsError, IsADirectoryError):
            raise
        except OSError as e:
            prev = (f"the previous checkpoint ({saved['what']}) is intact" if saved["what"]
                    else "no checkpoint of this run was written before")
            where = (f"after epoch {epoch_done}" if part is None else
                     f"in epoch {epoch_done + 1} after batch {part['batch']}")
            raise CheckpointError(
                f"could not write the checkpoint {where} to {str(out)!r} "
                f"({e.strerror or e}); {prev}; fix the cause (disk space, permissions) and "
                "continue with --resume") from e
        saved["what"] = (f"after epoch {epoch_done}" if part is None else
                         f"epoch {epoch_done + 1}, batch {part['batch']}/{part['n_batches']}")
        saved["t"] = time.perf_counter()

    def interrupted(stop, epoch_done, batch, n_batches):
        name = signal.Signals(stop.signum).name
        where = (f"after epoch {epoch_done}" if batch == 0 else
                 f"after batch {batch}/{n_batches} of epoch {epoch_done + 1}")
        return TrainingInterrupted(
            f"interrupted by {name}: stopped {where}, checkpoint written to {str(out)!r}; "
            f"continue with: neurosim train --out {out} --resume",
            stop.signum, out, epoch_done, batch)

    def diverged(e, epoch, bi, nb):
        keep = (f"{str(out)!r} keeps the last good checkpoint ({saved['what'] or 'as found at the start'})"
                if saved["what"] or resume else
                f"no checkpoint was written ({str(out)!r} is unchanged)")
        return health.NumericalError(f"{e.detail} at epoch {epoch + 1}, batch {bi + 1}/{nb} "
                                     f"(iteration {it + 1}): training diverged and was stopped; "
                                     f"{keep}", what=e.what, name=e.name,
                                     hint="lower the learning rate (--lr), the loss scale "
                                          "(--kappa) or the initial weights")

    if resume:
        saved["what"] = (f"after epoch {epoch0}" if partial is None else
                         f"epoch {epoch0 + 1}, batch {partial['batch']}/{partial['n_batches']}")
    if engine is not None:
        engine.start(net)
    with _stop_on_signals(handle_signals) as stop:
        compiling = not kernels.cache_warm("engine.run_phase", "spide.weight_grad", cuba=False)
        if compiling:
            say("compiling the engine's kernels during the first batch (once after installing "
                "or updating neurosim: 30-50 s on 2 cores; later runs load them from the "
                f"cache{'' if kernels.CACHE_DIR is None else ' in ' + str(kernels.CACHE_DIR)})")
        for epoch in range(epoch0, cfg.epochs):
            t0 = time.perf_counter()
            rate0 = None   # (time, batches done) the ETA is measured from: after compiling
            if partial is not None:
                perm = np.asarray(partial["perm"], np.int64)
                batches = [perm[i:i + cfg.batch_size] for i in range(0, len(perm), cfg.batch_size)]
                bi0 = int(partial["batch"])
                sums = {k: float(partial["sums"][k]) for k in OPS}
                loss_sum, correct, n = (float(partial["loss_sum"]), int(partial["correct"]),
                                        int(partial["n"]))
                t0 -= float(partial["wall_s"])
                monitor.saturated = dict(partial["activity"]["saturated"])
                monitor.total = dict(partial["activity"]["total"])
                partial = None
            else:
                perm, batches = _batches(len(xtr), cfg.batch_size, rng)
                bi0, sums, loss_sum, correct, n = 0, {k: 0.0 for k in OPS}, 0.0, 0, 0
                monitor.reset()

            def snapshot(next_batch):
                return dict(perm=perm, batch=next_batch, n_batches=len(batches),
                            loss_sum=loss_sum, correct=correct, n=n, sums=dict(sums),
                            wall_s=time.perf_counter() - t0,
                            activity=dict(saturated=monitor.saturated, total=monitor.total))

            for bi in range(bi0, len(batches)):
                idx = batches[bi]
                xb = model_input(net, model_obj.input, xtr[idx])
                if ds_name in ("cifar10", "cifar100"):
                    xb = D.normalize(D.augment_cifar(ds.x_train[idx], rng), D.CIFAR_MEAN, D.CIFAR_STD)
                lr = learning_rate(cfg, epoch, it)
                try:
                    r = spide_step(model_obj, xb, ytr[idx], cfg, rng, lr, opt, n_threads=n_threads,
                                   engine=engine)
                except health.NumericalError as e:
                    raise diverged(e, epoch, bi, len(batches)) from None
                it += 1
                loss_sum += r.loss * r.batch
                correct += r.correct
                n += r.batch
                for k in OPS:
                    sums[k] += float(np.sum(getattr(r, k)))
                monitor.add(r.forward, cfg.T)
                _testhooks.pause("batch")
                done = bi + 1 - bi0
                if compiling:
                    compiling = False
                    rate0 = (time.perf_counter(), done)
                    say(f"first batch done in {rate0[0] - t0:.1f} s (compilation included)")
                if progress is not None:
                    t_r, d_r = (t0, 0) if rate0 is None else rate0
                    el = time.perf_counter() - t_r
                    eta = (el / (done - d_r) * (len(batches) - bi - 1) if done > d_r else
                           float("nan"))
                    progress(dict(epoch=epoch + 1, epochs=cfg.epochs, batch=bi + 1,
                                  n_batches=len(batches), loss=loss_sum / n, accuracy=correct / n,
                                  eta_s=eta))
                due = checkpoint_every is not None and \
                    time.perf_counter() - saved["t"] >= checkpoint_every
                if (stop() or due) and bi + 1 < len(batches):
                    save(epoch, snapshot(bi + 1))
                    if stop():
                        raise interrupted(stop, epoch, bi + 1, len(batches))
            xe = model_input(net, model_obj.input, xte)
            try:
                ev = evaluate(model_obj, cfg, xe, yte, n_threads=n_threads, stop=stop,
                              engine=engine)
            except _EvalStopped:
                save(epoch, snapshot(len(batches)))
                raise interrupted(stop, epoch, len(batches), len(batches)) from None
            wall = time.perf_counter() - t0
            history["epoch"].append(epoch + 1)
            history["lr"].append(learning_rate(cfg, epoch, max(it - 1, 0)))
            history["train_loss"].append(loss_sum / n)
            history["train_accuracy"].append(correct / n)
            history["test_accuracy"].append(ev["accuracy"])
            history["test_loss"].append(ev["loss"])
            history["wall_s"].append(wall)
            for k in OPS:
                history[k].append(sums[k] / n)
            for k in OPS[:4]:
                history["test_" + k].append(ev[k])
            for pop, frac in monitor.runaway():
                warnings.warn(
                    f"runaway activity in population {pop!r}: {100 * frac:.1f} % of its neurons "
                    f"fired at every one of the T = {cfg.T} forward steps in epoch {epoch + 1} "
                    "(its rates carry no information and SPIDE's mask stops its gradients); "
                    "lower the learning rate or the input scale, or raise its threshold v_th",
                    health.RunawayActivityWarning, stacklevel=2)
            if diagnose:
                diag = _diagnostics.diagnose(
                    model_obj, cfg, model_input(net, model_obj.input, xtr[:diagnose]),
                    ytr[:diagnose], seed=cfg.seed, n_threads=n_threads)
                diag["epoch"] = epoch + 1
                state["diagnostics"] = diag
            save(epoch + 1)
            if diag is not None:
                for line in _diagnostics.format_table(diag):
                    say(line)
            say(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss_sum / n:.4f}, train acc "
                f"{correct / n:.4f}, test acc {ev['accuracy']:.4f} ({wall:.1f} s)")
            if stop() and epoch + 1 < cfg.epochs:
                raise interrupted(stop, epoch + 1, 0, 0)
    if epoch0 >= cfg.epochs and not history["epoch"]:
        raise TrainingError("nothing to do: 0 epochs")
    summary = dict(model=model_name, dataset=ds_name, seed=cfg.seed, epochs=cfg.epochs,
                   test_accuracy=history["test_accuracy"][-1] if history["test_accuracy"] else None,
                   train_accuracy=history["train_accuracy"][-1] if history["train_accuracy"] else None,
                   wall_s=time.perf_counter() - t_start, train_wall_s=float(sum(history["wall_s"])),
                   n_train=int(len(xtr)), n_test=int(len(xte)), out=str(out),
                   ops_per_sample={k: history[k][-1] for k in OPS} if history["epoch"] else {},
                   config=cfg.to_dict(), diagnostics=diag)
    return summary


def evaluate_run(path, dataset=None, *, data_dir=None, max_test=None, n_threads=None):
    """Test accuracy and forward op counts of a training run file."""
    net, model, cfg, st = restore(path)
    ds_name = dataset or st["dataset"]
    _, _, _, xte, yte = load_data(ds_name, data_dir)
    if max_test:
        xte, yte = xte[:max_test], yte[:max_test]
    _check_data_fits(model, st["model"], ds_name, xte, yte, int(st["classes"]))
    xte = model_input(net, model.input, xte)
    d = evaluate(model, cfg, xte, yte, n_threads=n_threads)
    d.update(dataset=ds_name, n_test=int(len(xte)), epoch=int(st["epoch"]))
    return d
